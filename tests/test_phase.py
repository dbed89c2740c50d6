"""daemon.core.phase: streaming RTPGHI quality in dB of spectral convergence, per lookahead."""

from __future__ import annotations

import numpy as np
import pytest

from daemon.core.phase import RTPGHI, reconstruct, stft_magnitude
from harmonic_model import harmonic_amplitudes, rms_modulation

SR = 44100
N_FFT, HOP = 4096, 1024


def _signal(name: str, dur: float = 1.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(dur * SR)) / SR
    if name == "vibrato":
        f = 220.0 * (1 + 0.01 * np.sin(2 * np.pi * 5 * t))
        ph = 2 * np.pi * np.cumsum(f) / SR
        x = sum(np.sin(h * ph) / h for h in range(1, 11))
    elif name == "chord":
        x = sum(np.sin(2 * np.pi * h * f0 * t) / h**1.5 for f0 in (261.63, 329.63, 392.0) for h in range(1, 6))
    elif name == "chirp":
        f = 100.0 * 40.0 ** (t / dur)
        x = np.sin(2 * np.pi * np.cumsum(f) / SR)
    elif name == "noise_bursts":
        x = np.zeros_like(t)
        for start in (0.07, 0.4, 0.73):
            i, n = int(start * dur * SR), int(0.2 * SR)
            seg = x[i:i + n]
            seg[:] = rng.normal(size=seg.size) * np.exp(-np.arange(seg.size) / (0.05 * SR))
    elif name == "pluck":
        period = int(SR / 196)
        buf = rng.uniform(-1, 1, period)
        x = np.zeros_like(t)
        for i in range(t.size):
            x[i] = buf[i % period]
            buf[i % period] = 0.996 * 0.5 * (buf[i % period] + buf[(i + 1) % period])
    else:
        raise ValueError(name)
    return 0.5 * x / np.max(np.abs(x))


def _sc_db(mag: np.ndarray, y: np.ndarray) -> float:
    got = stft_magnitude(y, N_FFT, HOP)[: len(mag)]
    return float(20 * np.log10(np.linalg.norm(got - mag) / np.linalg.norm(mag)))


@pytest.fixture(scope="module")
def mags():
    return {name: stft_magnitude(_signal(name), N_FFT, HOP)
            for name in ("vibrato", "chord", "chirp", "noise_bursts", "pluck")}


@pytest.fixture(scope="module")
def scores(mags):
    out = {}
    for name, mag in mags.items():
        for la in (0, 1):
            out[name, la] = _sc_db(mag, reconstruct(mag, N_FFT, HOP, la))
        rng = np.random.default_rng(0)
        spec = mag * np.exp(2j * np.pi * rng.random(mag.shape))
        frames = np.fft.irfft(spec * np.where(np.arange(mag.shape[1]) % 2, -1, 1), N_FFT, axis=1)
        from daemon.core.dsp import synthesis_window
        y = np.zeros((len(mag) - 1) * HOP + N_FFT)
        for k, fr in enumerate(frames):
            y[k * HOP:k * HOP + N_FFT] += fr * synthesis_window(N_FFT, HOP)
        out[name, "random"] = _sc_db(mag, y)
    return out


# The targets (lookahead 1 <= -21 dB, lookahead 0 <= -15 dB) on the tonal
# signals; transients and chirps are harder for any real-time method: bounded
# looser, and always well below random phase.
BOUNDS = {
    ("vibrato", 0): -15.0, ("vibrato", 1): -21.0,
    ("chord", 0): -15.0, ("chord", 1): -21.0,
    ("chirp", 0): -6.0, ("chirp", 1): -11.0,
    ("noise_bursts", 0): -6.0, ("noise_bursts", 1): -11.0,
    ("pluck", 0): -8.0, ("pluck", 1): -8.0,
}


@pytest.mark.parametrize("name,lookahead", list(BOUNDS), ids=[f"{n}-la{la}" for n, la in BOUNDS])
def test_spectral_convergence_bound(scores, name, lookahead):
    assert scores[name, lookahead] <= BOUNDS[name, lookahead], scores


@pytest.mark.parametrize("lookahead,bound", [(0, -12.0), (1, -15.0)], ids=["la0", "la1"])
def test_mean_spectral_convergence(scores, lookahead, bound):
    mean = np.mean([scores[n, lookahead] for n in ("vibrato", "chord", "chirp", "noise_bursts", "pluck")])
    assert mean <= bound


@pytest.mark.parametrize("name", ["vibrato", "chord", "chirp", "noise_bursts", "pluck"])
def test_far_better_than_random_phase(scores, name):
    assert scores[name, 1] <= scores[name, "random"] - 6.0
    assert scores[name, 0] <= scores[name, "random"] - 3.0


def _steady_source(seconds: float = 3.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    amps = harmonic_amplitudes(np.zeros(8))[0]
    return sum(a * np.sin(2 * np.pi * (h + 1) * 261.6256 * t) for h, a in enumerate(amps))


@pytest.mark.parametrize("lookahead", [0, 1])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_held_frame_is_a_steady_tone(lookahead, seed):
    """Identical frames (held latent, held note): clean tone, no added noise needed."""
    src = _steady_source()
    frame = stft_magnitude(src, N_FFT, HOP)[20]
    held = np.tile(frame, (60, 1))
    y = reconstruct(held, N_FFT, HOP, lookahead, seed=seed)
    interior = slice(8, -8)
    got = stft_magnitude(y, N_FFT, HOP)[interior]
    sc = 20 * np.log10(np.linalg.norm(got - held[interior]) / np.linalg.norm(held[interior]))
    assert sc <= -35.0
    # RMS over one analysis window (4096): shorter windows mostly measure the
    # ripple set by the partials' relative phases, which are free here
    seg = y[8 * HOP:-8 * HOP]
    mod_y = rms_modulation(seg, N_FFT)
    mod_src = rms_modulation(src[8 * HOP:8 * HOP + seg.size], N_FFT)
    assert mod_y <= 1.5 * mod_src, (mod_y, mod_src)


def test_silence_in_silence_out():
    y = reconstruct(np.zeros((10, N_FFT // 2 + 1)), N_FFT, HOP, 0)
    assert y.shape == (9 * HOP + N_FFT,)
    assert np.all(y == 0.0)


def test_same_seed_same_output_and_finite(mags):
    a = reconstruct(mags["noise_bursts"], N_FFT, HOP, 0, seed=3)
    b = reconstruct(mags["noise_bursts"], N_FFT, HOP, 0, seed=3)
    np.testing.assert_array_equal(a, b)
    assert np.all(np.isfinite(a))


def test_voices_are_independent_rows():
    """A plan for 3 voices gives each voice what a 1-voice plan gives it (significant bins)."""
    sigs = [stft_magnitude(_signal(n, 0.5), N_FFT, HOP) + 1e-3 for n in ("chord", "vibrato", "chirp")]
    multi = RTPGHI(N_FFT, HOP, 3, 0, seed=0)
    singles = [RTPGHI(N_FFT, HOP, 1, 0, seed=0) for _ in range(3)]  # every bin significant
    for plan in (multi, *singles):  # same start phase everywhere
        plan._phase[:] = 0.0
    for k in range(len(sigs[0])):
        got = multi.execute(np.stack([s[k] for s in sigs])).copy()
        for v in range(3):
            ref = singles[v].execute(sigs[v][k:k + 1])
            np.testing.assert_allclose(np.angle(np.exp(1j * (got[v] - ref[0]))), 0.0, atol=1e-4)


@pytest.mark.parametrize("kwargs,needle", [
    ({"lookahead": 2}, "lookahead"),
    ({"window": "hamming"}, "window"),
], ids=["lookahead-2", "hamming"])
def test_bad_arguments(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        reconstruct(np.ones((4, N_FFT // 2 + 1)), N_FFT, HOP, **kwargs)


def test_bad_shape_names_expected_bins():
    with pytest.raises(ValueError, match="2049"):
        reconstruct(np.ones((4, 100)), N_FFT, HOP)
