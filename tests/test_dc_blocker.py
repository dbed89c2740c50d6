"""The DC blocker's closed-form chunks against the plain recursion, and its response."""

from __future__ import annotations

import numpy as np
import pytest

from daemon.core.dsp import DCBlocker


def _recursion(x: np.ndarray, r: float) -> np.ndarray:
    y = np.empty(len(x))
    x1 = y1 = 0.0
    for i, v in enumerate(x.astype(np.float64)):
        y1 = v - x1 + r * y1
        x1 = v
        y[i] = y1
    return y


@pytest.mark.parametrize("rate", [44100.0, 48000.0, 96000.0])
def test_chunks_of_any_size_match_the_recursion(rate):
    rng = np.random.default_rng(3)
    x = (0.3 * rng.standard_normal(30000) + 0.25).astype(np.float32)
    dc = DCBlocker(rate)
    out = np.empty_like(x)
    i = 0
    for n in [1, 2, 1023, 1024, 1025, 5000, 7, 4096]:  # across the internal 1024-sample chunks
        dc.process(x[i:i + n], out[i:i + n])
        i += n
    dc.process(x[i:], out[i:])
    ref = _recursion(x, dc.r)
    assert np.max(np.abs(out - ref)) < 1e-6  # float32 output of a float64 recursion
    in_place = x.copy()
    DCBlocker(rate).process(in_place, in_place)
    assert np.max(np.abs(in_place - ref)) < 1e-6


def test_removes_dc_and_passes_the_audio_band():
    rate = 48000.0
    t = np.arange(int(2 * rate)) / rate
    dc = DCBlocker(rate)
    y = dc.process(np.full(len(t), 0.5, np.float32), np.empty(len(t), np.float32))
    assert 20 * np.log10(np.abs(y[-4800:]).max() / 0.5) < -60.0  # DC gone after 2 s
    x = np.sin(2 * np.pi * 1000.0 * t).astype(np.float32)
    y = DCBlocker(rate).process(x, np.empty_like(x))
    gain_db = 20 * np.log10(np.std(y[-24000:]) / np.std(x[-24000:]))
    assert abs(gain_db) < 0.05  # 1 kHz passes
