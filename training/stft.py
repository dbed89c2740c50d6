"""Magnitude STFT frames as the corpus stores them.

Periodic Hann window of length ``n_fft`` (= FFT size), ``hop_length`` samples between
frames, signal padded by ``n_fft // 2`` zeros on both sides so the first frame is
centred on sample 0. The runtime synthesises with the same settings.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from training.errors import TrainingError

PROFILES = {
    "default": (44100, 4096, 1024),
    "lowlatency": (44100, 1024, 256),
}


@dataclass(frozen=True)
class StftSettings:
    sample_rate: int = 44100
    n_fft: int = 4096
    hop_length: int = 1024
    window: str = "hann"

    def __post_init__(self) -> None:
        if self.sample_rate < 1000:
            raise TrainingError(f"sample_rate={self.sample_rate} is too low; use e.g. 44100")
        if self.n_fft < 16 or self.n_fft % 2:
            raise TrainingError(f"n_fft={self.n_fft} must be an even number >= 16, e.g. 4096")
        if not 0 < self.hop_length <= self.n_fft:
            raise TrainingError(
                f"hop_length={self.hop_length} must be in 1..n_fft ({self.n_fft}), e.g. n_fft/4")
        if self.window != "hann":
            raise TrainingError(f"window={self.window!r} is not supported; use 'hann'")

    @property
    def n_bins(self) -> int:
        return self.n_fft // 2 + 1

    def to_dict(self) -> dict:
        return asdict(self)


def hann_periodic(n: int) -> np.ndarray:
    """Periodic Hann window, float64 [n]."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)


def magnitude_frames(x: np.ndarray, stft: StftSettings, *, chunk: int = 256) -> np.ndarray:
    """Magnitude STFT of a mono signal.

    Parameters
    ----------
    x : float array [n_samples]
    stft : StftSettings

    Returns
    -------
    float32 array [n_frames, n_bins], linear magnitude (not normalised).
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1:
        raise TrainingError(f"magnitude_frames expects a mono signal, got shape {x.shape}")
    pad = stft.n_fft // 2
    xp = np.pad(x, (pad, pad))
    if len(xp) < stft.n_fft:
        xp = np.pad(xp, (0, stft.n_fft - len(xp)))
    frames = sliding_window_view(xp, stft.n_fft)[:: stft.hop_length]
    w = hann_periodic(stft.n_fft)
    out = np.empty((frames.shape[0], stft.n_bins), dtype=np.float32)
    for i in range(0, frames.shape[0], chunk):
        out[i:i + chunk] = np.abs(np.fft.rfft(frames[i:i + chunk] * w, axis=1))
    return out


def normalise_and_gate(mag: np.ndarray, *, silence_db: float, level_ref: float | None = None
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Drop near-silent frames and normalise each remaining frame to max 1.

    A frame is near-silent when its peak is more than ``silence_db`` dB below
    ``level_ref`` (default: the loudest frame peak of ``mag``).

    Returns ``(frames float32 [k, n_bins], kept_index int [k])``.
    """
    peaks = mag.max(axis=1) if len(mag) else np.zeros(0, dtype=np.float32)
    ref = float(peaks.max()) if level_ref is None and len(peaks) else float(level_ref or 0.0)
    if ref <= 0.0:
        return np.zeros((0, mag.shape[1]), dtype=np.float32), np.zeros(0, dtype=np.int64)
    keep = np.nonzero(peaks > ref * 10.0 ** (-abs(silence_db) / 20.0))[0]
    frames = (mag[keep] / peaks[keep, None]).astype(np.float32)
    return frames, keep
