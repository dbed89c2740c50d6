"""Pitch stage: move a decoded magnitude frame to the played note.

The decoder emits frames at the model's sample rate and tuning (its corpus is
centred on ``reference_note``). Per voice the frame is moved so that it sounds at
the played note, at the *device* rate:

- ``shift``  (the 2018 thesis): every partial moves by the same number of Hz, the
  distance from the reference note to the played note; harmonics become inharmonic.
  No wrap-around by default (partials pushed past Nyquist vanish); ``wrap=True``
  wraps them around the frequency axis as the thesis's ``roll`` did.
- ``transpose``: frequencies are multiplied by ``2**(semitones/12)``; harmonics
  stay harmonic.
- ``tuned``: the fundamental of the decoded frame is estimated
  (:func:`estimate_f0`) and frequencies are multiplied so that it lands on the
  played note (A4 gives 440 Hz whatever the latent).
- ``off``: no note pitch (only the sample-rate correction below).

How a frame is moved: the frame is split into spectral lobes (runs between
magnitude valleys); each lobe is *translated* (not stretched) so that its peak lands
where the mode says, with linear interpolation for fractional bins. Translating
keeps every lobe the width of the analysis window's main lobe, so the result stays
a consistent STFT magnitude and the phase stage tracks its frequency exactly;
stretching the axis would narrow or widen lobes and bias the pitch.

Output rate != model rate (a 44.1 kHz model on a 48 kHz device): the engine runs
the model's ``n_fft``/``hop_length`` at the device rate, so an output bin ``k``
means ``k * sr_out / n_fft`` Hz. The rate ratio ``sr_model / sr_out`` is folded
into the frequency mapping (a partial at model bin ``p`` lands at output bin
``p * ratio * sr_model / sr_out``), so pitch is right with no resampler. Hops are
then ``hop_length / sr_out`` seconds long; envelope and smoothing times are in ms
and are converted with the output rate.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["PITCH_MODES", "PitchStage", "estimate_f0", "peak_positions", "midi_to_hz"]

PITCH_MODES = ("shift", "transpose", "tuned", "off")
_PEAK_GAMMA = 1.0 / (2.0 * math.pi * 0.25645)  # Hann (Gaussian-equivalent) peak offset factor


def midi_to_hz(note: float) -> float:
    """12-TET, A4 (69) = 440 Hz."""
    return 440.0 * 2.0 ** ((note - 69.0) / 12.0)


def _log(mag: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(mag, 1e-30))


def peak_positions(mag: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Fractional positions (bins) of peaks at integer bins ``idx`` [k] of a frame ``mag`` [n_bins].

    Returns float64 [k]. Mean of the parabolic-vertex estimate on log-magnitude and the Gaussian
    phase-gradient estimate for the Hann window; their biases cancel (< 0.002 bin).
    """
    n = mag.shape[-1]
    i = np.clip(idx, 1, n - 2)
    return _peak_positions_log(_log(mag[..., i - 1]), _log(mag[..., i]), _log(mag[..., i + 1]), i)


def _peak_positions_log(sl: np.ndarray, s0: np.ndarray, sr: np.ndarray, i: np.ndarray) -> np.ndarray:
    """:func:`peak_positions` from the log-magnitudes at ``i - 1``, ``i``, ``i + 1``."""
    curv = sl - 2.0 * s0 + sr
    grad = 0.5 * (sr - sl)
    par = np.where(curv < -1e-12, -grad / np.where(curv < -1e-12, curv, -1.0), 0.0)
    gau = _PEAK_GAMMA * grad
    off = np.clip(0.5 * (par + gau), -1.0, 1.0)
    return i + off


def estimate_f0(mag: np.ndarray, bin_hz: float, *, fmin: float = 30.0, fmax: float = 2000.0,
                n_harmonics: int = 6, near: float | None = None, near_cents: float = 100.0) -> float:
    """Fundamental frequency (Hz) of one magnitude frame, or 0.0 if none is found.

    ``mag`` is a linear magnitude frame [n_bins]; ``bin_hz`` the Hz per bin
    (``sample_rate / n_fft``); ``fmin``/``fmax`` bound the search in Hz.
    Coarse f0 by subharmonic summation on a 5-cent grid between ``fmin`` and
    ``fmax``: the square-root-compressed spectrum (linearly interpolated) is summed at the first ``n_harmonics`` multiples with weights
    ``0.84**(h-1)`` (lower candidates explain the same partials with smaller
    weights, so the true f0 wins over its subharmonics); an octave check moves up
    an octave while the odd harmonics hold less than half the even ones' weight.
    Refined by a weighted fit through the interpolated peaks of the harmonics
    present. On frames of the shipped model (often inharmonic mixtures) "the"
    f0 is ill-defined; this picks the strongest harmonic series.

    ``near`` (Hz): the fundamental is known to lie within ``near_cents`` of it (a
    pitch-conditioned decoder was asked for that pitch): the search is limited to that
    interval and the octave check is skipped, so a frame with weak odd harmonics (or a
    weak fundamental) cannot be read an octave off.
    """
    if near is not None and near > 0.0:
        fmin = near * 2.0 ** (-near_cents / 1200.0)
        fmax = near * 2.0 ** (near_cents / 1200.0)
    mag = np.asarray(mag, dtype=np.float64)
    n = mag.shape[0]
    peak = float(mag.max()) if n else 0.0
    if not np.isfinite(peak) or peak <= 0.0:
        return 0.0
    comp = np.sqrt(mag / peak)
    mx = comp
    c_lo = max(fmin / bin_hz, 2.0)
    c_hi = min(fmax / bin_hz, n - 2.0)
    if c_hi <= c_lo:
        return 0.0
    grid = c_lo * 2.0 ** (np.arange(0.0, 1200.0 * math.log2(c_hi / c_lo), 5.0) / 1200.0)
    h = np.arange(1, n_harmonics + 1)
    pos = grid[:, None] * h[None, :]
    inside = pos < n - 1
    pos = np.minimum(pos, n - 1.001)
    i0 = pos.astype(np.int64)
    frac = pos - i0
    vals = (mx[i0] * (1.0 - frac) + mx[i0 + 1] * frac) * inside
    score = vals @ (0.84 ** (h - 1))
    k = int(np.argmax(score))
    c0 = float(grid[k])
    for _ in range(0 if near else 3):  # octave check
        odd = vals[k, 0::2].sum()
        even = vals[k, 1::2].sum()
        if odd < 0.5 * even and 2.0 * c0 < c_hi:
            c0 *= 2.0
            k = int(np.argmin(np.abs(grid - c0)))
        else:
            break
    # refine on harmonic peaks
    num = 0.0
    den = 0.0
    for k in range(1, n_harmonics + 1):
        centre = k * c0
        lo = int(math.floor(centre - 1.5))
        hi = int(math.ceil(centre + 1.5)) + 1
        if lo < 1 or hi > n - 1:
            break
        j = lo + int(np.argmax(mag[lo:hi]))
        if mag[j] < 0.01 * peak or j in (lo, hi - 1):
            continue
        p = float(peak_positions(mag, np.array([j]))[0])
        w = float(mag[j])
        num += w * p * k
        den += w * k * k
    c = num / den if den > 0 else c0
    return c * bin_hz


class PitchStage:
    """Per-hop plan: decoded frames [n_decodes, n_bins] -> per-voice frames [voices, n_bins].

    Parameters
    ----------
    n_bins : int
    n_voices : int
    bin_ratio : float
        ``sr_model / sr_out``: output bin of a partial at model bin ``p`` with no
        note pitch is ``p * bin_ratio``.
    n_fft, sr_out : int
        To convert Hz to output bins for ``shift``.
    """

    def __init__(self, n_bins: int, n_voices: int, *, bin_ratio: float, n_fft: int, sr_out: float):
        self.n_bins = n_bins
        self.n_voices = n_voices
        self.bin_ratio = float(bin_ratio)
        self.n_fft = n_fft
        self.sr_out = float(sr_out)
        self.out = np.zeros((n_voices, n_bins))
        self._flat = self.out.reshape(-1)
        self._bins = np.arange(n_bins, dtype=np.float64)
        self._row_off = (np.arange(n_voices) * n_bins)[:, None]
        f4 = np.float32  # per-voice work arrays: float32 (half the memory traffic)
        self._t = np.zeros((n_voices, n_bins), f4)
        self._I = np.zeros((n_voices, n_bins), f4)
        self._f = np.zeros((n_voices, n_bins), f4)
        self._w = np.zeros((n_voices, n_bins), f4)
        self._j = np.zeros((n_voices, n_bins), np.int64)
        self._bins_tiled = np.tile(self._bins, n_voices)
        self._frame_id = 0
        self._key = None
        self.freq = np.zeros((n_voices, n_bins))  # lobe frequency per output bin (bins)
        self._acc = np.zeros((n_voices, n_bins), f4)
        # scatter-add of process(): destination index per source bin (out of range:
        # the trash slot at the end of the sums), weights in float64, two sums
        self._ok = np.zeros((n_voices, n_bins), bool)
        self._okb = np.zeros((n_voices, n_bins), bool)
        self._w8 = np.zeros((n_voices, n_bins))
        self._trash = n_voices * n_bins
        self._sum = np.zeros(n_voices * n_bins + 1)
        self._fsum = np.zeros(n_voices * n_bins + 1)
        self._bins_i = np.arange(n_bins, dtype=np.int64)
        self._tapsrc = {tap: np.clip(self._bins_i + tap, 0, n_bins - 1) for tap in (-1, 0, 1, 2)}
        self._slog = np.zeros(n_bins)
        self._ltap_buf = np.zeros((4, n_bins), f4)  # log magnitude at taps k-1, k, k+1, k+2
        self._ltap_views = [self._ltap_buf[k][None, :] for k in range(4)]
        self.analyse(np.zeros(n_bins))

    def analyse(self, mag: np.ndarray) -> np.ndarray:
        """Prepare a new decoded frame; return each bin's lobe peak (fractional model bins).

        ``mag`` is the linear magnitude frame [n_bins]; returns float64 [n_bins].
        Also caches what :meth:`process` needs per frame (log magnitudes of the
        interpolation taps, edge masks), so per-hop work is only per voice.
        """
        n = self.n_bins
        mag = np.asarray(mag, dtype=np.float64)
        start = np.zeros(n, bool)
        start[0] = True
        start[1:-1] = (mag[1:-1] < mag[:-2]) & (mag[1:-1] <= mag[2:])
        start[-1] = mag[-1] < mag[-2]
        starts = np.flatnonzero(start)
        lid = np.cumsum(start) - 1
        segmax = np.maximum.reduceat(mag, starts)
        is_peak = mag == segmax[lid]
        pk = np.maximum.reduceat(np.where(is_peak, np.arange(n), -1), starts)
        # peak_positions(mag, pk), with the log taken once over the frame
        i = np.minimum(np.maximum(pk, 1), n - 2)  # np.clip(pk, 1, n - 2)
        slog = self._slog
        np.maximum(mag, 1e-30, out=slog)
        np.log(slog, out=slog)
        pos = _peak_positions_log(slog[i - 1], slog[i], slog[i + 1], i)
        peaks = pos[lid]
        # per-frame interpolation data
        logm = np.log(np.maximum(mag, 1e-12 * max(float(mag.max()), 1e-30)))
        # taps k-1, k, k+1, k+2 (clamped at the ends): shifted copies of logm in float32
        lt = self._ltap_buf
        c = lt[1]
        np.copyto(c, logm, casting="same_kind")
        lt[0, 1:] = c[:-1]
        lt[0, 0] = c[0]
        lt[2, :-1] = c[1:]
        lt[2, -1] = c[-1]
        lt[3, :-2] = c[2:]
        lt[3, -2:] = c[-1]
        self._ltap = self._ltap_views
        m0 = mag[self._tapsrc[0]]
        m1 = mag[self._tapsrc[1]]
        lo = np.minimum(mag[self._tapsrc[-1]], mag[self._tapsrc[2]])
        self._edge = (lo < 1e-2 * np.maximum(m0, m1))[None, :]
        self._m0 = m0[None, :].astype(np.float32)
        self._dm = (m1 - m0)[None, :].astype(np.float32)
        self._cap = (1.2 * np.maximum(m0, m1))[None, :].astype(np.float32)
        self._frame_id += 1
        return peaks

    def invalidate(self) -> None:
        """Forget the cached output: the next :meth:`process` recomputes (e.g. voice
        rows moved, so row ``i`` holds another voice)."""
        self._key = None

    def process(self, mag: np.ndarray, peaks: np.ndarray, ratio: np.ndarray, offset: np.ndarray,
                n: int, wrap: bool = False) -> np.ndarray:
        """Move the frame last given to :meth:`analyse` for voices ``0..n-1``.

        Parameters
        ----------
        mag : ndarray [n_bins]
            Decoded (model) frame shared by the voices (the one analysed).
        peaks : ndarray [n_bins]
            :meth:`analyse` of ``mag``.
        ratio : ndarray [>= n]
            Per-voice frequency multiplier in output bins per model bin
            (already including ``bin_ratio``).
        offset : ndarray [>= n]
            Per-voice additive shift in output bins.

        Returns ``self.out[:n]``: bin ``k`` of a lobe with peak ``p`` lands at
        ``k + p*(ratio - 1) + offset``. ``self.freq[:n]`` holds, per output bin,
        the (fractional) bin its lobe's peak was moved to: the exact frequency
        the phase stage should give that lobe (its ``freq_hint``).
        Nothing is recomputed when frame, voices and pitches are unchanged
        (:meth:`invalidate` forces it).
        """
        B = self.n_bins
        out = self.out[:n]
        if n == 0:
            return out
        key = (self._frame_id, n, bool(wrap), ratio[:n].tobytes(), offset[:n].tobytes())
        if key == self._key:
            return out
        self._key = key
        # Lobe translation by delta = p*(ratio-1) + offset: output bin k + I
        # (I = ceil(delta)) takes the lobe's value at source position k + f,
        # f = I - delta in [0, 1), interpolated with a Keys cubic on *log*
        # magnitude (near its peak a window's main lobe is close to a parabola
        # in log, which the cubic reproduces exactly), then summed in linear
        # magnitude. Lobe edges (a tap near zero) use linear interpolation.
        delta = self._t[:n]
        np.multiply(peaks[None, :], (ratio[:n] - 1.0)[:, None], out=delta, casting="same_kind")
        np.add(delta, offset[:n, None], out=delta, casting="same_kind")
        I = self._I[:n]
        np.ceil(delta, out=I)
        f = self._f[:n]
        np.subtract(I, delta, out=f)
        acc = self._acc[:n]
        w = self._w[:n]
        l_m1, l_0, l_1, l_2 = self._ltap
        # Keys (a = -0.5) weights for taps k-1, k, k+1, k+2 at fraction f
        np.multiply(f, -0.5, out=w); w += 1.0; w *= f; w -= 0.5; w *= f          # noqa: E702
        np.multiply(w, l_m1, out=acc)
        np.multiply(f, 1.5, out=w); w -= 2.5; w *= f; w *= f; w += 1.0          # noqa: E702
        np.multiply(w, l_0, out=w)
        acc += w
        np.multiply(f, -1.5, out=w); w += 2.0; w *= f; w += 0.5; w *= f         # noqa: E702
        np.multiply(w, l_1, out=w)
        acc += w
        np.multiply(f, 0.5, out=w); w -= 0.5; w *= f; w *= f                    # noqa: E702
        np.multiply(w, l_2, out=w)
        acc += w
        np.exp(acc, out=acc)
        np.multiply(f, self._dm, out=w)
        w += self._m0
        np.copyto(acc, w, where=self._edge)
        np.minimum(acc, self._cap, out=acc)
        j = self._j[:n]
        np.copyto(j, I, casting="unsafe")
        j += self._bins_i
        if wrap:
            np.mod(j, B, out=j)
            j += self._row_off[:n]
        else:  # bins moved past either end go to the trash slot
            ok = self._ok[:n]
            np.greater_equal(j, 0, out=ok)
            np.less(j, B, out=self._okb[:n])
            ok &= self._okb[:n]
            j += self._row_off[:n]
            np.logical_not(ok, out=ok)
            np.copyto(j, self._trash, where=ok)
        idx = j.reshape(-1)
        nb = n * B
        # scatter-add in source order (np.add.at: as np.bincount sums, without its
        # output and index arrays); every bin of out[:n] is written
        total = self._sum
        total[:nb] = 0.0
        w8 = self._w8[:n]
        np.copyto(w8, acc)
        np.add.at(total, idx, w8.reshape(-1))
        flat = self._flat[:nb]
        flat[:] = total[:nb]
        # frequency of each output bin's lobe (output bins): where the lobe's
        # peak was moved to, weighted by contribution where lobes overlap
        p_out = delta
        np.add(p_out, peaks[None, :], out=p_out, casting="same_kind")
        if wrap:
            np.mod(p_out, B, out=p_out)
        np.multiply(acc, p_out, out=w)  # float32 product, as before the float64 sum
        np.copyto(w8, w)
        fw = self._fsum
        fw[:nb] = 0.0
        np.add.at(fw, idx, w8.reshape(-1))
        freq = self.freq[:n].reshape(-1)
        filled = self._ok[:n].reshape(-1)
        np.greater(flat, 0.0, out=filled)
        np.copyto(freq, self._bins_tiled[:nb])
        np.divide(fw[:nb], flat, out=freq, where=filled)
        return out
