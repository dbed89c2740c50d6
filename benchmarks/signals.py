"""Reference signals and spectral-convergence helpers shared by the benchmarks.

All signals are mono float64 at 44.1 kHz, 2.5 s long, seeded, peak-normalised to 0.5.
The STFT here is the project's analysis convention (periodic Hann, n_fft 4096, hop 1024,
phase measured from the window centre, i.e. ``rfft(fftshift(frame * w))``).

Frame ``n`` covers samples ``[n * hop, n * hop + n_fft)`` of the signal; a waveform
rebuilt from ``S`` by any method in ``benchmarks/`` (and by ``daemon.core.phase.reconstruct``
after delay compensation, see :func:`estimate_delay`) is compared with ``S`` on the same
frame grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

SAMPLE_RATE = 44100
N_FFT = 4096
HOP = 1024
DURATION_S = 2.5
# Frames dropped at each end before SC is computed, for every method alike: the first
# and last n_fft/hop frames overlap the signal edges (incomplete overlap-add), plus one
# more for a lookahead of one hop.
EDGE_FRAMES = 4
PEAK = 0.5


def hann_periodic(n: int) -> np.ndarray:
    """Periodic Hann window of length ``n`` (the DFT-even one used for STFT)."""
    k = np.arange(n)
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * k / n)


# ---------------------------------------------------------------- signals


def _fade(x: np.ndarray, sr: int, fade_s: float = 0.02) -> np.ndarray:
    n = int(fade_s * sr)
    ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(n) / n)
    x = x.copy()
    x[:n] *= ramp
    x[-n:] *= ramp[::-1]
    return x


def _normalise(x: np.ndarray) -> np.ndarray:
    return PEAK * x / np.max(np.abs(x))


def _harmonic(f_inst: np.ndarray, sr: int, n_harm: int, rng: np.random.Generator,
              rolloff: float = 1.0) -> np.ndarray:
    """Sum of harmonics 1..n_harm of an instantaneous frequency track (Hz), below Nyquist."""
    phase = 2.0 * np.pi * np.cumsum(f_inst) / sr
    y = np.zeros_like(f_inst)
    for k in range(1, n_harm + 1):
        if k * np.max(f_inst) >= 0.45 * sr:
            break
        y += np.sin(k * phase + rng.uniform(0, 2 * np.pi)) / k**rolloff
    return y


def vibrato_tone(sr: int = SAMPLE_RATE, seed: int = 1) -> np.ndarray:
    """A3 (220 Hz) with 12 harmonics (1/k), 5.5 Hz vibrato of ±30 cents."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(DURATION_S * sr)) / sr
    f = 220.0 * 2.0 ** (30.0 / 1200.0 * np.sin(2 * np.pi * 5.5 * t))
    return _normalise(_fade(_harmonic(f, sr, 12, rng), sr))


def chord(sr: int = SAMPLE_RATE, seed: int = 2) -> np.ndarray:
    """C major triad plus the octave (C4 E4 G4 C5), 8 harmonics each, slow decay."""
    rng = np.random.default_rng(seed)
    n = int(DURATION_S * sr)
    t = np.arange(n) / sr
    y = np.zeros(n)
    for midi in (60, 64, 67, 72):
        f = 440.0 * 2.0 ** ((midi - 69) / 12.0)
        y += _harmonic(np.full(n, f), sr, 8, rng, rolloff=1.3)
    y *= np.exp(-t / 2.0)
    return _normalise(_fade(y, sr))


def chirp(sr: int = SAMPLE_RATE, seed: int = 3) -> np.ndarray:
    """Exponential sweep 100 Hz → 8 kHz with its 2nd and 3rd harmonics (-6, -12 dB)."""
    rng = np.random.default_rng(seed)
    n = int(DURATION_S * sr)
    t = np.arange(n) / sr
    f = 100.0 * (8000.0 / 100.0) ** (t / DURATION_S)
    phase = 2 * np.pi * np.cumsum(f) / sr + rng.uniform(0, 2 * np.pi)
    y = np.sin(phase) + 0.5 * np.sin(2 * phase) * (2 * f < 0.45 * sr) \
        + 0.25 * np.sin(3 * phase) * (3 * f < 0.45 * sr)
    return _normalise(_fade(y, sr))


def noise_bursts(sr: int = SAMPLE_RATE, seed: int = 4) -> np.ndarray:
    """White-noise bursts (80–300 ms, 5 ms ramps) separated by 100–250 ms of silence."""
    rng = np.random.default_rng(seed)
    n = int(DURATION_S * sr)
    y = np.zeros(n)
    pos = int(0.1 * sr)
    ramp_n = int(0.005 * sr)
    ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(ramp_n) / ramp_n)
    while True:
        length = int(rng.uniform(0.08, 0.3) * sr)
        if pos + length > n - int(0.1 * sr):
            break
        burst = rng.standard_normal(length) * rng.uniform(0.3, 1.0)
        burst[:ramp_n] *= ramp
        burst[-ramp_n:] *= ramp[::-1]
        y[pos:pos + length] = burst
        pos += length + int(rng.uniform(0.1, 0.25) * sr)
    return _normalise(y)


def plucked_string(sr: int = SAMPLE_RATE, seed: int = 5) -> np.ndarray:
    """Karplus–Strong string: G3 (196 Hz) plucked at 0.1 s, then the same string
    re-plucked at D4 (293.7 Hz) at 1.2 s (the first note is damped over 10 ms first).

    One string, one note at a time: overlapping notes would put near-coincident
    partials (3·G3 ≈ 2·D4) in one bin, a beating the chord already covers.
    """
    rng = np.random.default_rng(seed)
    n = int(DURATION_S * sr)
    y = np.zeros(n)
    notes = ((0.1, 196.0), (1.2, 293.66))
    damp_n = int(0.01 * sr)
    for i, (start_s, f0) in enumerate(notes):
        period = int(round(sr / f0))
        buf = rng.uniform(-1.0, 1.0, period)
        buf -= buf.mean()  # a string has no DC; a DC offset would dominate bins 0-2
        start = int(start_s * sr)
        stop = int(notes[i + 1][0] * sr) if i + 1 < len(notes) else n
        out = np.empty(stop - start)
        # The averaging loop is the algorithm; its cost (~1e5 samples) is fine offline.
        for k in range(out.size):
            j = k % period
            v = buf[j]
            out[k] = v
            buf[j] = 0.996 * 0.5 * (v + buf[(j + 1) % period])
        if stop < n:
            out[-damp_n:] *= 0.5 + 0.5 * np.cos(np.pi * np.arange(damp_n) / damp_n)
        y[start:stop] = out
    return _normalise(_fade(y, sr))


SIGNALS: dict[str, Callable[..., np.ndarray]] = {
    "vibrato": vibrato_tone,
    "chord": chord,
    "chirp": chirp,
    "noise_bursts": noise_bursts,
    "pluck": plucked_string,
}


def held_frame_magnitude(n_frames: int, *, n_fft: int = N_FFT, hop: int = HOP,
                         sr: int = SAMPLE_RATE, f0: float = 220.0
                         ) -> tuple[np.ndarray, np.ndarray]:
    """One frame of a steady 12-harmonic tone at ``f0``, repeated ``n_frames`` times.

    Returns ``(S, source)``: the magnitude array [n_frames, n_fft//2+1] and the steady
    source tone of the same length it was taken from (the RMS-modulation reference).
    """
    rng = np.random.default_rng(7)
    n = (n_frames - 1) * hop + n_fft
    src = _normalise(_harmonic(np.full(n, f0), sr, 12, rng))
    S = np.abs(stft(src, n_fft=n_fft, hop=hop))
    frame = S[S.shape[0] // 2]
    return np.repeat(frame[None, :], n_frames, axis=0), src


# ---------------------------------------------------------------- STFT


def n_frames_for(n_samples: int, n_fft: int = N_FFT, hop: int = HOP) -> int:
    return 1 + (n_samples - n_fft) // hop


def stft(x: np.ndarray, *, n_fft: int = N_FFT, hop: int = HOP) -> np.ndarray:
    """Complex STFT [frames, n_fft//2+1]; frame n = x[n*hop : n*hop+n_fft]; phase from
    the window centre."""
    w = hann_periodic(n_fft)
    n = n_frames_for(x.size, n_fft, hop)
    idx = np.arange(n)[:, None] * hop + np.arange(n_fft)[None, :]
    frames = x[idx] * w
    return np.fft.rfft(np.fft.fftshift(frames, axes=1), axis=1)


def istft(C: np.ndarray, *, n_fft: int = N_FFT, hop: int = HOP) -> np.ndarray:
    """Least-squares inverse of :func:`stft` (canonical dual window, exact at the edges
    where at least one window covers a sample)."""
    w = hann_periodic(n_fft)
    n = C.shape[0]
    frames = np.fft.ifftshift(np.fft.irfft(C, n=n_fft, axis=1), axes=1) * w
    length = (n - 1) * hop + n_fft
    y = np.zeros(length)
    norm = np.zeros(length)
    w2 = w * w
    for i in range(n):
        y[i * hop:i * hop + n_fft] += frames[i]
        norm[i * hop:i * hop + n_fft] += w2
    np.divide(y, norm, out=y, where=norm > 1e-8)
    return y


def magnitude(x: np.ndarray, *, n_fft: int = N_FFT, hop: int = HOP) -> np.ndarray:
    """Consistent magnitude |STFT(x)| [frames, bins] of a real signal."""
    return np.abs(stft(x, n_fft=n_fft, hop=hop))


# ---------------------------------------------------------------- spectral convergence


def spectral_convergence_db(y: np.ndarray, S: np.ndarray, *, delay: int = 0,
                            n_fft: int = N_FFT, hop: int = HOP,
                            edge: int = EDGE_FRAMES) -> float:
    """SC = 20·log10(‖|STFT(y')| − S‖_F / ‖S‖_F) over frames [edge, frames-edge).

    ``y'`` is ``y`` advanced by ``delay`` samples (the method's latency) and zero-padded or
    cut to the length that ``S`` describes, so frame n of ``y'`` is compared with ``S[n]``.
    """
    n = S.shape[0]
    length = (n - 1) * hop + n_fft
    yy = np.zeros(length)
    src = y[delay:] if delay >= 0 else np.concatenate([np.zeros(-delay), y])
    m = min(length, src.size)
    yy[:m] = src[:m]
    Y = magnitude(yy, n_fft=n_fft, hop=hop)
    sl = slice(edge, n - edge)
    num = np.linalg.norm(Y[sl] - S[sl])
    den = np.linalg.norm(S[sl])
    return float(20.0 * np.log10(max(num, 1e-300) / den))


def impulse_magnitude(n_frames: int = 24, *, n_fft: int = N_FFT, hop: int = HOP,
                      position: int | None = None) -> tuple[np.ndarray, int]:
    """Magnitude of a single click (for delay calibration) and the click's sample index."""
    length = (n_frames - 1) * hop + n_fft
    if position is None:
        position = (n_frames // 2) * hop + n_fft // 2 + hop // 3
    x = np.zeros(length)
    x[position] = 1.0
    return magnitude(x, n_fft=n_fft, hop=hop), position


def estimate_delay(method: Callable[[np.ndarray], np.ndarray], *, n_fft: int = N_FFT,
                   hop: int = HOP, refine_on: str | None = "chirp",
                   search: int = 96) -> int:
    """Latency of a magnitude→waveform method in samples (positive = output late).

    A click is rebuilt as a (slightly smeared) click by phase-gradient methods: the
    output peak minus the click position is a first estimate. It is then refined to the
    sample on a reference signal (``refine_on``; the chirp has the sharpest SC minimum
    in delay): the delay within ±``search`` samples
    (and ± one hop) that minimises SC. The same procedure is used for every streaming
    method; the offline baselines are built on the analysis grid and have no delay.
    """
    S, pos = impulse_magnitude(n_fft=n_fft, hop=hop)
    y = np.asarray(method(S), dtype=np.float64)
    d0 = int(np.argmax(np.abs(y))) - pos
    if refine_on is None:
        return d0
    Sr = magnitude(SIGNALS[refine_on](), n_fft=n_fft, hop=hop)
    yr = np.asarray(method(Sr), dtype=np.float64)

    def sc(d: int) -> float:
        return spectral_convergence_db(yr, Sr, delay=d, n_fft=n_fft, hop=hop)

    coarse = [d0 + k * hop + j for k in (-1, 0, 1) for j in range(-search, search + 1, 8)]
    best = min(coarse, key=sc)
    return min(range(best - 8, best + 9), key=sc)


@dataclass(frozen=True)
class RmsModulation:
    """std/mean and max/min of the per-hop RMS of a signal's interior."""

    cv: float
    max_over_min: float


def rms_modulation(y: np.ndarray, *, hop: int = HOP, skip: int = 4 * N_FFT) -> RmsModulation:
    """Per-hop RMS modulation over ``y[skip:-skip]`` (blocks of ``hop`` samples)."""
    core = y[skip:y.size - skip]
    nb = core.size // hop
    r = np.sqrt(np.mean(core[:nb * hop].reshape(nb, hop) ** 2, axis=1))
    return RmsModulation(cv=float(np.std(r) / np.mean(r)),
                         max_over_min=float(np.max(r) / max(np.min(r), 1e-300)))
