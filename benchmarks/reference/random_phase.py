"""Uniform random phase (seeded): the floor every method must beat."""

from __future__ import annotations

import numpy as np

from benchmarks import signals


def random_phase(S: np.ndarray, *, n_fft: int = signals.N_FFT, hop: int = signals.HOP,
                 seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    phase = rng.uniform(-np.pi, np.pi, S.shape)
    return signals.istft(S * np.exp(1j * phase), n_fft=n_fft, hop=hop)
