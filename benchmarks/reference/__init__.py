"""Baseline phase-reconstruction algorithms, written for the benchmarks from the papers.

Every function takes a magnitude array ``S`` [frames, n_fft//2+1] on the benchmark STFT
grid (``benchmarks.signals``: periodic Hann, phase from the window centre, frame n at
sample n*hop) and returns a waveform whose frame n lines up with ``S[n]`` (no delay).

- :func:`time_only`  — the 2018 CANNe thesis rule: time-direction integration only.
- :func:`pghi`       — offline PGHI (Průša, Balazs, Søndergaard 2017), heap over the whole signal.
- :func:`rtpghi_heap` — causal RTPGHI with a true per-bin heap (Průša & Holighaus 2017), slow.
- :func:`fgla`       — fast Griffin–Lim (Perraudin, Balazs, Søndergaard 2013), α = 0.99.
- :func:`random_phase` — uniform random phase, the floor.
"""

from .gradients import HANN_GAMMA, phase_gradients
from .time_only import time_only
from .pghi import pghi
from .rtpghi_heap import rtpghi_heap
from .fgla import fgla
from .random_phase import random_phase

__all__ = ["HANN_GAMMA", "phase_gradients", "time_only", "pghi", "rtpghi_heap", "fgla", "random_phase"]
