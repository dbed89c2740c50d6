"""``canne render SONG.mid -o OUT.wav``: play a MIDI file through the engine, offline.

The same :class:`daemon.core.engine.Engine` and :class:`daemon.control.mapper.Mapper` as the live
daemon: notes, CC automation, pitch bend, sustain and program changes all go through
the mapping. Events take effect at the engine's next hop boundary, exactly as live
(so timing is quantised to one hop, ~21 ms at 1024/48 kHz). Rendering is
deterministic (``--seed``) and runs faster than real time; a progress bar is shown
for long files when stderr is a terminal.

Length: exactly to the end of the MIDI file (its last event, the end-of-track marker
included, with the tempo map applied), so stems rendered from one arrangement line up
sample for sample; ``--tail SECONDS`` adds that much after the end for the releases.

Output: the format follows the extension of ``-o`` (``.wav``, ``.flac``, ``.ogg``,
``.aif``/``.aiff``), mono or ``--channels 2`` (the same signal on both). The output path
is checked before anything is rendered. WAV is written with soundfile when it is
installed (a runtime dependency; ``pcm24`` needs it), else with scipy; the other
formats need soundfile.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import numpy as np

from daemon import paths
from daemon.errors import CanneError

__all__ = ["DEFAULT_MODEL", "DEFAULT_MAPPING", "OUTPUT_FORMATS", "render_midi", "check_output", "write_audio",
           "write_wav", "add_arguments", "run"]

log = logging.getLogger(__name__)

#: The shipped defaults (or the performer's own copies named ``default``): daemon/paths.py.
DEFAULT_MODEL = paths.default_model()
DEFAULT_MAPPING = paths.default_mapping()


def _progress(total: int, enabled: bool):
    """tqdm if installed and wanted (it is not a daemon dependency), else nothing."""
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="s", unit_scale=False, desc="render", leave=False,
                bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} s [{elapsed}<{remaining}]")


def render_midi(midi_path, model, *, sample_rate: int = 48000, mapping_path=None, seed: int = 0,
                lookahead: int = 0, tail_s: float = 0.0, progress: bool = False,
                polyphony: int | None = None, sink=None) -> np.ndarray:
    """Render a MIDI file to a float32 mono signal, exactly to the file's end (+ ``tail_s``).

    Parameters
    ----------
    midi_path : str or Path
    model : daemon.core.model.DecoderModel
    sample_rate : int
    mapping_path : str or Path, optional
        YAML mapping (``daemon.control.mapping.load_mapping``); None: notes, pitch bend
        and sustain only, with the model's defaults.
    tail_s : float
        Seconds rendered after the end of the file (for releases); 0 = the file's
        length exactly.
    sink : callable, optional
        ``sink(block)`` receives the audio as it is rendered (float32 blocks of up to 64
        hops) and nothing is kept: memory does not grow with the song (``canne render``
        streams to the output file this way). The return value is then empty.

    Returns
    -------
    ndarray [round((file length + tail_s) * sample_rate)] float32 in [-1, 1].
    """
    from daemon.core.engine import Engine
    from daemon.control.mapper import Mapper
    from daemon.control.mapping import load_mapping
    from daemon.adapters.midifile import load_midi_file
    from daemon.app.runtime import ProgramSwitcher

    # regular file <= 2 MiB, format 0/1, <= 1 hour, else one MidiFileError line
    midi = load_midi_file(midi_path)
    mapping = load_mapping(mapping_path, model) if mapping_path else None
    kwargs = {}
    if polyphony:
        kwargs["polyphony"] = int(polyphony)
        kwargs["max_polyphony"] = max(64, int(polyphony))
    engine = Engine(model, sample_rate=int(sample_rate), lookahead=lookahead, seed=seed, **kwargs)
    sr = int(sample_rate)
    pos = 0
    mapper = Mapper(mapping, engine, clock=lambda: pos / sr)  # LFOs in file time
    ProgramSwitcher(mapper, engine)  # not started: program changes switch inline (deterministic)
    if polyphony:  # the command line wins over the mapping's notes.polyphony
        engine.set_polyphony(int(polyphony))

    events = []
    t = 0.0
    for msg in midi:  # merged tracks, delta times in seconds (tempo map applied)
        t += msg.time
        if not msg.is_meta:
            events.append((t, msg))
    if any(lfo.beats > 0 for lfo in mapper.mapping.lfos):  # beat-synced LFOs follow the file's tempo map
        events = sorted(events + _clock_pulses(midi, t), key=lambda e: e[0])
    # The file ends with its last message, meta events (end of track) included.
    end = int(round((t + max(0.0, float(tail_s))) * sr))
    hop = engine.hop_length
    chunks = []
    bar = _progress(end / sr, progress)

    def advance(target: int) -> None:
        nonlocal pos
        while pos < target:
            lfos = bool(mapper.mapping.lfos)  # LFOs move per hop: render hop by hop
            n = min(target - pos, hop if lfos else 64 * hop)
            if lfos:
                mapper.tick(pos / sr)
            block = engine.render(n)
            if sink is not None:
                sink(block)
            else:
                chunks.append(block)
            if bar is not None:
                bar.update(n / sr)
            pos += n

    try:
        for when, msg in events:
            advance(min(int(round(when * sr)), end))
            mapper.handle(msg, now=pos / sr)
        advance(end)
    finally:
        if bar is not None:
            bar.close()
    return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)


def _clock_pulses(midi, end_s: float) -> list:
    """A MIDI clock (Start, then 24 pulses a beat) from the file's tempo map, as (seconds, message)."""
    import mido

    tpb = midi.ticks_per_beat
    tempo = 500000
    tick = 0
    sec = 0.0
    changes = [(0, 0.0, tempo)]  # (tick, seconds, tempo from there)
    for msg in mido.merge_tracks(midi.tracks):
        tick += msg.time
        if msg.type == "set_tempo":
            sec = changes[-1][1] + (tick - changes[-1][0]) * changes[-1][2] / 1e6 / tpb
            changes.append((tick, sec, msg.tempo))
    out = [(0.0, mido.Message("start"))]
    k, j = 1, 0
    while True:
        pt = k * tpb / 24.0
        while j + 1 < len(changes) and changes[j + 1][0] <= pt:
            j += 1
        t0, s0, tp = changes[j]
        when = s0 + (pt - t0) * tp / 1e6 / tpb
        if when > end_s:
            return out
        out.append((when, mido.Message("clock")))
        k += 1


#: Extension -> (soundfile container, sample formats it can hold: --format -> soundfile subtype).
OUTPUT_FORMATS = {
    ".wav": ("WAV", {"pcm16": "PCM_16", "pcm24": "PCM_24", "float": "FLOAT"}),
    ".flac": ("FLAC", {"pcm16": "PCM_16", "pcm24": "PCM_24"}),
    ".ogg": ("OGG", {"pcm16": "VORBIS", "pcm24": "VORBIS", "float": "VORBIS"}),  # lossy, any --format
    ".aif": ("AIFF", {"pcm16": "PCM_16", "pcm24": "PCM_24", "float": "FLOAT"}),
    ".aiff": ("AIFF", {"pcm16": "PCM_16", "pcm24": "PCM_24", "float": "FLOAT"}),
}


def _soundfile():
    try:
        import soundfile
    except (ImportError, OSError):  # not installed, or libsndfile missing
        return None
    return soundfile


def check_output(path, fmt: str = "pcm16", channels: int = 1) -> Path:
    """Check ``-o`` before rendering: known extension, format it can hold, a writable place.

    Raises :class:`CanneError` (one line, with the fix).
    """
    path = Path(path).expanduser()
    ext = path.suffix.lower()
    if ext not in OUTPUT_FORMATS:
        known = ", ".join(OUTPUT_FORMATS)
        raise CanneError(f"-o {path}: the extension picks the format; use one of {known}")
    container, subtypes = OUTPUT_FORMATS[ext]
    if fmt not in subtypes:
        raise CanneError(f"--format {fmt} cannot be stored in {container}; use "
                         f"{' or '.join(subtypes)} (or a .wav file)")
    if channels not in (1, 2):
        raise CanneError(f"--channels {channels}: use 1 or 2")
    needs_sf = ext != ".wav" or fmt == "pcm24"
    if needs_sf and _soundfile() is None:
        raise CanneError(f"-o {path}: writing {container}{' 24-bit' if fmt == 'pcm24' else ''} needs the "
                         "soundfile package (pip install soundfile); .wav with pcm16 or float works without it")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise CanneError(f"output folder does not exist: {parent} (create it or choose another -o)")
    if path.is_dir():
        raise CanneError(f"-o {path} is a folder; give a file name, e.g. {path / 'song.wav'}")
    if path.exists() and not os.access(path, os.W_OK):
        raise CanneError(f"-o {path}: the file exists and is not writable")
    if not path.exists() and not os.access(parent, os.W_OK):
        raise CanneError(f"output folder {parent} is not writable (choose another -o)")
    return path


def write_audio(path, audio: np.ndarray, sample_rate: int, fmt: str = "pcm16", channels: int = 1) -> None:
    """Write mono ``audio`` (float, [-1, 1]) in the format of ``path``'s extension.

    ``channels`` 2 writes the same signal to both channels. Call :func:`check_output`
    first (``run`` does, before rendering).
    """
    path = check_output(path, fmt, channels)
    container, subtypes = OUTPUT_FORMATS[path.suffix.lower()]
    data = _quantise(audio, fmt, subtypes, channels)
    sf = _soundfile()
    try:
        if sf is not None:
            sf.write(str(path), data, int(sample_rate), subtype=subtypes[fmt], format=container)
            return
        from scipy.io import wavfile

        wavfile.write(str(path), int(sample_rate), data)
    except (OSError, RuntimeError) as exc:  # disk full, permission changed meanwhile...
        raise CanneError(f"cannot write {path}: {exc}") from None


def _quantise(audio, fmt: str, subtypes: dict, channels: int) -> np.ndarray:
    """Float [-1, 1] -> the samples written, the same way for every writer and container
    (libsndfile's own float-to-integer conversion differs between WAV and FLAC by one step)."""
    audio = np.clip(np.nan_to_num(np.asarray(audio, np.float32)), -1.0, 1.0)
    if channels == 2:
        audio = np.repeat(audio[:, None], 2, axis=1)
    if fmt == "pcm16" and subtypes[fmt] != "VORBIS":
        return np.round(audio * 32767.0).astype(np.int16)
    if fmt == "pcm24" and subtypes[fmt] != "VORBIS":
        return np.round(audio * 8388607.0).astype(np.int32) << 8  # 24 bits, left-aligned in int32
    return audio


class StreamWriter:
    """Writes rendered blocks straight to the output file (soundfile), keeping only the
    peak: ``canne render``'s memory does not grow with the song."""

    def __init__(self, path, sample_rate: int, fmt: str = "pcm16", channels: int = 1):
        sf = _soundfile()
        self.path = check_output(path, fmt, channels)
        container, self.subtypes = OUTPUT_FORMATS[self.path.suffix.lower()]
        self.fmt, self.channels, self.frames, self.peak = fmt, channels, 0, 0.0
        try:
            self._f = sf.SoundFile(str(self.path), "w", samplerate=int(sample_rate),
                                   channels=channels, subtype=self.subtypes[fmt], format=container)
        except (OSError, RuntimeError) as exc:
            raise CanneError(f"cannot write {self.path}: {exc}") from None

    def __call__(self, block: np.ndarray) -> None:
        if block.size:
            self.peak = max(self.peak, float(np.max(np.abs(np.nan_to_num(block)))))
        try:
            self._f.write(_quantise(block, self.fmt, self.subtypes, self.channels))
        except (OSError, RuntimeError) as exc:
            raise CanneError(f"cannot write {self.path}: {exc}") from None
        self.frames += len(block)

    def close(self) -> None:
        self._f.close()


def write_wav(path, audio: np.ndarray, sample_rate: int, fmt: str = "pcm16") -> None:
    """Write mono ``audio`` as WAV (kept for callers of the old name; see :func:`write_audio`)."""
    if Path(path).suffix.lower() != ".wav":
        raise CanneError(f"{path}: write_wav writes .wav files; use write_audio for other formats")
    write_audio(path, audio, sample_rate, fmt, 1)


def add_output_argument(p: argparse.ArgumentParser) -> None:
    """``-o/--output``, shared by ``canne render`` and ``canne process``."""
    p.add_argument("-o", "--output", required=True, metavar="OUT.wav",
                   help="file to write; the extension picks the format: .wav, .flac, .ogg, .aif/.aiff")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("midi", metavar="SONG.mid", help="MIDI file to play")
    add_output_argument(p)
    p.add_argument("--model", default=None, metavar="DIR|NAME",
                   help="model folder, decoder.onnx or name (default: 'default': yours, else the shipped one)")
    p.add_argument("--mapping", default=None, metavar="YAML|NAME",
                   help="knob mapping file or name; '' for notes/bend/sustain only "
                        "(default: 'default': yours, else the shipped one)")
    p.add_argument("--sample-rate", type=int, default=48000, metavar="HZ", help="output rate (default: %(default)s)")
    p.add_argument("--format", choices=["pcm16", "pcm24", "float"], default="pcm16",
                   help="sample format: 16- or 24-bit integer, or 32-bit float (WAV, AIFF) (default: %(default)s)")
    p.add_argument("--channels", type=int, choices=[1, 2], default=1,
                   help="1 = mono; 2 = the same signal on both channels (default: %(default)s)")
    p.add_argument("--lookahead", type=int, choices=[0, 1], default=0,
                   help="phase lookahead: 1 = better phase, one hop more latency (default: 0, as live)")
    p.add_argument("--polyphony", type=int, default=None, metavar="N", help="voices (default: the mapping's)")
    p.add_argument("--seed", type=int, default=0, help="random-phase seed (default: %(default)s)")
    p.add_argument("--tail", type=float, default=0.0, metavar="SECONDS",
                   help="render this long after the end of the MIDI file, for releases (default: %(default)s: "
                        "the file's length exactly, so stems line up)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--spectrogram", default=None, metavar="OUT.png",
                   help="also draw the rendered sound's spectrogram (log frequency) into this PNG (needs matplotlib)")


def run(args) -> int:
    import time

    from daemon.core.model import DecoderModel

    if not 8000 <= args.sample_rate <= 384000:
        raise CanneError(f"--sample-rate {args.sample_rate}: must be 8000..384000 Hz")
    if not 0.0 <= args.tail <= 600.0:
        raise CanneError(f"--tail {args.tail}: must be 0..600 seconds")
    check_output(args.output, args.format, args.channels)  # before any rendering
    spectrogram = getattr(args, "spectrogram", None)
    if spectrogram:
        from daemon.adapters.pictures import check_png

        check_png(spectrogram)
    model = DecoderModel(paths.find_model(args.model) if args.model else paths.default_model())
    if args.mapping is None:
        mapping = paths.default_mapping()
    else:
        mapping = paths.find_mapping(args.mapping) if args.mapping else None
    t0 = time.perf_counter()
    opts = dict(sample_rate=args.sample_rate, mapping_path=mapping, seed=args.seed,
                lookahead=args.lookahead, tail_s=args.tail, polyphony=args.polyphony,
                progress=not args.no_progress and sys.stderr.isatty())
    if spectrogram or _soundfile() is None:  # the picture needs the whole signal
        audio = render_midi(args.midi, model, **opts)
        elapsed = time.perf_counter() - t0
        write_audio(args.output, audio, args.sample_rate, args.format, args.channels)
        n, peak = len(audio), (float(np.max(np.abs(audio))) if audio.size else 0.0)
    else:  # streamed to the file: memory independent of the song's length
        writer = StreamWriter(args.output, args.sample_rate, args.format, args.channels)
        try:
            render_midi(args.midi, model, sink=writer, **opts)
        except BaseException:
            writer.close()
            writer.path.unlink(missing_ok=True)  # no half-written file after an error
            raise
        writer.close()
        elapsed = time.perf_counter() - t0
        n, peak = writer.frames, writer.peak
    dur = n / args.sample_rate
    peak_db = 20 * np.log10(peak) if peak > 0 else float("-inf")
    print(f"wrote {args.output}: {dur:.2f} s at {args.sample_rate} Hz, {args.channels} ch, peak {peak_db:.1f} dBFS, "
          f"rendered in {elapsed:.2f} s ({dur / max(elapsed, 1e-9):.1f}x real time)")
    if spectrogram:
        from daemon.adapters.pictures import spectrogram_png

        spectrogram_png(spectrogram, audio, args.sample_rate, title=Path(args.midi).name)
        print(f"wrote {spectrogram}")
    return 0
