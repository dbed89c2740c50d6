"""Small streaming DSP blocks: windows, overlap-add, smoothing, DC blocker, limiter.

Every block is a plan object: ``__init__`` allocates, the per-hop/per-block method
works in preallocated buffers.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.fft import irfft as _irfft  # float32 in, float32 out (numpy's is float64 only)

__all__ = [
    "hann",
    "synthesis_window",
    "stft_magnitude",
    "OverlapAdd",
    "DCBlocker",
    "SafetyLimiter",
    "one_pole_coefficient",
]


def hann(n: int) -> np.ndarray:
    """Periodic Hann window of length ``n`` (float64)."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)


def synthesis_window(n_fft: int, hop_length: int) -> np.ndarray:
    """Canonical dual of the periodic Hann window for overlap-add at ``hop_length``.

    ``g = w / sum_k w(l - k*hop)**2`` so that analysis with ``w`` followed by
    synthesis with ``g`` is the identity for any signal (perfect reconstruction).
    """
    w = hann(n_fft)
    denom = np.zeros(n_fft)
    for shift in range(0, n_fft, hop_length):
        denom += np.roll(w * w, shift)
    # denom is hop-periodic; for hop dividing n_fft and redundancy >= 2 it is > 0
    return w / np.maximum(denom, 1e-12)


def stft_magnitude(x: np.ndarray, n_fft: int, hop_length: int) -> np.ndarray:
    """|STFT| with the periodic Hann window, no padding.

    Frame ``n`` covers samples ``[n*hop, n*hop + n_fft)`` of ``x``; this is the
    framing :func:`daemon.core.phase.reconstruct` inverts. Returns [frames, n_fft//2+1].
    """
    x = np.asarray(x, dtype=np.float64)
    if x.size < n_fft:
        x = np.pad(x, (0, n_fft - x.size))
    n_frames = 1 + (x.size - n_fft) // hop_length
    idx = np.arange(n_fft)[None, :] + hop_length * np.arange(n_frames)[:, None]
    return np.abs(np.fft.rfft(x[idx] * hann(n_fft), axis=1))


class OverlapAdd:
    """Streaming inverse STFT: irfft, synthesis window, overlap-add, ``hop`` samples out.

    Works in float32 (complex64 spectra, float32 accumulators): ~1e-7 relative
    error, several times faster than float64. Spectra are given *signed*: with
    phase measured from the window centre (the convention of :mod:`daemon.core.phase`)
    times ``(-1)**m`` (:attr:`sign`, a circular shift of ``n_fft/2``), which is the
    frame-start phase the inverse FFT expects; :meth:`daemon.core.phase.RTPGHI.write_frame`
    writes them so.

    Parameters
    ----------
    n_fft, hop_length : int
    n_rows : int
        Independent streams (voices).

    Allocation per push: ``scipy.fft.irfft`` returns a new float32 array of
    ``rows * n_fft`` samples (it has no ``out=``); everything else works in
    buffers allocated here.
    """

    def __init__(self, n_fft: int, hop_length: int, n_rows: int = 1):
        self.n_fft = n_fft
        self.hop = hop_length
        self.n_rows = n_rows
        self.window = synthesis_window(n_fft, hop_length)
        n_bins = n_fft // 2 + 1
        self.sign = np.where(np.arange(n_bins) % 2 == 0, 1.0, -1.0)
        self.sign32 = self.sign.astype(np.float32)
        self._acc = np.zeros((n_rows, n_fft), np.float32)  # per-row accumulators
        self._window32 = self.window.astype(np.float32)
        self.out = np.zeros(hop_length)

    def reset(self, row: int | None = None) -> None:
        if row is None:
            self._acc[:] = 0.0
        else:
            self._acc[row] = 0.0

    def move(self, src: int, dst: int) -> None:
        """Copy the state of row ``src`` into row ``dst``."""
        self._acc[dst] = self._acc[src]

    def _add_frames(self, spectra: np.ndarray, rows: slice) -> np.ndarray:
        """irfft, window and add the signed ``spectra[rows]`` into the accumulators;
        return ``acc[rows]``."""
        acc = self._acc[rows]
        frames = _irfft(spectra[rows], n=self.n_fft, axis=1)
        np.multiply(frames, self._window32, out=frames)
        np.add(acc, frames, out=acc)
        return acc

    def _advance(self, acc: np.ndarray) -> None:
        """Shift accumulators left by one hop (the first hop has been read)."""
        hop = self.hop
        acc[:, :-hop] = acc[:, hop:]
        acc[:, -hop:] = 0.0

    def push(self, spectra: np.ndarray, n: int | None = None) -> np.ndarray:
        """Add one signed frame per row (rows ``0..n-1``), return the next ``hop`` summed samples.

        ``spectra`` is complex [rows, n_bins]. Returns ``self.out`` [hop] (a view,
        overwritten on the next call).
        """
        n = self.n_rows if n is None else n
        if n:
            acc = self._add_frames(spectra, slice(0, n))
            np.sum(acc[:, :self.hop], axis=0, out=self.out)
            self._advance(acc)
        else:
            self.out[:] = 0.0
        return self.out

    def push_rows(self, spectra: np.ndarray, rows: slice, out: np.ndarray | None = None) -> np.ndarray | None:
        """Like :meth:`push` for a contiguous range of rows, without summing.

        Writes the next ``hop`` samples of each row into ``out[rows]`` (shape
        [rows, hop]) if given; ``out=None`` discards them (priming).
        """
        if self._acc[rows].shape[0] == 0:
            return out
        acc = self._add_frames(spectra, rows)
        if out is not None:
            out[rows] = acc[:, :self.hop]
        self._advance(acc)
        return out


def one_pole_coefficient(time_ms: float, rate_hz: float) -> float:
    """Feedback coefficient of a one-pole smoother with time constant ``time_ms``.

    ``rate_hz`` is how often the smoother is stepped (hops per second for
    per-hop smoothing). 0 ms gives 0 (no smoothing).
    """
    if time_ms <= 0.0:
        return 0.0
    return math.exp(-1000.0 / (time_ms * rate_hz))


_DC_CHUNK = 1024  # samples solved at once by DCBlocker (R**-1024 stays below 20 at 20 Hz)


class DCBlocker:
    """First-order DC blocker ``y = x - x1 + R*y1``, cut-off ``cutoff_hz``.

    Solved per chunk in closed form with numpy, in float64 and into preallocated
    buffers: ``y[n] = R**(n+1) * y1 + R**n * cumsum(R**-k * d[k])`` with
    ``d[k] = x[k] - x[k-1]``. Chunks of at most ``_DC_CHUNK`` samples keep ``R**-k``
    small (under 20 at 20 Hz and 44.1 kHz), so the result matches the recursion to
    about 1e-13 (a test checks it). It replaces scipy.signal's ``lfilter``, whose
    import alone took about 0.9 s of a 1.2 s start (and so of every restart).
    """

    def __init__(self, sample_rate: float, cutoff_hz: float = 20.0):
        self.r = 1.0 - 2.0 * math.pi * cutoff_hz / sample_rate
        k = np.arange(_DC_CHUNK + 1, dtype=np.float64)
        self._pow = self.r ** k  # R**0 .. R**C
        self._inv = self.r ** -k[:-1]  # R**-0 .. R**-(C-1)
        self._d = np.empty(_DC_CHUNK, dtype=np.float64)
        self._t = np.empty(_DC_CHUNK, dtype=np.float64)
        self.x1 = 0.0
        self.y1 = 0.0

    def reset(self) -> None:
        self.x1 = 0.0
        self.y1 = 0.0

    def process(self, x: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Filter block ``x`` [n] into ``out`` [n] (may be ``x``); n >= 1."""
        n = len(x)
        for i in range(0, n, _DC_CHUNK):
            m = min(_DC_CHUNK, n - i)
            xs, d, t = x[i:i + m], self._d[:m], self._t[:m]
            d[0] = float(xs[0]) - self.x1
            np.subtract(xs[1:], xs[:-1], out=d[1:], dtype=np.float64)
            self.x1 = float(xs[-1])  # before ``out`` (possibly ``x``) is written
            d *= self._inv[:m]
            np.cumsum(d, out=d)
            d *= self._pow[:m]
            np.multiply(self._pow[1:m + 1], self.y1, out=t)
            d += t
            self.y1 = float(d[-1])
            out[i:i + m] = d
        return out


class SafetyLimiter:
    """Last stage: NaN/Inf guard with mute latch, soft clip, hard clamp to ±1.

    A block holding NaN/Inf is replaced by silence and the output is muted; it
    fades back in over ``fade_samples`` once clean blocks arrive again.
    Soft clip: identity below ``knee`` (0.5), then a tanh curve that approaches 1.
    """

    def __init__(self, fade_samples: int = 2048, knee: float = 0.5):
        self.knee = knee
        self.fade_samples = max(1, int(fade_samples))
        self.mute_gain = 1.0
        self.nonfinite_blocks = 0
        self._ramp = np.arange(1, self.fade_samples + 1) / self.fade_samples
        self._alloc(0)

    def _alloc(self, n: int) -> None:
        self._abs = np.zeros(n)
        self._soft = np.zeros(n)
        self._over = np.zeros(n, bool)

    def process(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Guard, soft-clip and clamp block ``x`` [n] into ``out`` [n] (default: in place).

        Allocation-free for blocks of the size seen last (buffers follow the block size).
        """
        out = x if out is None else out
        n = x.shape[0]
        if self._abs.shape[0] != n:
            self._alloc(n)
        a = self._abs
        np.abs(x, out=a)
        peak = float(a.max()) if n else 0.0  # NaN and Inf propagate into the max
        if not math.isfinite(peak):
            self.nonfinite_blocks += 1
            np.nan_to_num(x, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
            out[:] = 0.0
            self.mute_gain = 0.0
            return out
        if out is not x:
            out[:] = x
        k = self.knee
        if peak > k:
            # |y| = k + (1 - k) * tanh((|x| - k) / (1 - k)) above the knee, sign kept
            soft = self._soft
            np.subtract(a, k, out=soft)
            soft *= 1.0 / (1.0 - k)
            np.tanh(soft, out=soft)
            soft *= 1.0 - k
            soft += k
            np.copysign(soft, out, out=soft)
            np.greater(a, k, out=self._over)
            np.copyto(out, soft, where=self._over)
        if self.mute_gain < 1.0:
            n = out.shape[0]
            start = int(round(self.mute_gain * self.fade_samples))
            stop = min(self.fade_samples, start + n)
            m = stop - start
            out[:m] *= self._ramp[start:stop] if m > 0 else 1.0
            self.mute_gain = stop / self.fade_samples
        np.clip(out, -1.0, 1.0, out=out)
        return out
