"""LFOs and the MIDI clock they follow (docs/modulation.md).

Pure functions of time: ``LfoBank.values(now, clock)`` gives, for every target, what
the LFOs add to it at ``now``. Nothing here keeps a thread or touches the engine; the
Mapper calls it from the control loop (``Mapper.tick``) and sends what moved.

A free-running LFO's phase is ``phase + rate * (now - t0)``. A synced LFO's phase is
``beat / beats``: the beat position comes from the MIDI clock (24 pulses per quarter
note), counted since the last Start (or the first pulse), plus the fraction of the
pulse in progress estimated from the smoothed pulse period — so the LFO moves
continuously between pulses and its period is the clock's beat. Until a clock
arrives (or after it stops for more than a few pulses) the beat runs at the LFO's
``tempo`` from the last known position.
"""

from __future__ import annotations

import math

__all__ = ["ClockFollower", "LfoBank", "lfo_wave", "PPQN"]

PPQN = 24  # MIDI clock pulses per quarter note


class ClockFollower:
    """Beat position from MIDI clock messages (``clock``, ``start``, ``stop``, ``continue``)."""

    def __init__(self):
        self.pulses = 0  # since Start (or the first pulse)
        self.last_t: float | None = None
        self.period: float | None = None  # smoothed seconds per pulse
        self.running = False
        self.received = 0

    def message(self, kind: str, now: float) -> None:
        if kind == "clock":
            self.received += 1
            if self.last_t is not None and self.running:
                dt = now - self.last_t
                if 0.0 < dt < 0.25:  # slower than 10 BPM: a gap, not a tempo
                    # one-pole over ~8 pulses: jitter of a few ms averages out within a beat
                    self.period = dt if self.period is None else self.period + 0.125 * (dt - self.period)
                self.pulses += 1
            self.running = True
            self.last_t = now
        elif kind == "start":
            self.pulses = 0
            self.last_t = None
            self.running = True
        elif kind == "continue":
            self.running = True
            self.last_t = None
        elif kind == "stop":
            self.running = False

    @property
    def bpm(self) -> float | None:
        return None if not self.period else 60.0 / (self.period * PPQN)

    def beat(self, now: float) -> float | None:
        """Beats since Start at ``now``, or None when no clock has been heard."""
        if self.last_t is None or self.period is None:
            return None
        frac = (now - self.last_t) / self.period
        if not self.running:
            frac = 0.0
        frac = min(max(frac, 0.0), 1.0)  # never run past the next pulse
        return (self.pulses + frac) / PPQN


def _hash01(seed: int, k: int) -> float:
    """A repeatable pseudo-random number in -1..1 for cycle ``k`` (random-smooth shape)."""
    x = (k * 0x9E3779B1 + seed * 0x85EBCA77 + 0x165667B1) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x2C1B3C6D) & 0xFFFFFFFF
    x ^= x >> 12
    x = (x * 0x297A2D39) & 0xFFFFFFFF
    x ^= x >> 15
    return x / 2147483647.5 - 1.0


def lfo_wave(shape: str, phase: float, seed: int = 0) -> float:
    """The shape's value (-1..1) at ``phase`` (in cycles)."""
    if shape == "sine":
        return math.sin(2.0 * math.pi * phase)
    frac = phase - math.floor(phase)
    if shape == "triangle":  # 0 at phase 0, rising like the sine
        if frac < 0.25:
            return 4.0 * frac
        return 2.0 - 4.0 * frac if frac < 0.75 else 4.0 * frac - 4.0
    # random-smooth: a new random value every cycle, cosine-interpolated (no corner)
    k = math.floor(phase)
    a, b = _hash01(seed, k), _hash01(seed, k + 1)
    w = 0.5 - 0.5 * math.cos(math.pi * frac)
    return a + (b - a) * w


class LfoBank:
    """The mapping's LFOs with their run-time depth/offset (moved by knobs)."""

    def __init__(self):
        self.lfos: tuple = ()
        self.synced = False
        self._depth: list = []
        self._offset: list = []
        self._t0 = 0.0
        self._free_beat0: tuple | None = None  # (time, beat) where the free-running beat started

    def configure(self, lfos, now: float) -> None:
        self.lfos = tuple(lfos)
        self.synced = any(lfo.beats > 0 for lfo in self.lfos)
        self._depth = [lfo.depth for lfo in self.lfos]
        self._offset = [lfo.offset for lfo in self.lfos]
        self._t0 = now
        self._free_beat0 = None

    def set_field(self, index: int, fieldname: str, value: float) -> None:
        if 0 <= index < len(self.lfos):
            (self._depth if fieldname == "depth" else self._offset)[index] = float(value)

    def phase(self, lfo, now: float, clock: ClockFollower | None) -> float:
        if lfo.beats <= 0:
            return lfo.phase + lfo.rate_hz * (now - self._t0)
        beat = clock.beat(now) if clock is not None else None
        if beat is None:  # no clock yet: the LFO's own tempo
            beat = (now - self._t0) * lfo.tempo / 60.0
        return lfo.phase + beat / lfo.beats

    def values(self, now: float, clock: ClockFollower | None = None) -> dict:
        """Target -> sum of (offset + depth * wave) of the LFOs on it."""
        out: dict = {}
        for i, lfo in enumerate(self.lfos):
            v = self._offset[i] + self._depth[i] * lfo_wave(lfo.shape, self.phase(lfo, now, clock), seed=i)
            out[lfo.target] = out.get(lfo.target, 0.0) + v
        return out
