"""Hostile MIDI files: the only outcomes are a playable song or one MidiFileError line.

Seeded byte mutations of generated Standard MIDI Files plus the cases issue 9 names
(ticks per beat 0, format 2, a 30-byte file whose delta times ask for 50 GiB of audio,
truncated and garbage files). A loaded song must be playable (iterating it works, it
lasts at most MAX_SONG_SECONDS); a refusal must be one line starting with the file name
and saying what is wrong. Runs in a few seconds.
"""

from __future__ import annotations

import io
import os
import random
import subprocess
import sys
import threading
from pathlib import Path

import mido
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from daemon.adapters.midifile import MAX_MIDI_BYTES, MAX_SONG_SECONDS, MidiFileError, load_midi_file  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SEED = 9
N_MUTANTS = 240


def header(fmt: int = 0, ntrks: int = 1, division: int = 480) -> bytes:
    return b"MThd\x00\x00\x00\x06" + fmt.to_bytes(2, "big") + ntrks.to_bytes(2, "big") + division.to_bytes(2, "big")


def track(events: bytes) -> bytes:
    return b"MTrk" + len(events).to_bytes(4, "big") + events


EOT = b"\x00\xff\x2f\x00"
NOTE = b"\x00\x90\x3c\x40\x60\x80\x3c\x00"  # C4 on, 96 ticks later off


def outcome(path: Path) -> str:
    """'ok', 'refused', or 'ESCAPE: ...'."""
    try:
        midi = load_midi_file(path)
    except MidiFileError as exc:
        msg = str(exc)
        if len(msg.splitlines()) != 1:
            return f"ESCAPE: not one line: {msg!r}"
        if not msg.startswith(f"{path}: ") or len(msg) > 400:
            return f"ESCAPE: does not start with the file name, or too long: {msg!r}"
        what = msg[len(str(path)) + 2:]
        if len(what) < 20 or what.endswith("()") or "not a readable MIDI file" in what:
            return f"ESCAPE: says nothing about what is wrong: {msg!r}"
        return "refused"
    except Exception as exc:
        return f"ESCAPE: {type(exc).__name__}: {str(exc)[:200]!r}"
    try:  # a loaded song is playable: the caller's pass over it works, and it is bounded
        if midi.type not in (0, 1) or midi.ticks_per_beat <= 0:
            return f"ESCAPE: loaded an unplayable file (type {midi.type}, tpb {midi.ticks_per_beat})"
        seconds = sum(msg.time for msg in midi)
    except Exception as exc:
        return f"ESCAPE: loaded, then playing it raised {type(exc).__name__}: {exc}"
    if not 0.0 <= seconds <= MAX_SONG_SECONDS:
        return f"ESCAPE: loaded a song of {seconds} s"
    return "ok"


# --------------------------------------------------------------------------- named cases
BOMB_30_BYTES = header(division=1) + track(b"\xff\xff\xff\x7f\x90\x3c\x40" + EOT)  # 33 bytes

NAMED = {
    # name: (bytes, expected fragment of the message, or None for a valid file)
    "ticks-per-beat-0": (header(division=0) + track(NOTE + EOT), "ticks per beat is 0"),
    "format-2": (header(fmt=2, ntrks=2) + track(NOTE + EOT) * 2, "format 2"),
    "format-3": (header(fmt=3) + track(NOTE + EOT), "unknown MIDI file format 3"),
    "format-65535": (header(fmt=65535) + track(NOTE + EOT), "unknown MIDI file format 65535"),
    "smpte-division": (header(division=0xE728) + track(NOTE + EOT), "SMPTE time division (25 frames/s x 40 ticks)"),
    "delta-bomb-50GiB": (BOMB_30_BYTES, "the song is longer than 1 hour, the limit (an event at 37,283 hours"),
    "delta-bomb-many-events": (header(division=1) + track(b"\x8f\xff\xff\x7f\xb0\x07\x40" * 4 + EOT),
                               "the song is longer than 1 hour"),
    "delta-vlq-20-bytes": (header(division=1) + track(b"\xff" * 20 + b"\x7f\x90\x3c\x40" + EOT),
                           "the song is longer than 1 hour"),
    "slowest-tempo": (header(division=1) + track(b"\x00\xff\x51\x03\xff\xff\xff" + b"\xff\xff\x7f\x90\x3c\x40" + EOT),
                      "the song is longer than 1 hour"),
    "tempo-zero-bytes": (header() + track(b"\x00\xff\x51\x00" + EOT), "track 1 (at byte 14): an event with missing"),
    "key-signature-bad": (header() + track(b"\x00\xff\x59\x02\x20\x05" + EOT), "track 1 (at byte 14): Could not decode key"),
    "empty-file": (b"", "not a Standard MIDI File ('MThd' header missing; the file is empty)"),
    "text-file": (b"hello, this is not music\n", "not a Standard MIDI File ('MThd' header missing; it starts with b'hello, t'"),
    "wav-file": (b"RIFF\x24\x00\x00\x00WAVEfmt ", "not a Standard MIDI File"),
    "mthd-only": (b"MThd", "truncated: the header needs 14 bytes, the file has 4"),
    "mthd-garbage": (b"MThd garbage", "truncated: the header needs 14 bytes, the file has 12"),
    "header-length-2": (b"MThd\x00\x00\x00\x02\x00\x00\x00\x01\x01\xe0", "header chunk of 2 bytes"),
    "header-only": (header(), "truncated: the header declares 1 track(s), the file holds 0"),
    "fewer-tracks-than-declared": (header(fmt=1, ntrks=3) + track(NOTE + EOT), "the header declares 3 track(s), the file holds 1"),
    "track-length-4GiB": (header() + b"MTrk\xff\xff\xff\xff" + NOTE + EOT, "truncated: track 1 (at byte 14) declares 4 GiB"),
    "truncated-mid-event": (header() + track(NOTE + EOT)[:-6], "truncated: track 1 (at byte 14) declares 12 bytes but only 6 bytes"),
    "event-past-track-end": (header() + track(b"\x00\x90\x3c"), "track 1 (at byte 14): an event runs past the end of the track"),
    "running-status-first": (header() + track(b"\x00\x3c\x40" + EOT), "running status with no previous status"),
    "data-byte-over-127": (header() + track(b"\x00\x90\xbc\x40" + EOT), "data byte must be in range 0..127"),
    "undefined-status": (header() + track(b"\x00\xf4" + EOT), "undefined status byte 0xf4"),
    "sysex-length-huge": (header() + track(b"\x00\xf0\xff\xff\xff\x7f\x01" + EOT), "exceeds maximum length"),
    "meta-length-huge": (header() + track(b"\x00\xff\x01\xff\xff\xff\x7f" + EOT), "exceeds maximum length"),
    "garbage-instead-of-track": (header() + b"\x00\x01\x02\x03\x00\x00\x00\x00", "garbage where track 1 should start"),
    "riff-without-data": (b"RIFF\x04\x00\x00\x00RMID", "a RIFF MIDI file without a 'data' chunk"),
    # valid files (must load and play)
    "valid": (header() + track(NOTE + EOT), None),
    "valid-no-end-of-track": (header() + track(NOTE), None),
    "valid-alien-chunk-first": (header() + b"XFIH\x00\x00\x00\x02ab" + track(NOTE + EOT), None),
    "valid-trailing-garbage": (header() + track(NOTE + EOT) + b"\x00\x01garbage", None),
    "valid-riff-rmid": (None, None),  # built below
    "valid-no-tracks": (header(ntrks=0), None),
    "valid-just-under-an-hour": (header(division=1) + track(b"\x00\xff\x51\x03\x0f\x42\x40" + b"\x9c\x0f\x90\x3c\x40" + EOT), None),
}
_smf = header() + track(NOTE + EOT)
NAMED["valid-riff-rmid"] = (b"RIFF" + (4 + 8 + len(_smf)).to_bytes(4, "little") + b"RMID" + b"data"
                            + len(_smf).to_bytes(4, "little") + _smf, None)


@pytest.mark.parametrize("name", list(NAMED))
def test_named_cases(tmp_path, name):
    data, fragment = NAMED[name]
    path = tmp_path / f"{name}.mid"
    path.write_bytes(data)
    got = outcome(path)
    if fragment is None:
        assert got == "ok", got
    else:
        assert got == "refused", got
        with pytest.raises(MidiFileError) as info:
            load_midi_file(path)
        assert fragment in str(info.value), str(info.value)


def test_the_30_byte_bomb_is_refused_before_rendering(tmp_path):
    """The 50 GiB request is refused by the loader, and render_midi uses the loader."""
    assert len(BOMB_30_BYTES) <= 33
    path = tmp_path / "bomb.mid"
    path.write_bytes(BOMB_30_BYTES)
    from daemon.app.render import render_midi

    class NoModel:  # render_midi must refuse the file before it touches the model
        def __getattr__(self, name):
            raise AssertionError(f"the model was used ({name}) before the MIDI file was checked")

    with pytest.raises(MidiFileError, match="longer than 1 hour"):
        render_midi(path, NoModel())


def test_canne_render_says_one_line_for_a_bomb(tmp_path):
    path = tmp_path / "bomb.mid"
    path.write_bytes(BOMB_30_BYTES)
    from harmonic_model import build_harmonic_decoder

    model = build_harmonic_decoder(tmp_path / "hm")
    r = subprocess.run([sys.executable, "-m", "daemon.app.cli", "render", "--no-progress", str(path), "-o",
                        str(tmp_path / "o.wav"), "--model", str(model), "--mapping", ""],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if "bomb.mid" in ln]
    assert len(lines) == 1 and "longer than 1 hour" in lines[0], r.stderr
    assert not (tmp_path / "o.wav").exists()


# --------------------------------------------------------------------------- files
def _fifo(p):
    os.mkfifo(p)


def _dev_zero(p):
    p.symlink_to("/dev/zero")


def _folder(p):
    p.mkdir()


def _too_big(p):
    with open(p, "wb") as f:
        f.write(header() + b"MTrk")
        f.truncate(MAX_MIDI_BYTES + 1)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX only")
@pytest.mark.parametrize("make,fragment", [
    (_fifo, "is a FIFO (named pipe), not a MIDI file"),
    (_dev_zero, "is a character device, not a MIDI file"),
    (_folder, "is a folder, not a MIDI file"),
    (_too_big, "the MIDI file is too large (2 MiB); the limit is 2 MiB"),
], ids=["fifo", "dev-zero", "folder", "over-2MiB"])
def test_files_that_are_not_midi_files_are_refused_without_reading(tmp_path, make, fragment):
    path = tmp_path / "song.mid"
    make(path)
    got = []
    t = threading.Thread(target=lambda: got.append(outcome(path)), daemon=True)
    t.start()
    t.join(30.0)  # a FIFO must not block (liveness bound, not speed)
    assert not t.is_alive(), "load_midi_file blocked"
    assert got == ["refused"], got
    with pytest.raises(MidiFileError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        load_midi_file(path)


# --------------------------------------------------------------------------- mutations
def song(rng: random.Random) -> bytes:
    """A small valid SMF: 1-3 tracks of notes, CCs, bends, sysex, tempo and other metas."""
    mf = mido.MidiFile(type=rng.choice([0, 1]), ticks_per_beat=rng.choice([24, 96, 480, 960]))
    for t in range(1 if mf.type == 0 else rng.randint(1, 3)):
        tr = mido.MidiTrack()
        mf.tracks.append(tr)
        tr.append(mido.MetaMessage("track_name", name=f"track {t}"))
        tr.append(mido.MetaMessage("set_tempo", tempo=rng.randint(200_000, 1_500_000)))
        for _ in range(rng.randint(1, 30)):
            k = rng.random()
            dt = rng.randrange(480)
            if k < 0.45:
                tr.append(mido.Message("note_on", channel=rng.randrange(16), note=rng.randrange(128),
                                       velocity=rng.randrange(128), time=dt))
            elif k < 0.65:
                tr.append(mido.Message("control_change", channel=rng.randrange(16), control=rng.randrange(128),
                                       value=rng.randrange(128), time=dt))
            elif k < 0.75:
                tr.append(mido.Message("pitchwheel", pitch=rng.randint(-8192, 8191), time=dt))
            elif k < 0.8:
                tr.append(mido.Message("sysex", data=[rng.randrange(128) for _ in range(rng.randint(0, 8))], time=dt))
            elif k < 0.85:
                tr.append(mido.MetaMessage("key_signature", key=rng.choice(["C", "Am", "F#", "Bbm"]), time=dt))
            elif k < 0.9:
                tr.append(mido.Message("program_change", program=rng.randrange(128), time=dt))
            elif k < 0.95:
                tr.append(mido.MetaMessage("set_tempo", tempo=rng.randint(100_000, 2_000_000), time=dt))
            else:
                tr.append(mido.MetaMessage("text", text="x" * rng.randint(0, 40), time=dt))
    buf = io.BytesIO()
    mf.save(file=buf)
    return buf.getvalue()


def mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        op = rng.randrange(9)
        i = rng.randrange(len(b)) if b else 0
        if op == 0 and len(b) > 22:  # one byte in the events
            b[rng.randrange(22, len(b))] = rng.randrange(256)
        elif op == 1:  # truncate
            b = b[:i]
        elif op == 2:  # a header field
            field = rng.choice([8, 10, 12])
            b[field:field + 2] = rng.choice([0, 1, 2, 3, 24, 0x7FFF, 0x8000, 0xE728, 0xFFFF]).to_bytes(2, "big")
        elif op == 3 and len(b) > 22:  # a track's declared length
            b[18:22] = rng.choice([0, 1, len(b) - 22, len(b), 0x7FFFFFFF, 0xFFFFFFFF]).to_bytes(4, "big")
        elif op == 4 and len(b) > 22:  # a huge delta time before an event
            j = rng.randrange(22, len(b))
            b[j:j] = rng.choice([b"\x8f\xff\xff\x7f", b"\xff\xff\xff\x7f", b"\xff" * 12 + b"\x7f"])
        elif op == 5:  # random bytes inserted
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 6)))
        elif op == 6:  # bytes deleted
            del b[i:i + rng.randint(1, 6)]
        elif op == 7:  # appended garbage or an alien chunk
            b += rng.choice([b"junk", b"XFIH\x00\x00\x00\x01z", b"MTrk\x00\x00\x00\x10", bytes(range(256))])
        else:  # the slowest tempo with the largest delta
            if len(b) > 22:
                j = 22
                b[j:j] = b"\x00\xff\x51\x03\xff\xff\xff\x8f\xff\xff\x7f\xb0\x01\x00"
    return bytes(b)


def test_mutated_midi_files_never_escape(tmp_path):
    rng = random.Random(SEED)
    counts = {"ok": 0, "refused": 0}
    escapes = []
    path = tmp_path / "fuzz.mid"
    for k in range(N_MUTANTS):
        path.write_bytes(mutate(rng, song(rng)))
        got = outcome(path)
        if got.startswith("ESCAPE"):
            escapes.append((k, got))
        else:
            counts[got] += 1
    total = N_MUTANTS + len(NAMED)
    print(f"MIDI fuzz: {N_MUTANTS} mutants + {len(NAMED)} named = {total} files, {counts}, {len(escapes)} escapes")
    assert total >= 200
    assert not escapes, escapes[:10]
    assert counts["ok"] >= 30 and counts["refused"] >= 100, counts
