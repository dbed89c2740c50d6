"""Phase gradients estimated from the log-magnitude, for a Gaussian-like window.

For a Gaussian window exp(-π t²/γ) (t in samples) and an STFT whose phase is measured
from the window centre, with s = log|V|, x the frame position (samples) and ω the
frequency (rad/sample):

    ∂φ/∂x = ω + (2π/γ) ∂s/∂ω        (instantaneous frequency)
    ∂φ/∂ω = −(γ/2π) ∂s/∂x           (minus the local group delay)

(check: a click at t0 gives s = −π(x−t0)²/γ and φ = ω(x−t0); a sinusoid at ω0 gives
s = −γ(ω−ω0)²/4π and φ = ω0·x). On the discrete grid (bin m: ω = 2πm/L; frame n:
x = n·a) this is, per hop and per bin:

    Δ_time φ(n, m) = a·(2πm/L) + (a·L/γ)·∂s/∂m
    Δ_freq φ(n, m) = −(γ/(a·L))·∂s/∂n

A periodic Hann window of length L is matched by γ = 0.25645·L².
"""

from __future__ import annotations

import numpy as np

HANN_GAMMA = 0.25645
LOG_FLOOR = 1e-10  # relative to the array maximum; keeps exact zeros finite


def log_magnitude(S: np.ndarray) -> np.ndarray:
    peak = float(np.max(S)) if S.size else 0.0
    floor = max(peak, 1e-30) * LOG_FLOOR
    return np.log(np.maximum(S, floor))


def phase_gradients(S: np.ndarray, n_fft: int, hop: int, *, time_diff: str = "centred",
                    gamma: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-hop time advance and per-bin frequency advance of the phase.

    Parameters
    ----------
    S : [frames, bins] magnitude.
    time_diff : 'centred' (frames n-1, n+1; offline) or 'backward' (n, n-1; causal).
    gamma : window constant γ in samples² (default Hann 0.25645·L²).

    Returns
    -------
    dphi_t : [frames, bins] phase advance from frame n-1 to n evaluated at frame n (rad/hop).
    dphi_f : [frames, bins] phase advance from bin m-1 to m evaluated at bin m (rad/bin).
    """
    L = n_fft
    g = HANN_GAMMA * L * L if gamma is None else gamma
    s = log_magnitude(S)
    ds_dm = np.gradient(s, axis=1)  # centred in frequency, one-sided at the ends
    if s.shape[0] < 2:
        ds_dn = np.zeros_like(s)
    elif time_diff == "centred":
        ds_dn = np.gradient(s, axis=0)
    elif time_diff == "backward":
        ds_dn = np.empty_like(s)
        ds_dn[1:] = s[1:] - s[:-1]
        ds_dn[0] = ds_dn[1]
    else:
        raise ValueError(f"time_diff={time_diff!r}: use 'centred' or 'backward'")
    m = np.arange(S.shape[1])
    dphi_t = hop * 2.0 * np.pi * m / L + (hop * L / g) * ds_dm
    dphi_f = -(g / (hop * L)) * ds_dn
    return dphi_t, dphi_f
