"""A fundamental-frequency estimator for steady tones, for the pitch benchmark.

Long zero-padded FFT of a Hann-windowed segment; a coarse f0 by weighted subharmonic
summation over a 5-cent grid (with an octave check on the odd harmonics); then each
of the first harmonics' peaks is located by parabolic interpolation of the
log-magnitude and f0 is the magnitude-weighted mean of peak_k / k over the harmonics
within 40 dB of the strongest. :func:`self_test`
checks it on pure and harmonic tones (with and without a fundamental).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import maximum_filter1d


def _spectrum(y: np.ndarray, sr: float, pad: int = 8) -> tuple[np.ndarray, float]:
    n = y.size
    w = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)
    nfft = 1 << int(np.ceil(np.log2(n * pad)))
    X = np.abs(np.fft.rfft((y - np.mean(y)) * w, nfft))
    return X, sr / nfft


def _peak_near(X: np.ndarray, df: float, f: float, rel: float,
               min_hz: float = 0.0) -> tuple[float, float]:
    """Interpolated (frequency, magnitude) of the largest peak within
    f ± max(rel·f, min_hz)."""
    half = max(rel * f, min_hz)
    lo = max(1, int((f - half) / df))
    hi = min(X.size - 2, int(np.ceil((f + half) / df)))
    if hi <= lo:
        return f, 0.0
    k = lo + int(np.argmax(X[lo:hi + 1]))
    a, b, c = np.log(X[k - 1:k + 2] + 1e-300)
    den = a - 2 * b + c
    p = 0.5 * (a - c) / den if den < 0 else 0.0
    p = float(np.clip(p, -0.5, 0.5))
    return (k + p) * df, float(np.exp(b - 0.25 * (a - c) * p))


def estimate_f0(y: np.ndarray, sr: float, *, fmin: float = 25.0, fmax: float = 4500.0,
                n_harm: int = 8) -> float:
    """f0 (Hz) of a steady tone ``y`` sampled at ``sr``; nan for silence."""
    y = np.asarray(y, dtype=np.float64)
    if not np.any(y):
        return float("nan")
    X, df = _spectrum(y, sr)
    nyq = 0.5 * sr
    # Subharmonic summation on a log-frequency axis (1-cent cells): the spectrum is
    # first max-filtered over ± the window's main-lobe half width, resampled to cells
    # (max over the bins of each cell), max-filtered over ±3 cents; candidates on a
    # 5-cent grid then read harmonic k exactly 1200·log2(k) cells up
    # (sqrt-compressed magnitudes, weights 0.84^(k-1)).
    lobe_bins = int(np.ceil(2.0 * sr / y.size / df))
    Xm = maximum_filter1d(np.sqrt(X), size=2 * lobe_bins + 1)
    top_hz = 0.95 * nyq
    n_cells = int(1200.0 * np.log2(top_hz / fmin))
    edges = fmin * 2.0 ** (np.arange(n_cells) / 1200.0)
    starts = np.minimum((edges / df).astype(int), X.size - 1)
    Xlog = maximum_filter1d(np.maximum.reduceat(Xm, starts), size=7)
    cand_cells = np.arange(0, int(1200.0 * np.log2(fmax / fmin)), 5)
    scores = np.zeros(cand_cells.size)
    for k in range(1, n_harm + 1):
        cells = cand_cells + int(round(1200.0 * np.log2(k)))
        valid = cells < n_cells
        scores[valid] += Xlog[cells[valid]] * 0.84 ** (k - 1)
    f = float(fmin * 2.0 ** (cand_cells[int(np.argmax(scores))] / 1200.0))

    def partial(freq: float, spacing: float) -> float:
        """Peak magnitude near ``freq`` if it stands 10 dB over the local floor (the median
        within half a partial spacing), else 0: noise between partials is not a partial."""
        _, m = _peak_near(X, df, freq, 0.01)
        lo = max(0, int((freq - 0.5 * spacing) / df))
        hi = min(X.size, int((freq + 0.5 * spacing) / df) + 1)
        floor = float(np.median(X[lo:hi])) if hi > lo else 0.0
        return m if m >= 3.16 * floor else 0.0

    # Octave check: if the odd harmonics of f are nearly absent (no partial stands out
    # there), f is an octave low.
    for _ in range(3):
        odd = sum(partial(f * k, f) for k in (1, 3, 5) if f * k < 0.95 * nyq)
        even = sum(_peak_near(X, df, f * k, 0.01)[1] for k in (2, 4, 6) if f * k < 0.95 * nyq)
        if even > 0 and odd < 0.1 * even and 2 * f <= fmax:
            f *= 2.0
        else:
            break
    # Sub-octave check: when upper harmonics dominate, the summation can land on 2·f0.
    # If f/2's odd multiples (f/2, 3f/2, 5f/2) carry real partials, f is an octave high.
    for _ in range(3):
        h = 0.5 * f
        if h < fmin:
            break
        odd = sum(partial(h * k, h) for k in (1, 3, 5) if h * k < 0.95 * nyq)
        even = sum(_peak_near(X, df, h * k, 0.01)[1] for k in (2, 4, 6) if h * k < 0.95 * nyq)
        if even > 0 and odd >= 0.25 * even:
            f = h
        else:
            break
    return _refine(X, df, f, y.size, sr, n_harm)


def _refine(X, df, f, n, sr, n_harm):
    nyq = 0.5 * sr
    # Refine on the harmonics' interpolated peaks.
    # Two passes: the first three harmonics in wide windows, then all of them in
    # narrow windows around k·f. Harmonics weaker than -40 dB of the strongest are
    # left out (noise peaks).
    lobe_hz = 2.0 * sr / n  # Hann main-lobe half width: the coarse f is within it
    for n_k, rel, min_hz in ((3, 0.03, 1.2 * lobe_hz), (n_harm, 0.004, 0.0)):
        peaks = [(k, *_peak_near(X, df, f * k, rel, min_hz)) for k in range(1, n_k + 1)
                 if f * k < 0.95 * nyq]
        top = max(m for _, _, m in peaks)
        den = sum(m for _, _, m in peaks if m >= 0.01 * top)
        if den > 0:
            f = sum(m * fk / k for k, fk, m in peaks if m >= 0.01 * top) / den
    return f


def refine_f0(y: np.ndarray, sr: float, guess: float, n_harm: int = 8) -> float:
    """``guess`` (Hz, e.g. from pYIN, right octave, coarse) refined on the harmonics'
    interpolated peaks, as :func:`estimate_f0` does after its own coarse search."""
    y = np.asarray(y, dtype=np.float64)
    if not np.any(y) or not np.isfinite(guess) or guess <= 0:
        return float("nan")
    X, df = _spectrum(y, sr)
    return _refine(X, df, float(guess), y.size, sr, n_harm)


def cents(f: float, ref: float) -> float:
    return float(1200.0 * np.log2(f / ref))


def self_test(sr: float = 44100.0, seconds: float = 1.0, seed: int = 0) -> float:
    """Max |cents| error over pure tones, harmonic tones and missing-fundamental tones
    at random frequencies 60–2200 Hz (with -60 dB of noise)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    worst = 0.0
    for i in range(24):
        f0 = float(60.0 * 2.0 ** rng.uniform(0.0, np.log2(2200.0 / 60.0)))
        kind = i % 3
        y = np.zeros_like(t)
        first = 2 if kind == 2 else 1
        last = 1 if kind == 0 else 10
        for k in range(first, last + 1):
            if k * f0 < 0.45 * sr:
                y += np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi)) / k
        y += 1e-3 * rng.standard_normal(t.size)
        worst = max(worst, abs(cents(estimate_f0(y, sr), f0)))
    return worst
