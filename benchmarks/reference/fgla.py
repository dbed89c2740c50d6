"""Fast Griffin–Lim (Perraudin, Balazs, Søndergaard, "A fast Griffin-Lim algorithm",
WASPAA 2013): Griffin–Lim's alternating projections with an inertial (Nesterov-like)
step of weight α on the consistent estimate.

    c_n      = P_C1(P_C2(t_{n-1}))          (impose magnitude, then consistency)
    t_n      = c_n + α (c_n − c_{n-1})

Initial phase: zero (the usual choice; ``init='random'`` for a seeded uniform phase).
"""

from __future__ import annotations

import numpy as np

from benchmarks import signals


def fgla(S: np.ndarray, *, n_fft: int = signals.N_FFT, hop: int = signals.HOP,
         n_iter: int = 100, alpha: float = 0.99, init: str = "zero",
         seed: int = 0) -> np.ndarray:
    """Waveform from magnitude ``S`` [frames, bins] by ``n_iter`` FGLA iterations."""
    if init == "zero":
        c = S.astype(np.complex128)
    elif init == "random":
        rng = np.random.default_rng(seed)
        c = S * np.exp(1j * rng.uniform(-np.pi, np.pi, S.shape))
    else:
        raise ValueError(f"init={init!r}: use 'zero' or 'random'")
    t = c.copy()
    c_prev = c.copy()
    n_frames = S.shape[0]
    for _ in range(n_iter):
        # Impose the target magnitude, keep the phase.
        mag = np.abs(t)
        proj = S * np.where(mag > 0, t / np.where(mag > 0, mag, 1.0), 1.0)
        # Project onto consistent STFTs.
        c = signals.stft(signals.istft(proj, n_fft=n_fft, hop=hop), n_fft=n_fft, hop=hop)
        c = c[:n_frames]
        t = c + alpha * (c - c_prev)
        c_prev = c
    mag = np.abs(c)
    final = S * np.where(mag > 0, c / np.where(mag > 0, mag, 1.0), 1.0)
    return signals.istft(final, n_fft=n_fft, hop=hop)
