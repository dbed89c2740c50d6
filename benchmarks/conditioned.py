"""Pitch-conditioned default model (format 2): in tune at every knob position, knobs
shape timbre, reconstruction on held-out programs, register realism, cost.

    python -m benchmarks.conditioned [--model models/default] [--old models/one-octave]
        [--corpus cache/fluidr3-five-octave] [--latents 50] [--quick]

Figures (printed, and written as JSON with --json FILE):

- in tune: notes C2..C7 (every ``--note-step`` semitones) x ``--latents`` random
  latents drawn uniformly in the learned range, rendered by the engine (``canne
  render``'s path), f0 by the benchmark estimator (``benchmarks/f0.py``, independent
  of the engine); share within +-10 and +-5 cents. Chords: four-note chords at random
  latents, each note's partials located in the mix (partials that collide with
  another note's are left out).
- knobs: at C4, per neuron, the decoded spectra at its two range ends (others at the
  default): log-spectral distance (RMS of the dB difference, floor -60 dB re peak) and
  the brightness ratio (spectral centroid / f0, larger over smaller end).
- reconstruction (needs the corpus): SC in the thesis code's form (sum (X-Y)^2 /
  sum X^2) over the test programs' voiced frames, encoder + decoder through
  onnxruntime; beside it a PCA-8 baseline (fit on training frames) and, for the
  old (format 1) model, the same frames through its encoder/decoder.
- register realism: test programs' real frames at C2 and C6 against (a) the
  conditioned reconstruction, (b) the old model's reconstruction of the same
  program's C4 frame moved to the note by the engine's pitch stage (transpose).
- cost: engine real-time factor at 64 voices on 64 distinct pitches with the latent
  moving every hop; p99 hop time at 8 voices (ms and % of the hop).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import f0 as f0mod  # noqa: E402

SR = 44100
RENDER_S = 0.55
MEASURE = (0.25, 0.55)


def midi_to_hz(n):
    return 440.0 * 2.0 ** ((np.asarray(n, dtype=np.float64) - 69.0) / 12.0)


def render(model, notes, z, sr=SR, seconds=RENDER_S):
    from daemon.core.engine import Engine

    eng = Engine(model, sample_rate=sr, polyphony=max(4, len(notes)), max_polyphony=8)
    eng.set_latents(np.asarray(z, dtype=np.float64))
    for n in notes:
        eng.note_on(int(n), 100)
    return eng.render(int(seconds * sr)).astype(np.float64)


def pyin_f0(seg) -> float:
    """librosa's pYIN (median over voiced frames) for the octave, then refined on the
    harmonics' interpolated peaks (pYIN's own grid is 10 cents)."""
    import librosa

    f, v, _ = librosa.pyin(np.asarray(seg, np.float32), fmin=30.0, fmax=2200.0, sr=SR,
                           frame_length=4096, hop_length=512)
    f = f[v & np.isfinite(f)]
    if not len(f):
        return float("nan")
    return f0mod.refine_f0(seg, SR, float(np.median(f)))


def _share(errs) -> tuple[float, float, float]:
    e = np.abs(np.array(errs, dtype=np.float64))
    e = np.where(np.isfinite(e), e, np.inf)
    return float(np.mean(e <= 10.0)), float(np.mean(e <= 5.0)), float(np.median(e))


def in_tune(model, n_latents: int, note_step: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    notes = list(range(36, 97, note_step))
    if notes[-1] != 96:
        notes.append(96)
    errs, errs_ssh = [], []
    worst = []
    for _ in range(n_latents):
        z = rng.uniform(model.latent_min, model.latent_max)
        for n in notes:
            y = render(model, [n], z, seconds=MEASURE[1])
            seg = y[int(MEASURE[0] * SR):int(MEASURE[1] * SR)]
            ref = float(midi_to_hz(n))
            ok = bool(np.any(seg))
            c = f0mod.cents(pyin_f0(seg), ref) if ok else float("nan")
            errs.append(c)
            errs_ssh.append(f0mod.cents(f0mod.estimate_f0(seg, SR), ref) if ok else float("nan"))
            if not abs(c) <= 10.0:
                worst.append((int(n), round(float(c), 1)))
    w10, w5, med = _share(errs)
    s10, s5, _ = _share(errs_ssh)
    return {"notes": f"{notes[0]}..{notes[-1]} step {note_step} ({len(notes)} notes)",
            "latents": n_latents, "renders": len(errs), "estimator": "pYIN + harmonic peak refinement",
            "within_10_cents": w10, "within_5_cents": w5, "median_abs_cents": med,
            "subharmonic_summation_estimator": {"within_10_cents": s10, "within_5_cents": s5},
            "misses": worst[:20]}


def _partial_f0(X, df, f_expect, others, n_harm=8):
    """f0 of one chord note from its partials in a long spectrum ``X`` (bin ``df`` Hz),
    leaving out partials within 1.5 % of another note's partial."""
    est, wts = [], []
    for h in range(1, n_harm + 1):
        f = h * f_expect
        if f > 0.45 * SR:
            break
        if any(abs(f - k * o) < 0.015 * f for o in others for k in range(1, 3 * n_harm)):
            continue
        fk, m = f0mod._peak_near(X, df, f, 0.01)
        est.append(fk / h)
        wts.append(m)
    if not est:
        return float("nan")
    est, wts = np.array(est), np.array(wts)
    keep = wts >= 0.05 * wts.max()
    return float(np.median(est[keep]))


def chords(model, n_latents: int, seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    shapes = [[48, 52, 55, 59], [60, 64, 67, 71], [41, 45, 48, 52], [67, 71, 74, 77],
              [38, 42, 45, 48], [72, 76, 79, 83]]
    worst = 0.0
    all_ok = 0
    total = 0
    for _ in range(n_latents):
        z = rng.uniform(model.latent_min, model.latent_max)
        for ch in shapes:
            y = render(model, ch, z, seconds=0.8)
            seg = y[int(0.3 * SR):]
            X, df = f0mod._spectrum(seg, SR)
            ok = True
            for n in ch:
                others = [float(midi_to_hz(o)) for o in ch if o != n]
                f = _partial_f0(X, df, float(midi_to_hz(n)), others)
                c = abs(f0mod.cents(f, float(midi_to_hz(n)))) if np.isfinite(f) else np.inf
                worst = max(worst, c)
                ok &= c <= 10.0
            all_ok += ok
            total += 1
    return {"chords": total, "all_notes_within_10_cents": all_ok / total, "worst_cents": worst}


def knobs(model, note: float = 60.0) -> dict:
    z0 = np.asarray(model.latent_default, np.float32)
    f0 = float(midi_to_hz(note))
    freqs = np.arange(model.n_bins) * model.sample_rate / model.n_fft
    rows = []
    for i in range(model.latent_dim):
        zs = np.tile(z0, (2, 1))
        zs[0, i], zs[1, i] = model.latent_min[i], model.latent_max[i]
        if model.conditioned:
            m = model.decode_pitched(zs, np.full((2, 1), note, np.float32)).astype(np.float64)
        else:
            m = model.decode(zs).astype(np.float64)
        db = 20 * np.log10(np.maximum(m, 1e-12))
        db = np.maximum(db - db.max(axis=1, keepdims=True), -60.0)
        lsd = float(np.sqrt(np.mean((db[0] - db[1]) ** 2)))
        cen = (m ** 2 @ freqs) / np.maximum((m ** 2).sum(axis=1), 1e-30) / f0
        rows.append({"neuron": i, "lsd_db": round(lsd, 2),
                     "centroid_over_f0": [round(float(c), 2) for c in cen],
                     "brightness_ratio": round(float(cen.max() / max(cen.min(), 1e-9)), 2)})
    lsd = [r["lsd_db"] for r in rows]
    return {"note": note, "per_neuron": rows, "mean_lsd_db": float(np.mean(lsd)),
            "neurons_brightness_ge_1_5": int(sum(r["brightness_ratio"] >= 1.5 for r in rows))}


def corpus_spread(corpus, note: float = 60.0, share: float = 0.01) -> dict:
    """What the corpus itself spans at ``note``, in the knobs' own measure: the log-spectral
    distance (same floor) between its dullest and its brightest ``share`` of voiced frames
    (spectral centroid / f0), every pair of the two groups, and between random pairs."""
    sel = np.flatnonzero(corpus.voiced & (np.abs(corpus.pitch - note) < 0.5))
    m = np.asarray(corpus.frames[sel], np.float64)
    db = 20 * np.log10(np.maximum(m, 1e-12))
    db = np.maximum(db - db.max(axis=1, keepdims=True), -60.0)
    freqs = np.arange(m.shape[1]) * corpus.stft.sample_rate / corpus.stft.n_fft
    cen = (m ** 2 @ freqs) / np.maximum((m ** 2).sum(axis=1), 1e-30) / float(midi_to_hz(note))
    order = np.argsort(cen)
    k = max(1, int(share * len(order)))
    lo, hi = db[order[:k]], db[order[-k:]]
    ends = np.sqrt(np.mean((lo[:, None, :] - hi[None, :, :]) ** 2, axis=2))
    rng = np.random.default_rng(0)
    i, j = rng.integers(0, len(db), 3000), rng.integers(0, len(db), 3000)
    pairs = np.sqrt(np.mean((db[i] - db[j]) ** 2, axis=1))
    return {"note": note, "frames": int(len(sel)),
            "brightness_p1_p99": [round(float(cen[order[k]]), 2), round(float(cen[order[-k]]), 2)],
            "lsd_dullest_vs_brightest_median_db": round(float(np.median(ends)), 2),
            "lsd_dullest_vs_brightest_max_db": round(float(ends.max()), 2),
            "lsd_random_pairs_median_db": round(float(np.median(pairs)), 2),
            "lsd_random_pairs_p99_db": round(float(np.percentile(pairs, 99)), 2)}


def _encoder(model_dir: Path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(str(model_dir / "encoder.onnx"), so,
                                providers=["CPUExecutionProvider"])


def _decode_all(model, z, pitch=None, chunk=2048):
    out = np.empty((len(z), model.n_bins), np.float32)
    for i in range(0, len(z), chunk):
        zz = z[i:i + chunk].astype(np.float32)
        if model.conditioned:
            out[i:i + chunk] = model.decode_pitched(zz, pitch[i:i + chunk, None].astype(np.float32))
        else:
            out[i:i + chunk] = model.decode(zz)
    return out


def _encode_all(sess, x, chunk=2048):
    return np.concatenate([sess.run(None, {"magnitude": np.ascontiguousarray(x[i:i + chunk])})[0]
                           for i in range(0, len(x), chunk)])


def sc_mse(x, y) -> float:
    return float(((x.astype(np.float64) - y) ** 2).sum() / (x.astype(np.float64) ** 2).sum())


def pitch_r2(z, pitch) -> float:
    """How much of the pitch a latent carries: R^2 of predicting the pitch from z with
    a quadratic least-squares fit (z, z^2 and pairwise products), half the frames fit,
    the other half scored. 1: z encodes the note; 0: z says nothing about it."""
    z = np.asarray(z, np.float64)
    z = (z - z.mean(0)) / np.maximum(z.std(0), 1e-9)
    iu = np.triu_indices(z.shape[1])
    feats = np.concatenate([np.ones((len(z), 1)), z, (z[:, :, None] * z[:, None, :])[:, iu[0], iu[1]]],
                           axis=1)
    half = len(z) // 2
    w, *_ = np.linalg.lstsq(feats[:half], pitch[:half], rcond=None)
    resid = pitch[half:] - feats[half:] @ w
    return float(1.0 - resid.var() / pitch[half:].var())


def reconstruction(model, model_dir, old, old_dir, corpus, max_frames: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    test = corpus.split_index("test")
    test = test[corpus.voiced[test]]
    if len(test) > max_frames:
        test = np.sort(rng.choice(test, max_frames, replace=False))
    x = np.ascontiguousarray(corpus.frames[test])
    p = corpus.pitch[test]
    res = {"test_programs": corpus.meta["split"]["test"], "frames": int(len(x))}
    zc = _encode_all(_encoder(model_dir), x)
    y = _decode_all(model, zc, p)
    res["conditioned_sc_mse"] = sc_mse(x, y)
    res["pitch_from_z_r2"] = pitch_r2(zc, p)
    # every test frame (voiced or not), with its label pitch
    alli = corpus.split_index("test")
    if len(alli) > max_frames:
        alli = np.sort(rng.choice(alli, max_frames, replace=False))
    xa = np.ascontiguousarray(corpus.frames[alli])
    ya = _decode_all(model, _encode_all(_encoder(model_dir), xa), corpus.pitch[alli])
    res["conditioned_sc_mse_all_frames"] = sc_mse(xa, ya)
    # PCA-8 baseline, fit on training frames
    tr = corpus.split_index("train")
    tr = np.sort(rng.choice(tr, min(40000, len(tr)), replace=False))
    xt = np.asarray(corpus.frames[tr], np.float64)
    mu = xt.mean(axis=0)
    _, _, vt = np.linalg.svd(xt - mu, full_matrices=False)
    basis = vt[:8]
    yp = np.maximum((x - mu) @ basis.T @ basis + mu, 0.0)
    res["pca8_sc_mse"] = sc_mse(x, yp)
    if old is not None:
        zo = _encode_all(_encoder(old_dir), x)
        yo = _decode_all(old, zo)
        res["old_model_sc_mse"] = sc_mse(x, yo)
        res["old_pitch_from_z_r2"] = pitch_r2(zo, p)
    return res


def register(model, model_dir, old, old_dir, corpus, notes=(36, 84)) -> dict:
    from daemon.core.pitch import PitchStage

    enc = _encoder(model_dir)
    enc_old = _encoder(old_dir)
    res = {}
    for note in notes:
        errs_c, errs_o, ref_e = 0.0, 0.0, 0.0
        n_frames = 0
        for prog in corpus.meta["split"]["test"]:
            idx = np.nonzero(corpus.patch == prog)[0]
            lab = np.rint(corpus.pitch[idx])
            at = idx[(lab == note) & corpus.voiced[idx]]
            c4 = idx[(lab == 60) & corpus.voiced[idx]]
            if len(at) < 4 or len(c4) < 4:
                continue
            k = min(len(at), len(c4))
            at, c4 = at[:k], c4[:k]  # aligned in time from each note's onset
            x = np.ascontiguousarray(corpus.frames[at])
            yc = _decode_all(model, _encode_all(enc, x), corpus.pitch[at])
            xo = np.ascontiguousarray(corpus.frames[c4])
            yo = _decode_all(old, _encode_all(enc_old, xo)).astype(np.float64)
            st = PitchStage(old.n_bins, 1, bin_ratio=1.0, n_fft=old.n_fft, sr_out=old.sample_rate)
            moved = np.empty_like(yo)
            for j in range(k):
                peaks = st.analyse(yo[j])
                ratio = np.array([float(midi_to_hz(note) / midi_to_hz(60))])
                moved[j] = st.process(yo[j], peaks, ratio, np.zeros(1), 1)[0]
            moved /= np.maximum(moved.max(axis=1, keepdims=True), 1e-12)
            xx = x.astype(np.float64)
            errs_c += ((xx - yc) ** 2).sum()
            errs_o += ((xx - moved) ** 2).sum()
            ref_e += (xx ** 2).sum()
            n_frames += k
        if ref_e == 0:
            continue
        sc_c = 10 * np.log10(errs_c / ref_e)
        sc_o = 10 * np.log10(errs_o / ref_e)
        res[f"note_{note}"] = {"frames": n_frames, "conditioned_sc_db": round(float(sc_c), 2),
                               "old_c4_transposed_sc_db": round(float(sc_o), 2),
                               "advantage_db": round(float(sc_o - sc_c), 2)}
    return res


def cost(model, seconds: float) -> dict:
    from benchmarks.engine_speed import engine_rtf, hop_times

    rtf64, cpu64, active = engine_rtf(model, 64, seconds, 3)
    t8, c8 = hop_times(model, 8, seconds)
    hop_ms = 1000.0 * model.hop_length / SR
    return {"rtf_64_voices_wall": rtf64, "rtf_64_voices_cpu": cpu64, "active_voices": active,
            "p99_hop_ms_8_voices_wall": float(np.percentile(t8, 99)),
            "p99_hop_ms_8_voices_cpu": float(np.percentile(c8, 99)),
            "p99_pct_of_hop_cpu": float(100 * np.percentile(c8, 99) / hop_ms),
            "hop_ms": hop_ms}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(REPO / "models" / "default"))
    ap.add_argument("--old", default=str(REPO / "models" / "one-octave"))
    ap.add_argument("--corpus", default=str(REPO / "cache" / "fluidr3-five-octave"))
    ap.add_argument("--latents", type=int, default=50)
    ap.add_argument("--note-step", type=int, default=3)
    ap.add_argument("--chord-latents", type=int, default=10)
    ap.add_argument("--max-frames", type=int, default=20000)
    ap.add_argument("--seconds", type=float, default=10.0, help="audio per cost measurement")
    ap.add_argument("--skip", default="", help="comma list of parts to skip: "
                    "tune,chords,knobs,recon,register,cost")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args(argv)
    from daemon.core.model import DecoderModel

    skip = set(filter(None, args.skip.split(",")))
    model_dir = Path(args.model)
    model = DecoderModel(model_dir)
    old = DecoderModel(args.old) if Path(args.old).is_dir() else None
    out = {"model": str(model_dir), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    t0 = time.time()
    if "tune" not in skip:
        out["in_tune"] = in_tune(model, args.latents, args.note_step)
        print("in tune:", json.dumps(out["in_tune"]), flush=True)
    if "chords" not in skip:
        out["chords"] = chords(model, args.chord_latents)
        print("chords:", json.dumps(out["chords"]), flush=True)
    if "knobs" not in skip:
        out["knobs"] = knobs(model)
        print("knobs:", json.dumps(out["knobs"]), flush=True)
    corpus = None
    if Path(args.corpus).is_dir() and not {"knobs", "recon", "register"} <= skip:
        from training.corpus import load_corpus

        corpus = load_corpus(args.corpus)
    if corpus is not None and "knobs" not in skip:
        out["corpus_spread"] = corpus_spread(corpus)
        print("corpus spread:", json.dumps(out["corpus_spread"]), flush=True)
    if corpus is not None and "recon" not in skip:
        out["reconstruction"] = reconstruction(model, model_dir, old, Path(args.old), corpus,
                                               args.max_frames)
        print("reconstruction:", json.dumps(out["reconstruction"]), flush=True)
    if corpus is not None and old is not None and "register" not in skip:
        out["register"] = register(model, model_dir, old, Path(args.old), corpus)
        print("register:", json.dumps(out["register"]), flush=True)
    if "cost" not in skip:
        out["cost"] = cost(model, args.seconds)
        print("cost:", json.dumps(out["cost"]), flush=True)
    out["seconds"] = round(time.time() - t0, 1)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
