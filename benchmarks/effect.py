"""The ANNe effect on held-out material: transparency at unity gains, what each knob
does, speed.

    python -m benchmarks.effect [--model models/anne] [--corpus cache/fluidr3-phrases]

Held-out material (never in the model's training set):
- ``test-programs``: the corpus's test-split GM programs, their seeded phrases
  re-rendered with FluidR3_GM (programs the model never saw);
- ``other-soundfont``: phrases of other programs rendered with another SoundFont
  (TimGM6mb: other samples of other instruments);
- ``speech``: sentences spoken by espeak-ng (if installed), resampled to the model rate.

Figures:
- SC(output vs input) at unity gains with the input's phase, on magnitude frames
  normalised like the corpus (each frame by its input peak; frames 60 dB below the
  loudest dropped), in dB (20 log10 ||X - Y|| / ||X||) and in the thesis code's form,
  beside the model's validation SC from its metadata;
- per knob (gain group k set to 3.0, the rest at 1): log-spectral distance between the
  long-term spectra of that output and the unity output (dB);
- real-time factor of one stream and p99 per-hop time (thread CPU time).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Music is the space between the notes, and silence is part of the song.",
    "She sells sea shells by the sea shore on a bright and windy morning.",
]


def frames(x, n_fft, hop):
    from daemon.core.dsp import stft_magnitude

    return stft_magnitude(np.asarray(x, np.float64), n_fft, hop)


def sc_normalised(x, y, n_fft, hop, gate_db=60.0) -> dict:
    X, Y = frames(x, n_fft, hop), frames(y, n_fft, hop)
    k = min(len(X), len(Y))
    X, Y = X[:k], Y[:k]
    peak = X.max(axis=1)
    keep = peak > peak.max() * 10 ** (-gate_db / 20)
    Xn = X[keep] / peak[keep, None]
    Yn = Y[keep] / peak[keep, None]
    err = ((Xn - Yn) ** 2).sum()
    ref = (Xn ** 2).sum()
    return {"sc_db": float(10 * np.log10(err / ref)), "sc_mse": float(err / ref),
            "frames": int(keep.sum())}


def material(corpus_dir: Path, sr: int, seconds: float) -> dict:
    from training import fluid, phrases
    from training.corpus import load_corpus

    out = {}
    c = load_corpus(corpus_dir)
    src = c.meta["source"]
    progs = c.meta["split"]["test"][:6]
    sf2 = Path(src["soundfont"])
    seed = int(c.meta.get("seed", 0))
    out["test-programs"] = np.concatenate([
        fluid.render_program(p, [], soundfont=sf2, sample_rate=sr, tail_s=1.0, gain=src["gain"],
                             events=phrases.phrase(p, seconds, seed)) for p in progs])
    other = Path("/usr/share/sounds/sf2/TimGM6mb.sf2")
    if other.is_file():
        out["other-soundfont"] = np.concatenate([
            fluid.render_program(p, [], soundfont=other, sample_rate=sr, tail_s=1.0, gain=0.5,
                                 events=phrases.phrase(p, seconds, 77)) for p in (5, 22, 42, 66, 75)])
    exe = shutil.which("espeak-ng") or shutil.which("espeak")
    if exe:
        import soundfile as sf
        from scipy.signal import resample_poly

        parts = []
        with tempfile.TemporaryDirectory() as td:
            for i, s in enumerate(SENTENCES):
                for voice in ("en", "en+f3"):
                    wav = Path(td) / f"s{i}{voice}.wav"
                    subprocess.run([exe, "-v", voice, "-w", str(wav), s], check=True,
                                   capture_output=True)
                    y, r = sf.read(str(wav), dtype="float64")
                    g = int(np.gcd(r, sr))
                    parts.append(resample_poly(y, sr // g, r // g))
                    parts.append(np.zeros(sr // 4))
        out["speech"] = 0.5 * np.concatenate(parts) / max(1e-9, np.max(np.abs(np.concatenate(parts))))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(REPO / "models" / "anne"))
    ap.add_argument("--corpus", default=str(REPO / "cache" / "fluidr3-phrases"))
    ap.add_argument("--seconds", type=float, default=8.0, help="phrase length per program")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    from daemon.core.effect import EffectEngine, EffectSettings, split_sizes
    from daemon.core.model import DecoderModel, EncoderModel
    from daemon.app.process import process_audio

    dec = DecoderModel(args.model)
    enc = EncoderModel(dec)
    sr, L, H = dec.sample_rate, dec.n_fft, dec.hop_length
    res = {"model": args.model, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "validation": dec.metadata.get("validation_metrics")}
    mats = material(Path(args.corpus), sr, args.seconds)
    n_groups = len(split_sizes(dec.latent_dim, "even"))
    for name, x in mats.items():
        y = process_audio(x, sr, dec, enc)
        r = {"seconds": round(len(x) / sr, 1), "unity": sc_normalised(x, y, L, H)}
        base = np.log10(frames(y, L, H).mean(axis=0) + 1e-9)
        lsd = []
        for k in range(n_groups):
            g = [1.0] * n_groups
            g[k] = 3.0
            yk = process_audio(x, sr, dec, enc, EffectSettings(gains=g))
            spec = np.log10(frames(yk, L, H).mean(axis=0) + 1e-9)
            lsd.append(round(float(20 * np.sqrt(np.mean((spec - base) ** 2))), 2))
        r["knob_lsd_db_gain3"] = lsd
        y0 = process_audio(x, sr, dec, enc, EffectSettings(gains=[0.5] * n_groups))
        y5 = process_audio(x, sr, dec, enc, EffectSettings(gains=[5.5] * n_groups))
        r["all_finite_and_bounded"] = bool(all(np.all(np.isfinite(v)) and np.max(np.abs(v)) <= 1.0
                                               for v in (y, y0, y5)))
        res[name] = r
        print(name, json.dumps(r), flush=True)
    # speed: one stream, hop by hop
    x = next(iter(mats.values()))[: 20 * sr]
    eng = EffectEngine(dec, enc, sample_rate=sr)
    times = []
    for i in range(0, len(x) - H, H):
        c0 = time.thread_time()
        eng.process(x[i:i + H])
        times.append(time.thread_time() - c0)
    t = np.array(times[8:])
    res["speed"] = {"rtf_cpu": float(t.sum() / (len(t) * H / sr)),
                    "p99_hop_ms_cpu": float(1000 * np.percentile(t, 99)),
                    "p99_pct_of_hop": float(100 * np.percentile(t, 99) / (H / sr)),
                    "latency_samples": eng.latency_samples,
                    "latency_ms": 1000.0 * eng.latency_samples / sr}
    print("speed", json.dumps(res["speed"]), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
