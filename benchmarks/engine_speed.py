"""Engine speed: phase cost per frame, real-time factor at 1/8/32/64 voices, hop jitter.

Run from the repository root::

    python -m benchmarks.engine_speed            # full run, ~1–2 min
    python -m benchmarks.engine_speed --quick    # smoke run (not the figures)

One core: numpy/BLAS and onnxruntime are held to one thread (the environment is set
before numpy is imported; ``DecoderModel`` opens onnxruntime with 1 intra/1 inter-op
thread). The machine is shared and noisy (2 vCPU, other jobs): compare figures as
ratios within one run; each figure is the median of ``--reps`` repetitions.

Measured, each on the harmonic test decoder (``tests/harmonic_model.py``, a tiny graph:
the engine's own cost) and on ``models/default/`` (the thesis-size decoder) when present:

- phase: ``daemon.core.phase.RTPGHI.execute`` on real magnitude frames (the chord of
  ``benchmarks.signals``), ms per frame per voice, 1 voice and batched 8/64 voices;
- real-time factor = render time / audio time (wall clock, the target; thread CPU time
  beside it), distinct notes held, the latent moving every hop
  (so the decoder runs every hop: the worst case), 44.1 kHz output, lookahead 0;
- per-hop render time at 8 voices, p50/p99/max against the hop duration (wall clock,
  the target; the thread's CPU time is printed beside it to separate the engine's
  own work from preemption by other jobs on the machine).

Targets (issue 3): phase <= 0.3 ms per frame per voice; RTF <= 0.25 at 32 voices and
<= 0.5 at 64; p99 hop time at 8 voices <= 10 % of the hop.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from benchmarks import signals  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
TARGET_PHASE_MS = 0.3
TARGET_RTF = {32: 0.25, 64: 0.5}
TARGET_P99_FRACTION = 0.10
SAMPLE_RATE = 44100


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def phase_speed(n_voices: int, lookahead: int, reps: int, n_frames: int) -> float:
    """Median over ``reps`` of ms per frame per voice for RTPGHI.execute."""
    from daemon.core.phase import RTPGHI

    S = signals.magnitude(signals.chord())
    S = (S / S.max()).astype(np.float64)
    frames = np.repeat(S[:, None, :], n_voices, axis=1)  # [frames, voices, bins]
    k = min(n_frames, frames.shape[0])
    results = []
    for _ in range(reps):
        plan = RTPGHI(signals.N_FFT, signals.HOP, n_voices, lookahead)
        for i in range(4):  # warm-up
            plan.execute(frames[i])
        t0 = time.perf_counter()
        for i in range(k):
            plan.execute(frames[i])
        results.append((time.perf_counter() - t0) * 1000.0 / (k * n_voices))
    return float(np.median(results))


def make_engine(model, n_voices: int):
    from daemon.core.engine import Engine

    eng = Engine(model, sample_rate=SAMPLE_RATE, polyphony=n_voices, max_polyphony=64,
                 lookahead=0, pitch_mode="transpose")
    for i in range(n_voices):  # distinct notes spread over MIDI 30..93
        eng.note_on(30 + (37 * i) % 64, 100)
    return eng


class LatentWalk:
    """Moves one latent per hop along a slow sine inside the learned range."""

    def __init__(self, model):
        self.lo = np.asarray(model.latent_min, dtype=np.float64)
        self.hi = np.asarray(model.latent_max, dtype=np.float64)
        self.dim = int(model.latent_dim)
        self.k = 0

    def step(self, eng) -> None:
        i = self.k % self.dim
        x = 0.5 + 0.5 * np.sin(0.05 * self.k + i)
        eng.set_latent(i, float(self.lo[i] + (self.hi[i] - self.lo[i]) * x))
        self.k += 1


def engine_rtf(model, n_voices: int, seconds: float, reps: int) -> tuple[float, float, int]:
    """Median real-time factor by wall clock and by thread CPU time; also the active
    voices at the end (sanity)."""
    hop = model.hop_length
    n_hops = max(1, int(seconds * SAMPLE_RATE / hop))
    out = np.zeros(hop, np.float32)
    rtfs, cpus = [], []
    active = 0
    for _ in range(reps):
        eng = make_engine(model, n_voices)
        walk = LatentWalk(model)
        for _ in range(8):  # warm-up: attacks, first decodes
            walk.step(eng)
            eng.render(hop, out)
        busy = cpu = 0.0
        for _ in range(n_hops):
            walk.step(eng)
            c0 = time.thread_time()
            t0 = time.perf_counter()
            eng.render(hop, out)
            busy += time.perf_counter() - t0
            cpu += time.thread_time() - c0
        audio_s = n_hops * hop / SAMPLE_RATE
        rtfs.append(busy / audio_s)
        cpus.append(cpu / audio_s)
        active = eng.stats.active_voices
    return float(np.median(rtfs)), float(np.median(cpus)), active


def hop_times(model, n_voices: int, seconds: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-hop render times (ms) over ``seconds`` of audio: wall clock, and the
    thread's CPU time (the engine's own work, without preemption by other jobs)."""
    hop = model.hop_length
    n_hops = max(1, int(seconds * SAMPLE_RATE / hop))
    out = np.zeros(hop, np.float32)
    eng = make_engine(model, n_voices)
    walk = LatentWalk(model)
    for _ in range(8):
        walk.step(eng)
        eng.render(hop, out)
    t = np.empty(n_hops)
    c = np.empty(n_hops)
    for j in range(n_hops):
        walk.step(eng)
        c0 = time.thread_time()
        t0 = time.perf_counter()
        eng.render(hop, out)
        t[j] = (time.perf_counter() - t0) * 1000.0
        c[j] = (time.thread_time() - c0) * 1000.0
    return t, c


def load_models(which: list[str], tmp: Path):
    from daemon.core.model import DecoderModel

    models = []
    for name in which:
        if name == "harmonic":
            sys.path.insert(0, str(REPO))
            from tests.harmonic_model import build_harmonic_decoder

            path = build_harmonic_decoder(tmp / "harmonic", sample_rate=SAMPLE_RATE,
                                          n_fft=signals.N_FFT, hop_length=signals.HOP)
            models.append(("harmonic test decoder", DecoderModel(path)))
        else:
            path = Path(name)
            if not (path / "decoder.onnx").is_file() and not path.is_file():
                print(f"note: {path} has no decoder.onnx; skipped")
                continue
            models.append((str(path), DecoderModel(path)))
    return models


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny settings (smoke run, not the figures)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--voices", type=int, nargs="+", default=[1, 8, 32, 64])
    ap.add_argument("--models", nargs="+", default=["harmonic", str(REPO / "models" / "default")],
                    help="'harmonic' and/or model directories")
    args = ap.parse_args(argv)
    reps, voices = args.reps, args.voices
    rtf_seconds, jitter_seconds, phase_frames = 3.0, 20.0, 64
    if args.quick:
        reps, voices, rtf_seconds, jitter_seconds, phase_frames = 1, [1, 8], 0.3, 0.5, 8

    import onnxruntime

    print(f"engine speed: {SAMPLE_RATE} Hz output, n_fft {signals.N_FFT}, hop {signals.HOP} "
          f"({1000.0 * signals.HOP / SAMPLE_RATE:.2f} ms), numpy {np.__version__}, "
          f"onnxruntime {onnxruntime.__version__}, threads pinned to 1; median of {reps} reps")
    print("note: shared, noisy 2-vCPU machine; compare as ratios within one run")
    ok_all = True

    print()
    print("phase (daemon.core.phase.RTPGHI.execute, chord frames), ms per frame per voice:")
    print("| voices in one call | lookahead 0 | lookahead 1 |")
    print("|---|---|---|")
    phase_1 = {}
    for nv in ([1, 8] if args.quick else [1, 8, 64]):
        row = [phase_speed(nv, la, reps, phase_frames) for la in (0, 1)]
        if nv == 1:
            phase_1 = dict(zip((0, 1), row))
        print(f"| {nv} | {row[0]:.3f} | {row[1]:.3f} |")
    for la, ms in phase_1.items():
        ok = ms <= TARGET_PHASE_MS
        ok_all &= ok
        print(f"{verdict(ok)}  phase, 1 voice, lookahead {la}: {ms:.3f} ms/frame <= {TARGET_PHASE_MS} ms")

    with tempfile.TemporaryDirectory() as tmpdir:
        models = load_models(args.models, Path(tmpdir))
        for label, model in models:
            hop_ms = 1000.0 * model.hop_length / SAMPLE_RATE
            print()
            print(f"model: {label} (decoder {model.latent_dim} -> {model.n_bins}, "
                  f"model rate {model.sample_rate} Hz)")
            print("| voices | real-time factor (wall) | RTF by thread CPU time | audio s per rep |")
            print("|---|---|---|---|")
            rtf = {}
            for nv in voices:
                rtf[nv], cpu, active = engine_rtf(model, nv, rtf_seconds, reps)
                flag = "" if active == nv else f" (only {active} active!)"
                print(f"| {nv} | {rtf[nv]:.3f}{flag} | {cpu:.3f} | {rtf_seconds:g} |")
            for nv, target in TARGET_RTF.items():
                if nv in rtf:
                    ok = rtf[nv] <= target
                    ok_all &= ok
                    print(f"{verdict(ok)}  RTF at {nv} voices {rtf[nv]:.3f} <= {target}")
            t, c = hop_times(model, 8, jitter_seconds)
            p50, p99, mx = np.percentile(t, 50), np.percentile(t, 99), float(np.max(t))
            print(f"hop render time at 8 voices over {t.size} hops (wall clock): p50 {p50:.2f} ms, "
                  f"p99 {p99:.2f} ms, max {mx:.2f} ms (hop {hop_ms:.2f} ms: "
                  f"p99 = {100 * p99 / hop_ms:.1f} %, max = {100 * mx / hop_ms:.1f} %)")
            cp50, cp99, cmx = np.percentile(c, 50), np.percentile(c, 99), float(np.max(c))
            print(f"  same hops, thread CPU time (no preemption): p50 {cp50:.2f} ms, p99 {cp99:.2f} ms "
                  f"({100 * cp99 / hop_ms:.1f} %), max {cmx:.2f} ms")
            ok = p99 <= TARGET_P99_FRACTION * hop_ms
            ok_all &= ok
            print(f"{verdict(ok)}  p99 hop time {p99:.2f} ms <= {100 * TARGET_P99_FRACTION:.0f} % "
                  f"of the hop ({TARGET_P99_FRACTION * hop_ms:.2f} ms)")
    return 0 if ok_all else 1


if __name__ == "__main__":
    sys.exit(main())
