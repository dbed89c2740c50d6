"""``canne process IN.wav -o OUT.wav``: the ANNe effect on a sound file, offline.

The same :class:`daemon.core.effect.EffectEngine` as the live effect, fed hop by hop; the
output is aligned with the input (the effect's latency of ``n_fft`` samples is taken
off) and as long as the input. Multichannel input is mixed to mono; the output is at
the input's rate. Settings come from the mapping's ``effect:`` section (if any) and
then from the options, which win.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from daemon import paths
from daemon.errors import CanneError

__all__ = ["process_audio", "add_arguments", "run"]

MAX_INPUT_SECONDS = 3 * 3600


def _floats(text: str, what: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise CanneError(f"{what} {text!r}: a comma-separated list of numbers, e.g. 1,2.5,1,1,0.5") from None


def process_audio(x: np.ndarray, sample_rate: int, decoder, encoder, settings=None, *,
                  block: int = 4096, progress=None) -> np.ndarray:
    """Run the effect over mono ``x``; returns float32 of the same length, latency removed."""
    from daemon.core.effect import EffectEngine

    eng = EffectEngine(decoder, encoder, sample_rate=sample_rate, settings=settings)
    lat = eng.latency_samples
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    total = len(x) + lat
    out = np.empty(total, np.float32)
    pad = np.zeros(lat)
    i = 0
    while i < total:
        k = min(block, total - i)
        if i + k <= len(x):
            chunk = x[i:i + k]
        else:
            chunk = np.concatenate([x[i:len(x)], pad[:i + k - max(i, len(x))]])
        eng.process(chunk, out[i:i + k])
        i += k
        if progress is not None:
            progress.update(k / sample_rate)
    return out[lat:]


def read_input(path) -> tuple[np.ndarray, int]:
    path = Path(path).expanduser()
    if not path.is_file():
        raise CanneError(f"input file not found: {path}")
    try:
        import soundfile as sf

        info = sf.info(str(path))
        if info.frames > MAX_INPUT_SECONDS * info.samplerate:
            raise CanneError(f"{path}: {info.frames / info.samplerate / 3600:.1f} h of audio; "
                             f"the limit is {MAX_INPUT_SECONDS // 3600} h")
        y, sr = sf.read(str(path), dtype="float64", always_2d=True)
    except CanneError:
        raise
    except Exception as exc:
        raise CanneError(f"cannot read {path}: {(str(exc).strip().splitlines() or ['unknown format'])[0]}"
                         ) from None
    if y.size == 0:
        raise CanneError(f"{path} holds no samples")
    y = y.mean(axis=1)
    return np.nan_to_num(y, nan=0.0, posinf=0.0, neginf=0.0), int(sr)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from daemon.app.render import add_output_argument

    p.add_argument("input", metavar="IN.wav", help="sound file to process (WAV, FLAC, ...)")
    add_output_argument(p)
    p.add_argument("--model", default=None, metavar="DIR|NAME",
                   help="model folder with encoder.onnx and decoder.onnx (default: 'anne')")
    p.add_argument("--mapping", default=None, metavar="YAML|NAME",
                   help="mapping whose effect: section sets the knobs (default: none)")
    p.add_argument("--gains", default=None, metavar="G1,G2,...",
                   help="gain per latent group (the thesis: five knobs, 0.5..5.5; 1 = unchanged)")
    p.add_argument("--split", default=None, metavar="PRESET|S1,S2,...",
                   help="how the latent is cut into groups: even, fine_first, coarse_first, centre, "
                        "or relative sizes (default: even)")
    p.add_argument("--mix", type=float, default=None, help="wet share 0..1 (default 1)")
    p.add_argument("--phase", choices=["input", "rtpghi"], default=None,
                   help="phase of the output: the input's (default) or rebuilt by RTPGHI")
    p.add_argument("--freeze", action="store_true", help="hold the first frame's latent")
    p.add_argument("--format", choices=["pcm16", "pcm24", "float"], default="pcm16")
    p.add_argument("--channels", type=int, choices=[1, 2], default=1)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def settings_from_args(args, base=None):
    from daemon.core.effect import SPLIT_PRESETS, EffectSettings

    s = base or EffectSettings()
    if args.split is not None:
        s.split = args.split if args.split in SPLIT_PRESETS else _floats(args.split, "--split")
    if args.gains is not None:
        s.gains = _floats(args.gains, "--gains")
    elif args.split is not None:
        from daemon.core.effect import split_sizes

        try:
            s.gains = [1.0] * len(split_sizes(64, s.split))
        except ValueError as exc:
            raise CanneError(f"--split: {exc}") from None
    if args.mix is not None:
        s.mix = args.mix
    if args.phase is not None:
        s.phase = args.phase
    if args.freeze:
        s.freeze = True
    return s


def run(args) -> int:
    from daemon.core.model import DecoderModel, EncoderModel
    from daemon.app.render import _progress, check_output, write_audio

    check_output(args.output, args.format, args.channels)
    x, sr = read_input(args.input)
    decoder = DecoderModel(paths.find_model(args.model or "anne"))
    encoder = EncoderModel(decoder)
    base = None
    if args.mapping:
        from daemon.control.mapping import load_mapping

        base = getattr(load_mapping(paths.find_mapping(args.mapping), decoder), "effect", None)
    settings = settings_from_args(args, base)
    try:
        settings.validate(decoder.latent_dim)
    except ValueError as exc:
        raise CanneError(f"effect settings: {exc}") from None
    bar = _progress(len(x) / sr, not args.no_progress and sys.stderr.isatty())
    t0 = time.perf_counter()
    y = process_audio(x, sr, decoder, encoder, settings, progress=bar)
    elapsed = time.perf_counter() - t0
    if bar is not None:
        bar.close()
    write_audio(args.output, y, sr, args.format, args.channels)
    dur = len(y) / sr
    print(f"wrote {args.output}: {dur:.2f} s at {sr} Hz through {decoder.path.parent.name}, "
          f"processed in {elapsed:.2f} s ({dur / max(elapsed, 1e-9):.1f}x real time)")
    return 0
