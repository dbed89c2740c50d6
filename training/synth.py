"""A dependency-free synthetic corpus: seeded virtual-analog patches playing scales.

Each patch is an oscillator (band-limited saw, square or pulse built additively, or a
two-operator FM pair), a lowpass spectral tilt, optional vibrato and an ADSR envelope.
Used by the tests and as a quick corpus when no SoundFont is at hand.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

OSCILLATORS = ("saw", "square", "pulse", "fm")


@dataclass(frozen=True)
class SynthPatch:
    name: str
    oscillator: str
    pulse_width: float
    fm_ratio: float
    fm_index: float
    cutoff_harmonic: float  # lowpass corner, in harmonics of f0
    filter_order: int
    vibrato_cents: float
    attack_s: float
    decay_s: float
    sustain: float
    release_s: float

    def to_dict(self) -> dict:
        return asdict(self)


def random_patch(rng: np.random.Generator, index: int) -> SynthPatch:
    osc = OSCILLATORS[int(rng.integers(len(OSCILLATORS)))]
    return SynthPatch(
        name=f"synth{index:03d}-{osc}",
        oscillator=osc,
        pulse_width=float(rng.uniform(0.1, 0.5)),
        fm_ratio=float(rng.choice([0.5, 1.0, 2.0, 3.0, 3.5])),
        fm_index=float(rng.uniform(0.3, 4.0)),
        cutoff_harmonic=float(rng.uniform(2.0, 30.0)),
        filter_order=int(rng.integers(1, 4)),
        vibrato_cents=float(rng.choice([0.0, rng.uniform(5.0, 25.0)])),
        attack_s=float(rng.uniform(0.005, 0.15)),
        decay_s=float(rng.uniform(0.05, 0.5)),
        sustain=float(rng.uniform(0.3, 1.0)),
        release_s=float(rng.uniform(0.05, 0.4)),
    )


def _envelope(p: SynthPatch, n_on: int, n_total: int, sr: int) -> np.ndarray:
    t = np.arange(n_total) / sr
    a, d = max(p.attack_s, 1e-3), max(p.decay_s, 1e-3)
    env = np.where(t < a, t / a, p.sustain + (1.0 - p.sustain) * np.exp(-(t - a) / d))
    t_off = n_on / sr
    level_off = env[min(n_on, n_total) - 1]
    rel = level_off * np.exp(-(t - t_off) / max(p.release_s, 1e-3) * 5.0)
    return np.where(t < t_off, env, rel)


def render_note(p: SynthPatch, note: int, *, sample_rate: int, note_s: float, tail_s: float,
                rng: np.random.Generator) -> np.ndarray:
    """One note, float64 [round((note_s + tail_s) * sample_rate)], peak about 1."""
    sr = sample_rate
    n_on, n = int(note_s * sr), int((note_s + tail_s) * sr)
    t = np.arange(n) / sr
    f0 = 440.0 * 2.0 ** ((note - 69) / 12.0)
    vib = 2.0 ** (p.vibrato_cents / 1200.0 * np.sin(2 * np.pi * 5.5 * t)) if p.vibrato_cents else 1.0
    phase = 2 * np.pi * np.cumsum(f0 * vib * np.ones(n)) / sr + rng.uniform(0, 2 * np.pi)
    if p.oscillator == "fm":
        y = np.sin(phase + p.fm_index * np.sin(p.fm_ratio * phase))
        k_eff = 1.0 + p.fm_ratio * (p.fm_index + 1.0)
        y *= 1.0 / np.sqrt(1.0 + (k_eff / p.cutoff_harmonic) ** (2 * p.filter_order)) + 0.5
    else:
        k = np.arange(1, max(2, int(0.45 * sr / f0)) + 1)
        if p.oscillator == "saw":
            amp = 1.0 / k
        elif p.oscillator == "square":
            amp = np.where(k % 2 == 1, 1.0 / k, 0.0)
        else:
            amp = np.abs(np.sin(np.pi * k * p.pulse_width)) / k
        amp = amp / np.sqrt(1.0 + (k / p.cutoff_harmonic) ** (2 * p.filter_order))
        y = np.zeros(n)
        for kk, aa in zip(k, amp):
            if aa > 1e-4:
                y += aa * np.sin(kk * phase)
    y *= _envelope(p, n_on, n, sr)
    peak = np.max(np.abs(y))
    return y / peak if peak > 0 else y


def render_patch(p: SynthPatch, notes: list[int], *, sample_rate: int, note_s: float = 1.0,
                 tail_s: float = 0.5, seed: int = 0) -> np.ndarray:
    """The patch playing ``notes`` one after another, float32 mono."""
    rng = np.random.default_rng(seed)
    parts = [render_note(p, m, sample_rate=sample_rate, note_s=note_s, tail_s=tail_s, rng=rng)
             for m in notes]
    return (0.5 * np.concatenate(parts)).astype(np.float32)
