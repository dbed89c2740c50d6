"""Real-time PGHI with a true per-bin heap, frame by frame (reference, slow).

Průša & Holighaus, "Phase vocoder done right", EUSIPCO 2017 (Algorithm 1), written
from the paper for the benchmarks: it shows what the heap order gives on our signal
set, so the engine's loop-free version (``daemon.core.phase``) can be compared with the
algorithm it approximates. Pure Python, ~10–30 ms per frame: never for real time.

Per output frame n (with lookahead 1 the output frame is the previous one):

- s = log-magnitude; time-direction derivative from ∂s/∂m (centred), frequency-direction
  derivative from ∂s/∂n: second-order backward difference (3s_n − 4s_{n−1} + s_{n−2})/2
  with no lookahead, centred (s_{n+1} − s_{n−1})/2 with one frame of lookahead;
- bins below ``tol`` × the maximum of this and the previous frame get random phase;
- the heap starts with the previous frame's significant bins (their phases known); a
  popped previous-frame bin passes its phase along time to the same bin of this frame
  (trapezoid), a popped current-frame bin passes it along frequency to its undone
  neighbours; when the heap runs dry the strongest undone bin is integrated along time.
"""

from __future__ import annotations

import heapq

import numpy as np

from benchmarks import signals
from .gradients import HANN_GAMMA


def rtpghi_heap_phase(S: np.ndarray, *, n_fft: int = signals.N_FFT, hop: int = signals.HOP,
                      lookahead: int = 0, tol: float = 1e-6, seed: int = 0) -> np.ndarray:
    """Phase [frames, bins] for ``S`` [frames, bins], computed causally frame by frame
    (frame n uses frames ≤ n, or ≤ n+1 with ``lookahead=1``)."""
    if lookahead not in (0, 1):
        raise ValueError(f"lookahead={lookahead!r}: use 0 or 1")
    L, a = n_fft, hop
    lam = HANN_GAMMA * L * L
    n_frames, n_bins = S.shape
    rng = np.random.default_rng(seed)
    floor = 1e-30
    s = np.log(np.maximum(S, floor))
    m_idx = np.arange(n_bins)
    bin_adv = 2.0 * np.pi * a * m_idx / L
    phase = np.zeros(S.shape)
    prev_phase = rng.uniform(-np.pi, np.pi, n_bins)
    prev_tgrad = bin_adv.copy()
    prev_sig = np.zeros(n_bins, bool)
    prev_s = np.full(n_bins, np.log(floor))
    prev_max = 0.0

    def frame_s(k: int) -> np.ndarray:
        return s[k] if 0 <= k < n_frames else np.full(n_bins, np.log(floor))

    for n in range(n_frames):
        sn = s[n]
        if lookahead == 0:
            ds_dn = 0.5 * (3.0 * sn - 4.0 * frame_s(n - 1) + frame_s(n - 2))
        else:
            ds_dn = 0.5 * (frame_s(n + 1) - frame_s(n - 1))
        fgrad = -(lam / (a * L)) * ds_dn
        tgrad = bin_adv + (a * L / lam) * np.gradient(sn)
        mx = float(np.max(S[n]))
        sig = S[n] > tol * max(mx, prev_max)
        ph = rng.uniform(-np.pi, np.pi, n_bins)
        done = ~sig
        # heap entries: (-logmag, frame_flag, bin); frame_flag 0 = previous, 1 = current
        heap = [(-prev_s[m], 0, int(m)) for m in np.flatnonzero(prev_sig)]
        heapq.heapify(heap)
        remaining = int(np.count_nonzero(sig))
        order = None
        while remaining:
            if not heap:
                if order is None:
                    order = iter(np.argsort(-sn).tolist())
                m = next(order)
                while done[m]:
                    m = next(order)
                ph[m] = prev_phase[m] + 0.5 * (prev_tgrad[m] + tgrad[m])
                done[m] = True
                remaining -= 1
                heapq.heappush(heap, (-sn[m], 1, m))
                continue
            _, cur, m = heapq.heappop(heap)
            if cur == 0:
                if not done[m]:
                    ph[m] = prev_phase[m] + 0.5 * (prev_tgrad[m] + tgrad[m])
                    done[m] = True
                    remaining -= 1
                    heapq.heappush(heap, (-sn[m], 1, m))
            else:
                if m + 1 < n_bins and not done[m + 1]:
                    ph[m + 1] = ph[m] + 0.5 * (fgrad[m] + fgrad[m + 1])
                    done[m + 1] = True
                    remaining -= 1
                    heapq.heappush(heap, (-sn[m + 1], 1, m + 1))
                if m > 0 and not done[m - 1]:
                    ph[m - 1] = ph[m] - 0.5 * (fgrad[m] + fgrad[m - 1])
                    done[m - 1] = True
                    remaining -= 1
                    heapq.heappush(heap, (-sn[m - 1], 1, m - 1))
        ph = np.angle(np.exp(1j * ph))
        phase[n] = ph
        prev_phase, prev_tgrad, prev_sig, prev_s, prev_max = ph, tgrad, sig, sn, mx
    return phase


def rtpghi_heap(S: np.ndarray, *, n_fft: int = signals.N_FFT, hop: int = signals.HOP,
                lookahead: int = 0, tol: float = 1e-6, seed: int = 0) -> np.ndarray:
    """Waveform from ``S`` by per-bin-heap RTPGHI, on the analysis grid (frame n of
    the output lines up with ``S[n]``; the streaming delay is not simulated)."""
    phase = rtpghi_heap_phase(S, n_fft=n_fft, hop=hop, lookahead=lookahead, tol=tol, seed=seed)
    return signals.istft(S * np.exp(1j * phase), n_fft=n_fft, hop=hop)
