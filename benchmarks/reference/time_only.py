"""The 2018 CANNe thesis phase rule: integration along time only.

Each bin's phase is advanced from frame to frame by the trapezoid rule on its
instantaneous frequency (bin centre frequency plus the frequency derivative of the
log-magnitude: the time-direction half of phase-gradient integration). Bins are never
linked to their neighbours in the same frame, so the relative phase of the bins of one
spectral lobe is never set — which is what this baseline is here to show.

Two variants (all bins start at phase 0, as the thesis code did; no noise is
multiplied into the magnitudes):

- ``constants='hann'`` (default, the stronger baseline the targets are checked against):
  γ = 0.25645·L² of the Hann window actually used, log-magnitude floored at 1e-3 of
  the maximum, bin advance 2π·m·a/L.
- ``constants='thesis'``: the constants of the thesis's code as we read it — the
  Gaussian window ratio γ = −(π/4)·L²/ln(0.01) ≈ 0.1705·L² applied to a Hann analysis,
  magnitudes scaled ×50 (of a 0..1 frame) and clipped at 1e-3, bin advance
  π·a·m/(L/2+1).
"""

from __future__ import annotations

import numpy as np

from benchmarks import signals
from .gradients import phase_gradients


def time_only(S: np.ndarray, *, n_fft: int = signals.N_FFT, hop: int = signals.HOP,
              constants: str = "hann") -> np.ndarray:
    """Waveform from magnitude ``S`` [frames, bins] by time-direction integration only."""
    n_bins = S.shape[1]
    m = np.arange(n_bins)
    peak = float(np.max(S)) or 1.0
    if constants == "hann":
        dphi_t, _ = phase_gradients(np.maximum(S, 1e-3 * peak), n_fft, hop)
    elif constants == "thesis":
        gamma = -(np.pi / 4.0) * n_fft * n_fft / np.log(0.01)
        dphi_t, _ = phase_gradients(np.maximum(50.0 * S / peak, 1e-3), n_fft, hop, gamma=gamma)
        dphi_t += np.pi * hop * m / n_bins - 2.0 * np.pi * hop * m / n_fft
    else:
        raise ValueError(f"constants={constants!r}: use 'hann' or 'thesis'")
    phase = np.zeros_like(S)
    for n in range(1, S.shape[0]):
        phase[n] = phase[n - 1] + 0.5 * (dphi_t[n - 1] + dphi_t[n])
    return signals.istft(S * np.exp(1j * phase), n_fft=n_fft, hop=hop)
