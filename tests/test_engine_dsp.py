"""daemon.core.dsp output stages of the engine: safety limiter and DC blocker, against references."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import freqz, lfilter

from daemon.core.dsp import DCBlocker, SafetyLimiter


def _soft_clip_reference(x: np.ndarray, k: float = 0.5) -> np.ndarray:
    """Identity below the knee, k + (1-k) tanh((|x|-k)/(1-k)) above it, sign kept."""
    y = x.copy()
    over = np.abs(x) > k
    y[over] = np.sign(x[over]) * (k + (1 - k) * np.tanh((np.abs(x[over]) - k) / (1 - k)))
    return y


@pytest.mark.parametrize("scale", [0.1, 0.5, 2.0, 1e6], ids=["-20dBFS", "knee", "+6dBFS", "huge"])
def test_limiter_matches_the_soft_clip_curve_and_never_exceeds_one(scale):
    x = np.random.default_rng(1).normal(size=4096) * scale
    lim = SafetyLimiter()
    y = lim.process(x.copy())
    np.testing.assert_allclose(y, _soft_clip_reference(x), rtol=0, atol=1e-12)
    assert np.max(np.abs(y)) <= 1.0 and lim.nonfinite_blocks == 0


def test_limiter_is_transparent_below_the_knee():
    x = np.random.default_rng(2).uniform(-0.5, 0.5, 1024)
    out = np.empty_like(x)
    SafetyLimiter().process(x, out)
    np.testing.assert_array_equal(out, x)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "minus-inf"])
def test_nonfinite_block_is_silence_then_fades_back_in(bad):
    fade = 2048
    lim = SafetyLimiter(fade_samples=fade)
    x = np.full(1024, 0.25)
    x[100] = bad
    assert np.all(lim.process(x) == 0.0) and lim.nonfinite_blocks == 1
    y = np.concatenate([lim.process(np.full(1024, 0.25)) for _ in range(3)])
    ramp = 0.25 * np.arange(1, fade + 1) / fade
    np.testing.assert_allclose(y[:fade], ramp, rtol=0, atol=1e-15)  # linear fade-in over fade_samples
    np.testing.assert_array_equal(y[fade:], 0.25)


@pytest.mark.parametrize("block", [1, 64, 65, 1024, 8193])
def test_dc_blocker_streaming_equals_offline(block):
    sr = 48000
    x = np.random.default_rng(3).normal(size=20000) + 0.3  # with DC
    ref = lfilter([1.0, -1.0], [1.0, -(1.0 - 2 * np.pi * 20.0 / sr)], x)
    dc = DCBlocker(sr)
    got = np.concatenate([dc.process(x[i:i + block].copy(), np.empty(x[i:i + block].size))
                          for i in range(0, x.size, block)])
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)


def test_dc_blocker_response_in_db():
    """No DC at all, -3 dB near the 20 Hz cut-off, flat (within 0.05 dB) from 200 Hz up."""
    sr = 48000
    dc = DCBlocker(sr)
    y = dc.process(np.full(sr, 0.5), np.empty(sr))
    assert abs(np.mean(y[-4800:])) < 1e-6  # a 0.5 DC offset is gone after 1 s
    # the gain of the blocker itself, measured on steady sines (1 s settles, 1 s measured)
    t = np.arange(2 * sr) / sr
    db = []
    for f in (20.0, 200.0, 1000.0, 10000.0):
        x = np.sin(2 * np.pi * f * t)
        y = DCBlocker(sr).process(x.copy(), np.empty(x.size))
        db.append(20 * np.log10(np.sqrt(np.mean(y[sr:] ** 2)) / np.sqrt(np.mean(x[sr:] ** 2))))
    assert -3.5 < db[0] < -2.5, db
    assert np.all(np.abs(db[1:]) < 0.05), db
