"""``canne render SONG.mid -o OUT.wav``: play a MIDI file through the engine, offline.

The same :class:`daemon.engine.Engine` and :class:`daemon.mapper.Mapper` as the live
daemon: notes, CC automation, pitch bend, sustain and program changes all go through
the mapping. Events take effect at the engine's next hop boundary, exactly as live
(so timing is quantised to one hop, ~21 ms at 1024/48 kHz). Rendering is
deterministic (``--seed``) and runs faster than real time; a progress bar is shown
for long files when stderr is a terminal.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

from daemon import paths
from daemon.errors import CanneError

__all__ = ["DEFAULT_MODEL", "DEFAULT_MAPPING", "render_midi", "write_wav", "add_arguments", "run", "main"]

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
                lookahead: int = 0, tail_s: float = 10.0, progress: bool = False,
                polyphony: int | None = None) -> np.ndarray:
    """Render a MIDI file to a float32 mono signal.

    Parameters
    ----------
    midi_path : str or Path
    model : daemon.model.DecoderModel
    sample_rate : int
    mapping_path : str or Path, optional
        YAML mapping (``daemon.mapping.load_mapping``); None: notes, pitch bend
        and sustain only, with the model's defaults.
    tail_s : float
        After the last event, keep rendering until every voice has finished
        (release), at most this many seconds.

    Returns
    -------
    ndarray [samples] float32 in [-1, 1].
    """
    from daemon.engine import Engine
    from daemon.mapper import Mapper
    from daemon.mapping import load_mapping
    from daemon.midifile import load_midi_file

    # regular file <= 2 MiB, format 0/1, <= 1 hour, else one MidiFileError line
    midi = load_midi_file(midi_path)
    mapping = load_mapping(mapping_path, model) if mapping_path else None
    kwargs = {}
    if polyphony:
        kwargs["polyphony"] = int(polyphony)
        kwargs["max_polyphony"] = max(64, int(polyphony))
    engine = Engine(model, sample_rate=int(sample_rate), lookahead=lookahead, seed=seed, **kwargs)
    mapper = Mapper(mapping, engine, synchronous=True)
    if polyphony:  # the command line wins over the mapping's notes.polyphony
        engine.set_polyphony(int(polyphony))

    events = []
    t = 0.0
    for msg in midi:  # merged tracks, delta times in seconds (tempo map applied)
        t += msg.time
        if not msg.is_meta:
            events.append((t, msg))
    duration = events[-1][0] if events else 0.0
    sr = int(sample_rate)
    hop = engine.hop_length
    chunks = []
    pos = 0
    bar = _progress(duration, progress)
    try:
        for when, msg in events:
            target = int(round(when * sr))
            if target > pos:
                chunks.append(engine.render(target - pos))
                if bar is not None:
                    bar.update((target - pos) / sr)
                pos = target
            mapper.handle(msg)
        # tail: until all voices are released and silent, plus one window
        limit = pos + int(tail_s * sr)
        while pos < limit:
            chunks.append(engine.render(hop))
            pos += hop
            if engine.idle:
                chunks.append(engine.render(engine.model.n_fft))
                break
    finally:
        if bar is not None:
            bar.close()
    return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)


def write_wav(path, audio: np.ndarray, sample_rate: int, fmt: str = "pcm16") -> None:
    """Write mono ``audio`` (float, [-1, 1]) as 16-bit PCM or 32-bit float WAV."""
    from scipy.io import wavfile

    path = Path(path)
    if path.parent and not path.parent.exists():
        raise CanneError(f"output folder does not exist: {path.parent} (create it or choose another -o)")
    audio = np.clip(np.nan_to_num(np.asarray(audio, np.float32)), -1.0, 1.0)
    if fmt == "float":
        data = audio.astype(np.float32)
    elif fmt == "pcm16":
        data = np.round(audio * 32767.0).astype(np.int16)
    else:
        raise CanneError(f"--format {fmt!r}: use pcm16 or float")
    wavfile.write(str(path), int(sample_rate), data)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("midi", metavar="SONG.mid", help="MIDI file to play")
    p.add_argument("-o", "--output", required=True, metavar="OUT.wav", help="WAV file to write")
    p.add_argument("--model", default=None, metavar="DIR|NAME",
                   help="model folder, decoder.onnx or name (default: 'default': yours, else the shipped one)")
    p.add_argument("--mapping", default=None, metavar="YAML|NAME",
                   help="knob mapping file or name; '' for notes/bend/sustain only "
                        "(default: 'default': yours, else the shipped one)")
    p.add_argument("--sample-rate", type=int, default=48000, metavar="HZ", help="output rate (default: %(default)s)")
    p.add_argument("--format", choices=["pcm16", "float"], default="pcm16", help="WAV sample format")
    p.add_argument("--lookahead", type=int, choices=[0, 1], default=0,
                   help="phase lookahead: 1 = better phase, one hop more latency (default: 0, as live)")
    p.add_argument("--polyphony", type=int, default=None, metavar="N", help="voices (default: the mapping's)")
    p.add_argument("--seed", type=int, default=0, help="random-phase seed (default: %(default)s)")
    p.add_argument("--tail", type=float, default=10.0, metavar="SECONDS",
                   help="longest release tail after the last event (default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    import time

    from daemon.model import DecoderModel

    if not 8000 <= args.sample_rate <= 384000:
        raise CanneError(f"--sample-rate {args.sample_rate}: must be 8000..384000 Hz")
    model = DecoderModel(paths.find_model(args.model) if args.model else paths.default_model())
    if args.mapping is None:
        mapping = paths.default_mapping()
    else:
        mapping = paths.find_mapping(args.mapping) if args.mapping else None
    t0 = time.perf_counter()
    audio = render_midi(args.midi, model, sample_rate=args.sample_rate, mapping_path=mapping,
                        seed=args.seed, lookahead=args.lookahead, tail_s=args.tail,
                        progress=not args.no_progress and sys.stderr.isatty(), polyphony=args.polyphony)
    elapsed = time.perf_counter() - t0
    write_wav(args.output, audio, args.sample_rate, args.format)
    dur = len(audio) / args.sample_rate
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    peak_db = 20 * np.log10(peak) if peak > 0 else float("-inf")
    print(f"wrote {args.output}: {dur:.2f} s at {args.sample_rate} Hz, peak {peak_db:.1f} dBFS, "
          f"rendered in {elapsed:.2f} s ({dur / max(elapsed, 1e-9):.1f}x real time)")
    return 0


def main(argv=None) -> int:
    """Standalone entry: ``python -m daemon.render SONG.mid -o OUT.wav``."""
    p = argparse.ArgumentParser(prog="canne render", description="Render a MIDI file to WAV through the engine.")
    add_arguments(p)
    args = p.parse_args(argv)
    try:
        return run(args)
    except CanneError as exc:
        print(f"canne render: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
