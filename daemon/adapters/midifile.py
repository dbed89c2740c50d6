"""Guarded loading of Standard MIDI Files for ``canne render``.

``load_midi_file(path)`` returns a ``mido.MidiFile`` that can be played (format 0 or 1,
ticks per beat > 0, at most ``MAX_SONG_SECONDS`` long) or raises ``MidiFileError``
with one line naming the file and saying what is wrong ("truncated: track 2 declares
5000 bytes but only 12 are left", "format 2 ... is not supported", "the song would
last 14,913 hours ..."). Nothing else escapes: a 30-byte file whose delta times ask for
50 GiB of audio, a ticks-per-beat of 0, garbage or a truncated file all end in that one
line, before any audio is rendered.

Order of checks: the file (regular, at most ``MAX_MIDI_BYTES``: ``stat`` before it is
opened, see ``daemon.inputfile``), the header, the chunk layout, then each track is
parsed on its own by mido (so an error names the track), then the song length is
summed over the merged tracks with the tempo map applied.
"""

from __future__ import annotations

import io
import math
from struct import error as struct_error

from daemon.errors import CanneError
from daemon.inputfile import format_size, read_input_file, short_path

__all__ = ["MidiFileError", "load_midi_file", "MAX_MIDI_BYTES", "MAX_SONG_SECONDS"]

# A dense 5-minute piece is ~100 kB; mido keeps ~0.8 kB of Python objects per event,
# so 2 MiB (up to ~700,000 events) bounds the memory a file can make us use.
MAX_MIDI_BYTES = 2 << 20
MAX_SONG_SECONDS = 3600.0  # one hour; rendering holds the song's audio in memory


class MidiFileError(CanneError, ValueError):
    """A MIDI file that cannot be played (one line: file and what is wrong)."""


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "an infinite time"
    if seconds >= 3600:
        h = seconds / 3600
        if h >= 1e6:
            return f"{h:.2g} hours"
        return "1 hour" if h == 1 else f"{h:,.0f} hours" if h >= 10 else f"{h:.1f} hours"
    return f"{seconds / 60:.0f} minutes" if seconds >= 60 else f"{seconds:.0f} s"


def load_midi_file(path, *, max_bytes: int = MAX_MIDI_BYTES, max_seconds: float = MAX_SONG_SECONDS):
    """A playable ``mido.MidiFile`` (format 0/1), or ``MidiFileError`` with one line.

    Parameters
    ----------
    path : str or Path
    max_bytes : int
        Largest file accepted (checked with ``stat`` before reading).
    max_seconds : float
        Longest song accepted (sum of delta times with the tempo map applied).
    """
    import mido

    name = short_path(path)
    data = read_input_file(path, limit=max_bytes, what="MIDI file", error=MidiFileError,
                           not_found_hint="give a .mid file path")

    def fail(problem: str) -> MidiFileError:
        return MidiFileError(" ".join(f"{name}: {problem}".splitlines()))

    data = _unwrap_riff(data, fail)
    fmt, declared, division, pos = _header(data, fail)
    chunks = _track_chunks(data, pos, declared, fail)

    tracks = []
    for i, (offset, chunk) in enumerate(chunks):
        # each track parsed alone (a one-track file around it): errors name the track,
        # and an event running past its chunk cannot read into the next one
        one = b"MThd\x00\x00\x00\x06\x00\x00\x00\x01" + division.to_bytes(2, "big") + chunk
        try:
            tracks.append(mido.MidiFile(file=io.BytesIO(one)).tracks[0])
        except Exception as exc:  # EOFError, OSError, ValueError, KeySignatureError, IndexError, ...
            raise fail(f"track {i + 1} (at byte {offset}): {_reason(exc)}; the file is damaged") from None
    midi = mido.MidiFile(type=fmt, ticks_per_beat=division, tracks=tracks)

    seconds = 0.0
    try:
        for msg in midi:  # merged tracks, tempo map applied (cached for the caller's pass)
            seconds += msg.time
            if not seconds <= max_seconds:  # also catches inf / nan
                raise fail(f"the song is longer than {_duration(max_seconds)}, the limit (an event at "
                           f"{_duration(seconds)}: absurd delta times or tempo?)")
    except MidiFileError:
        raise
    except Exception as exc:  # mido merging / tempo conversion
        raise fail(f"cannot play the events: {_reason(exc)}") from None
    return midi


# --------------------------------------------------------------------------- structure
def _unwrap_riff(data: bytes, fail) -> bytes:
    """A RIFF MIDI (.rmi) file holds a Standard MIDI File in its 'data' chunk."""
    if data[:4] != b"RIFF" or data[8:12] != b"RMID":
        return data
    pos = 12
    while pos + 8 <= len(data):
        size = int.from_bytes(data[pos + 4:pos + 8], "little")
        if data[pos:pos + 4] == b"data":
            if pos + 8 + size > len(data):
                raise fail("truncated: the RIFF 'data' chunk runs past the end of the file")
            return data[pos + 8:pos + 8 + size]
        pos += 8 + size + (size & 1)
    raise fail("a RIFF MIDI file without a 'data' chunk")


def _header(data: bytes, fail):
    """(format, declared tracks, ticks per beat, offset of the first chunk after MThd)."""
    if data[:4] != b"MThd":
        start = data[:8]
        what = "the file is empty" if not data else f"it starts with {start!r}"
        raise fail(f"not a Standard MIDI File ('MThd' header missing; {what}); give a .mid file")
    if len(data) < 14:
        raise fail(f"truncated: the header needs 14 bytes, the file has {len(data)}")
    hlen = int.from_bytes(data[4:8], "big")
    if hlen < 6:
        raise fail(f"header chunk of {hlen} bytes; a MIDI header has 6")
    if 8 + hlen > len(data):
        raise fail(f"truncated: the header declares {hlen} bytes, only {len(data) - 8} are left")
    fmt = int.from_bytes(data[8:10], "big")
    declared = int.from_bytes(data[10:12], "big")
    division = int.from_bytes(data[12:14], "big")
    if fmt == 2:
        raise fail("format 2 (independent sequences, one song per track) is not supported; "
                   "save it as format 0 or 1")
    if fmt > 2:
        raise fail(f"unknown MIDI file format {fmt}; formats 0 and 1 are supported")
    if division & 0x8000:
        fps = 256 - (division >> 8)
        raise fail(f"SMPTE time division ({fps} frames/s x {division & 0xFF} ticks) is not supported; "
                   "save it with ticks per beat (PPQN)")
    if division == 0:
        raise fail("ticks per beat is 0 in the header, so no event has a time; the file is damaged")
    return fmt, declared, division, 8 + hlen


def _track_chunks(data: bytes, pos: int, declared: int, fail) -> list:
    """[(offset, chunk bytes incl. its 8-byte header)] of the MTrk chunks; alien chunks skipped."""
    chunks = []
    while len(chunks) < declared:
        left = len(data) - pos
        if left < 8:
            raise fail(f"truncated: the header declares {declared} track(s), the file holds {len(chunks)}"
                       + (f" and {left} stray byte(s)" if left > 0 else ""))
        cid = data[pos:pos + 4]
        size = int.from_bytes(data[pos + 4:pos + 8], "big")
        if cid != b"MTrk" and not all(32 <= b < 127 for b in cid):  # a chunk has a 4-letter name
            raise fail(f"garbage where track {len(chunks) + 1} should start (byte {pos}: {cid!r}); "
                       "the file is damaged")
        if pos + 8 + size > len(data):
            what = f"track {len(chunks) + 1}" if cid == b"MTrk" else f"chunk {cid.decode('ascii')!r}"
            raise fail(f"truncated: {what} (at byte {pos}) declares {format_size(size)} "
                       f"but only {format_size(left - 8)} are left")
        if cid == b"MTrk":
            chunks.append((pos, data[pos:pos + 8 + size]))
        pos += 8 + size  # an unknown chunk is skipped, as the standard says
    return chunks


def _reason(exc: BaseException) -> str:
    if isinstance(exc, EOFError):
        return "an event runs past the end of the track"
    if isinstance(exc, (IndexError, KeyError, struct_error)):
        return f"an event with missing or malformed data ({type(exc).__name__}: {exc})"
    text = " ".join(str(exc).split())
    if text.startswith("running status without last_status"):
        return "a data byte where a status byte was expected (running status with no previous status)"
    if len(text) > 160:
        text = text[:150] + "…"
    return text if text else type(exc).__name__

