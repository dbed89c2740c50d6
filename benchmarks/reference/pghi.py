"""Offline phase-gradient heap integration (PGHI).

Průša, Balazs, Søndergaard, "A noniterative method for reconstruction of phase from STFT
magnitude", IEEE/ACM TASLP 25(5), 2017. The whole magnitude array is known: both phase
derivatives are estimated with centred differences, bins below ``tol`` × the global
maximum get random phase, and the rest are visited in decreasing magnitude from a heap,
each reached bin integrated (trapezoid rule) from the neighbour that reached it — along
time from the previous/next frame, along frequency from the neighbouring bin.
"""

from __future__ import annotations

import heapq

import numpy as np

from benchmarks import signals
from .gradients import log_magnitude, phase_gradients


def pghi_phase(S: np.ndarray, *, n_fft: int = signals.N_FFT, hop: int = signals.HOP,
               tol: float = 1e-6, seed: int = 0) -> np.ndarray:
    """Phase [frames, bins] for magnitude ``S`` by offline heap integration."""
    n_frames, n_bins = S.shape
    dphi_t, dphi_f = phase_gradients(S, n_fft, hop, time_diff="centred")
    s = log_magnitude(S)
    rng = np.random.default_rng(seed)
    phase = rng.uniform(-np.pi, np.pi, S.shape)
    todo = S > tol * float(np.max(S))
    # Seeds are taken in decreasing magnitude among the bins not yet reached.
    order = np.argsort(-s, axis=None)
    flat_todo = todo.ravel()
    s_flat = s.ravel()
    dt = dphi_t.ravel()
    df = dphi_f.ravel()
    ph = phase.ravel()
    heap: list[tuple[float, int]] = []
    for start in order:
        if not flat_todo[start]:
            continue
        flat_todo[start] = False
        ph[start] = 0.0
        heap.append((-s_flat[start], int(start)))
        while heap:
            _, k = heapq.heappop(heap)
            n, m = divmod(k, n_bins)
            # Along time.
            if n + 1 < n_frames:
                j = k + n_bins
                if flat_todo[j]:
                    ph[j] = ph[k] + 0.5 * (dt[k] + dt[j])
                    flat_todo[j] = False
                    heapq.heappush(heap, (-s_flat[j], j))
            if n > 0:
                j = k - n_bins
                if flat_todo[j]:
                    ph[j] = ph[k] - 0.5 * (dt[k] + dt[j])
                    flat_todo[j] = False
                    heapq.heappush(heap, (-s_flat[j], j))
            # Along frequency.
            if m + 1 < n_bins:
                j = k + 1
                if flat_todo[j]:
                    ph[j] = ph[k] + 0.5 * (df[k] + df[j])
                    flat_todo[j] = False
                    heapq.heappush(heap, (-s_flat[j], j))
            if m > 0:
                j = k - 1
                if flat_todo[j]:
                    ph[j] = ph[k] - 0.5 * (df[k] + df[j])
                    flat_todo[j] = False
                    heapq.heappush(heap, (-s_flat[j], j))
    return ph.reshape(S.shape)


def pghi(S: np.ndarray, *, n_fft: int = signals.N_FFT, hop: int = signals.HOP,
         tol: float = 1e-6, seed: int = 0) -> np.ndarray:
    """Waveform from magnitude ``S`` [frames, bins] by offline PGHI."""
    phase = pghi_phase(S, n_fft=n_fft, hop=hop, tol=tol, seed=seed)
    return signals.istft(S * np.exp(1j * phase), n_fft=n_fft, hop=hop)
