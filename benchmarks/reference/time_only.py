"""The 2018 CANNe thesis phase rule: integration along time only.

Each bin's phase is advanced from frame to frame by the trapezoid rule on its
instantaneous frequency (bin centre frequency plus the frequency derivative of the
log-magnitude, eq. 6 of Průša & Holighaus used without the frequency-direction step).
Bins are never linked to their neighbours in the same frame, so the relative phase of
the bins of one spectral lobe drifts — which is what this baseline is here to show.

Implementation choices (see BENCHMARKS.md): all bins start at phase 0 (the thesis code
did); instantaneous frequency uses the Hann γ = 0.25645·L² (the thesis used a Gaussian
window constant with a Hann analysis); log-magnitude floored at 1e-3 of the maximum
as in the thesis; no noise is multiplied into the magnitudes.
"""

from __future__ import annotations

import numpy as np

from benchmarks import signals
from .gradients import phase_gradients


def time_only(S: np.ndarray, *, n_fft: int = signals.N_FFT, hop: int = signals.HOP,
              floor: float = 1e-3) -> np.ndarray:
    """Waveform from magnitude ``S`` [frames, bins] by time-direction integration only."""
    Sc = np.maximum(S, floor * float(np.max(S)))
    dphi_t, _ = phase_gradients(Sc, n_fft, hop)
    phase = np.zeros_like(S)
    for n in range(1, S.shape[0]):
        phase[n] = phase[n - 1] + 0.5 * (dphi_t[n - 1] + dphi_t[n])
    return signals.istft(S * np.exp(1j * phase), n_fft=n_fft, hop=hop)
