"""The refactored hop path against its earlier formulation, bit for bit."""

from __future__ import annotations

import numpy as np

from daemon.core.dsp import OverlapAdd
from daemon.core.phase import RTPGHI


def _frames(n_frames, n_voices, n_bins, seed=0):
    rng = np.random.default_rng(seed)
    k = np.arange(n_bins)
    out = np.zeros((n_frames, n_voices, n_bins))
    for t in range(n_frames):
        for v in range(n_voices):
            f0 = 10.0 + 7.0 * v + 0.05 * t
            for h in range(1, 6):
                out[t, v] += np.exp(-0.5 * ((k - h * f0) / 1.5) ** 2) / h
        out[t] += 1e-3 * rng.random((n_voices, n_bins))
    return out


def test_write_frame_equals_magnitude_times_exp_of_the_phase():
    """write_frame == the float32 cos/sin formulation the engine and reconstruct had."""
    n_fft, hop, V = 512, 128, 3
    B = n_fft // 2 + 1
    a = RTPGHI(n_fft, hop, V, 0, seed=1)
    b = RTPGHI(n_fft, hop, V, 0, seed=1)
    sign = OverlapAdd(n_fft, hop, V).sign.astype(np.float32)
    spec = np.zeros((V, B), np.complex64)
    gains = np.array([0.5, 1.25, 3.0])
    for t, frame in enumerate(_frames(12, V, B)):
        rows = slice(0, V)
        got = a.execute_frame(frame, spec, 0.7 if t % 2 else gains, rows=rows)
        ph = b.execute(frame, V)
        m = np.zeros((V, B), np.float32)
        if t % 2:
            np.multiply(b.out_mag[rows], 0.7, out=m, casting="same_kind")
        else:
            np.multiply(b.out_mag[rows], gains[:, None], out=m, casting="same_kind")
        m *= sign
        p32 = ph.astype(np.float32)
        ref = np.zeros((V, B), np.complex64)
        ref.real = np.cos(p32) * m
        ref.imag = np.sin(p32) * m
        assert np.array_equal(got.view(np.float32), ref.view(np.float32))
        # and it is magnitude * exp(i phase), up to float32 rounding
        full = (b.out_mag[rows] * np.where(np.arange(B) % 2, -1.0, 1.0)
                * (0.7 if t % 2 else gains[:, None]) * np.exp(1j * ph))
        assert np.allclose(got, full, rtol=1e-5, atol=1e-6 * np.abs(full).max())


def test_frames_full_of_ties_give_finite_wrapped_phase():
    """Flat and partly silent frames (every bin of a segment ties as its anchor)."""
    n_fft, hop = 256, 64
    B = n_fft // 2 + 1
    plan = RTPGHI(n_fft, hop, 2, 0, seed=0)
    flat = np.ones((2, B))
    flat[1, 40:] = 0.0
    for _ in range(3):
        ph = plan.execute(flat)
        assert np.all(np.isfinite(ph)) and np.all(np.abs(ph) <= np.pi + 1e-12)
