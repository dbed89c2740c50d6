"""Pitch labels for corpus frames: MIDI note (float) and a voiced flag per frame.

Scored sources (SoundFont scales, the synthetic corpus) know which note each frame
belongs to; the sounding pitch is then measured, because a SoundFont sample may be
tuned a few cents away from its key and a harmonic decoder needs the partials where
they really are (5 cents at the 20th harmonic of C4 is more than a bin at 4096/44.1k).

- ``score_notes``: the scored note of every STFT frame, and whether the frame's
  window lies inside one note's time slot (no onset of the next note inside it).
- ``refine_scored``: per (patch, note), the fundamental that best explains the mean
  spectrum of that note's frames (harmonic sum over +-60 cents of the scored note, 1-cent
  grid, parabolic refinement); per frame, voiced when the energy near the first
  harmonics of that fundamental clearly exceeds what a flat spectrum would put there.
- ``track_folder``: recordings have no score; librosa's pYIN tracks f0 per frame
  (the ``train`` extra installs librosa); unvoiced frames are flagged, their pitch is
  the nearest voiced frame's (or 60 when none).

Unvoiced frames stay in the corpus (an unconditioned model uses them); the conditioned
trainer leaves them out (it has no pitch to give the decoder for them).
"""

from __future__ import annotations

import numpy as np

from training.errors import CorpusError


def midi_to_hz(p):
    return 440.0 * 2.0 ** ((np.asarray(p, dtype=np.float64) - 69.0) / 12.0)


def hz_to_midi(f):
    return 69.0 + 12.0 * np.log2(np.asarray(f, dtype=np.float64) / 440.0)


def score_notes(n_frames: int, *, notes: list[int], note_s: float, tail_s: float,
                sample_rate: int, hop_length: int, n_fft: int) -> tuple[np.ndarray, np.ndarray]:
    """Scored note index per frame (int [n_frames]) and 'window inside one slot' flags.

    Frame ``t`` is centred on sample ``t * hop_length``; note ``i`` owns the slot
    ``[i * period, (i + 1) * period)`` with ``period = (note_s + tail_s) * sample_rate``.
    """
    period = (note_s + tail_s) * sample_rate
    centre = np.arange(n_frames) * float(hop_length)
    idx = np.clip(np.floor(centre / period).astype(np.int64), 0, len(notes) - 1)
    half = n_fft / 2.0
    start = idx * period
    clean = (centre - half >= start - 1e-9) & (centre + half <= start + period + 1e-9)
    # the window of frame 0 reaches into the padding before the first onset: still clean
    clean |= (centre - half < 0) & (centre + half <= period)
    return idx, clean


def _harmonic_score(spec: np.ndarray, f0_bins: np.ndarray, n_harm: int) -> np.ndarray:
    """Sum of the spectrum, linearly interpolated, at harmonics of each candidate f0."""
    n_bins = spec.shape[-1]
    h = np.arange(1, n_harm + 1, dtype=np.float64)
    pos = f0_bins[:, None] * h[None, :]
    ok = pos < n_bins - 1
    pos = np.where(ok, pos, 0.0)
    i0 = np.floor(pos).astype(np.int64)
    frac = pos - i0
    val = spec[i0] * (1.0 - frac) + spec[np.minimum(i0 + 1, n_bins - 1)] * frac
    return (np.where(ok, val, 0.0) / h[None, :] ** 0.5).sum(axis=1)


def fit_f0(spec: np.ndarray, nominal_midi: float, bin_hz: float, *, search_cents: float = 60.0,
           n_harm: int = 16) -> float:
    """The fundamental (MIDI float) near ``nominal_midi`` that best explains ``spec``.

    A coarse harmonic-sum search over +-``search_cents`` finds the neighbourhood; then
    each of the first ``n_harm`` partials within 40 dB of the strongest is located by a
    parabola through the log magnitude, and the fundamental is the amplitude-weighted
    median of (partial position / harmonic number), in cents.
    """
    cents = np.arange(-search_cents, search_cents + 1.0, 2.0)
    f0 = midi_to_hz(nominal_midi + cents / 100.0) / bin_hz
    s = _harmonic_score(np.sqrt(np.maximum(spec, 0.0)), f0, n_harm)
    coarse = float(f0[int(np.argmax(s))])
    n_bins = len(spec)
    logm = np.log(np.maximum(spec, 1e-12))
    est, wts = [], []
    for h in range(1, n_harm + 1):
        c = h * coarse
        lo, hi = int(np.floor(c - 1.5)), int(np.ceil(c + 1.5))
        if lo < 1 or hi >= n_bins - 1:
            break
        k = lo + int(np.argmax(spec[lo:hi + 1]))
        if k <= 0 or k >= n_bins - 1:
            continue
        a, b, d = logm[k - 1], logm[k], logm[k + 1]
        den = a - 2.0 * b + d
        off = 0.5 * (a - d) / den if den < 0 else 0.0
        est.append(1200.0 * np.log2((k + float(np.clip(off, -0.5, 0.5))) / (h * coarse)))
        wts.append(spec[k])
    est, wts = np.array(est), np.array(wts)
    if not len(est) or not np.all(np.isfinite(wts)) or wts.max() <= 0:
        return float(hz_to_midi(coarse * bin_hz))
    keep = wts >= wts.max() * 0.01
    est, wts = est[keep], wts[keep]
    order = np.argsort(est)
    cum = np.cumsum(wts[order])
    med = float(est[order][np.searchsorted(cum, 0.5 * cum[-1])])
    return float(hz_to_midi(coarse * bin_hz) + med / 100.0)


def harmonicity(frames: np.ndarray, f0_midi: np.ndarray, bin_hz: float, *, n_harm: int = 40,
                width_bins: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Share of each frame's energy within ``width_bins`` of its first harmonics, and the
    share of the bins those windows cover (what a flat spectrum would score)."""
    n_bins = frames.shape[1]
    bins = np.arange(n_bins, dtype=np.float64)
    f0b = midi_to_hz(f0_midi) / bin_hz
    out = np.empty(len(frames))
    cover = np.empty(len(frames))
    for i, (fr, f) in enumerate(zip(frames, f0b)):
        ratio = bins / f
        h = np.rint(ratio)
        near = (h >= 1) & (h <= n_harm) & (np.abs(ratio - h) * f <= width_bins)
        e = fr.astype(np.float64) ** 2
        out[i] = e[near].sum() / max(e.sum(), 1e-30)
        top = min(n_bins, int((n_harm + 0.5) * f) + 1)
        cover[i] = near.sum() / max(top, 1)
    return out, cover


def voiced_rule(harm: np.ndarray, cover: np.ndarray) -> np.ndarray:
    """Voiced when the harmonic share beats a flat spectrum's by a clear margin."""
    return harm >= np.maximum(0.5, cover + 0.3)


def refine_scored(frames: np.ndarray, note_idx: np.ndarray, clean: np.ndarray,
                  notes: list[int], bin_hz: float) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Measured pitch (MIDI float) and voiced flag per frame of one scored patch.

    ``frames`` are the patch's kept, normalised frames; ``note_idx``/``clean`` their
    scored note and slot flags. Returns (pitch float32, voiced bool, per-note info).
    """
    pitch = np.asarray(notes, dtype=np.float64)[note_idx]
    voiced = np.zeros(len(frames), dtype=bool)
    info = []
    for i, m in enumerate(notes):
        sel = np.nonzero((note_idx == i) & clean)[0]
        if len(sel) == 0:
            continue
        mean = frames[sel].astype(np.float64).mean(axis=0)
        f = fit_f0(mean, float(m), bin_hz)
        h, c = harmonicity(mean[None, :], np.array([f]), bin_hz)
        note_voiced = bool(voiced_rule(h, c)[0])
        info.append({"note": int(m), "measured": round(f, 3), "harmonicity": round(float(h[0]), 3),
                     "voiced": note_voiced})
        if not note_voiced:
            continue
        pitch[note_idx == i] = f
        hf, cf = harmonicity(frames[sel], np.full(len(sel), f), bin_hz)
        voiced[sel] = voiced_rule(hf, cf)
    return pitch.astype(np.float32), voiced, info


def track_folder(audio: np.ndarray, *, sample_rate: int, n_fft: int, hop_length: int,
                 n_frames: int, fmin: float = 32.7, fmax: float = 2093.0
                 ) -> tuple[np.ndarray, np.ndarray]:
    """pYIN f0 per STFT frame of a recording: (pitch MIDI float32, voiced bool)."""
    try:
        import librosa
    except ImportError:
        raise CorpusError("pitch labels for recordings need librosa (pip install "
                          "'canne-live[train]')") from None
    y = np.asarray(audio, dtype=np.float32)
    fmin = max(fmin, 2.0 * sample_rate / n_fft)  # two periods must fit the frame
    fmax = max(fmax, 2.0 * fmin)
    if len(y) < n_fft:
        y = np.pad(y, (0, n_fft - len(y)))
    f0, vflag, _ = librosa.pyin(y, fmin=fmin, fmax=fmax, sr=sample_rate, frame_length=n_fft,
                                hop_length=hop_length, center=True)
    f0 = np.resize(f0, n_frames) if len(f0) != n_frames else f0
    vflag = np.resize(vflag, n_frames) if len(vflag) != n_frames else vflag
    voiced = np.asarray(vflag, dtype=bool) & np.isfinite(f0)
    pitch = np.full(n_frames, 60.0)
    if voiced.any():
        vi = np.nonzero(voiced)[0]
        nearest = vi[np.clip(np.searchsorted(vi, np.arange(n_frames)), 0, len(vi) - 1)]
        pitch = hz_to_midi(f0[nearest])
        pitch[voiced] = hz_to_midi(f0[voiced])
    return pitch.astype(np.float32), voiced
