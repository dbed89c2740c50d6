"""Improvised phrases for the ANNe corpus: seeded random melodies per GM program.

The thesis trained its effect on improvisations played on one synthesizer. Here each
GM program plays its own seeded "improvisation" through FluidSynth: a random walk over
a scale (major, minor, pentatonic or blues, random key), rhythms from sixteenths to half
notes at 90-150 BPM, legato and staccato, occasional two-note chords, velocities 50-120,
inside the instrument's comfortable register. Honest about what it is: a generated
stand-in for a player, with the instrument's real samples.
"""

from __future__ import annotations

import numpy as np

SCALES = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10),
    "pentatonic": (0, 2, 4, 7, 9),
    "blues": (0, 3, 5, 6, 7, 10),
}


def register(program: int) -> tuple[int, int]:
    """A comfortable MIDI note range for a GM program family."""
    family = program // 8
    if family == 4:          # bass
        return 28, 55
    if family in (5, 6):     # strings, ensemble
        return 43, 84
    if family == 7:          # brass
        return 45, 79
    if family in (8, 9):     # reed, pipe
        return 52, 88
    return 40, 88


def phrase(program: int, seconds: float, seed: int) -> list[tuple[float, float, int, int]]:
    """Events (start_s, duration_s, note, velocity), sorted by start, within ``seconds``."""
    rng = np.random.default_rng(seed * 1009 + program)
    scale = SCALES[list(SCALES)[int(rng.integers(len(SCALES)))]]
    key = int(rng.integers(12))
    lo, hi = register(program)
    pitches = [n for n in range(lo, hi + 1) if (n - key) % 12 in scale]
    beat = 60.0 / float(rng.uniform(90, 150))
    durations = np.array([0.25, 0.5, 0.75, 1.0, 1.5, 2.0]) * beat
    weights = np.array([2, 5, 1, 4, 1, 2], float)
    i = int(rng.integers(len(pitches) // 3, 2 * len(pitches) // 3))
    t = 0.0
    events = []
    while t < seconds - 0.3:
        d = float(rng.choice(durations, p=weights / weights.sum()))
        i = int(np.clip(i + rng.choice([-3, -2, -1, -1, 1, 1, 2, 3, 0]), 0, len(pitches) - 1))
        gate = float(rng.choice([0.5, 0.9, 1.0]))
        vel = int(rng.integers(50, 121))
        events.append((t, d * gate, pitches[i], vel))
        if rng.random() < 0.12:  # a dyad
            j = int(np.clip(i + rng.choice([2, 3, 4]), 0, len(pitches) - 1))
            events.append((t, d * gate, pitches[j], max(30, vel - 20)))
        if rng.random() < 0.08:  # a breath
            t += float(rng.choice(durations[:3]))
        t += d
    return events
