"""Voice allocation and envelopes.

Voices live in rows ``0..n_active-1`` of the engine's per-voice arrays (phase state,
overlap-add accumulators): the active set is kept *packed*, so every per-hop stage
processes a prefix of its buffers with no index arrays. Freeing a voice moves the
last active row into the hole (``on_move(src, dst)`` tells the engine to copy
its DSP state).

Envelope: linear attack to 1, exponential decay to the sustain level, exponential
release (-60 dB after ``release_ms``), then a linear fade to exact zero over one
hop, after which the voice is freed. Gains are computed at hop boundaries and the
engine interpolates them per sample, so there is no zipper noise.

Hard cap: at most ``polyphony`` rows are rendered, releasing voices included. A note-on
that finds every row taken *cuts* one voice — the oldest release first, else the oldest
sounding note (counted as stolen) — with a linear fade of ``steal_ms`` (at most one hop)
after which its row is freed, and the note waits for that row: it starts at the next hop
(``waiting``; a note-off or all-notes-off before then cancels it). A retriggered note
releases its old voice with the same fast fade.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["Voice", "VoiceBank", "Envelope", "Waiting"]

ATTACK, DECAY, SUSTAIN, RELEASE, FADE, DONE = range(6)
_RELEASE_FLOOR = 1e-4  # -80 dB: from here a linear fade to 0 over one hop


class Envelope:
    """ADSR settings (ms, sustain as a 0..1 level) and the per-hop step."""

    def __init__(self, attack_ms=5.0, decay_ms=200.0, sustain_level=0.8, release_ms=300.0, steal_ms=8.0):
        self.attack_ms = float(attack_ms)
        self.decay_ms = float(decay_ms)
        self.sustain_level = float(sustain_level)
        self.release_ms = float(release_ms)
        self.steal_ms = float(steal_ms)

    def step(self, v: "Voice", hop_ms: float) -> float:
        """Advance ``v`` by one hop; return its level at the end of the hop.

        Sets ``v.knee``: the fraction of the hop after which the per-sample ramp
        has reached that level (1.0 = a straight ramp over the whole hop; less
        for attacks and releases shorter than the hop, so they keep their length).
        """
        lvl = v.level
        st = v.stage
        v.knee = 1.0
        if st == ATTACK:
            rest_ms = (1.0 - lvl) * self.attack_ms  # time left to full level
            if rest_ms <= hop_ms:
                v.knee = max(rest_ms / hop_ms, 1e-6)
                lvl = 1.0
                st = DECAY
            else:
                lvl += hop_ms / self.attack_ms
        elif st == DECAY:
            s = self.sustain_level
            if self.decay_ms <= 0.0:
                lvl = s
            else:
                # -60 dB of the distance to sustain after decay_ms
                k = math.exp(-6.907755 * hop_ms / self.decay_ms)
                lvl = s + (lvl - s) * k
            if abs(lvl - s) < 1e-4:
                lvl = s
                st = SUSTAIN
        elif st == SUSTAIN:
            lvl = self.sustain_level
        elif st == RELEASE:
            ms = v.release_ms
            if v.cut:  # freeing its row for a waiting note: silent by the end of this hop
                ms = min(ms, hop_ms)
            if ms <= hop_ms:  # short release (or a steal): a linear fade of ms
                v.knee = max(ms / hop_ms, 1e-6)
                lvl = 0.0
            else:
                lvl *= math.exp(-6.907755 * hop_ms / ms)
            if lvl <= _RELEASE_FLOOR:
                st = DONE if v.cut and lvl == 0.0 else FADE
        elif st == FADE:
            lvl = 0.0
            st = DONE
        v.stage = st
        v.level = lvl
        return lvl


class Voice:
    __slots__ = ("note", "velocity_gain", "stage", "level", "age", "held", "sustained",
                 "release_ms", "stolen", "primed", "knee", "cut")

    def __init__(self):
        self.note = -1
        self.velocity_gain = 0.0
        self.stage = DONE
        self.level = 0.0
        self.age = 0
        self.held = False  # key down
        self.sustained = False  # key up but pedal down
        self.release_ms = 0.0
        self.stolen = False
        self.primed = False
        self.knee = 1.0
        self.cut = False  # faded out to free its row for a waiting note


class Waiting:
    """A note-on waiting for a row (the hard cap was reached); starts at the next hop."""

    __slots__ = ("note", "velocity", "age", "held", "sustained")

    def __init__(self, note: int, velocity: int, age: int):
        self.note = note
        self.velocity = velocity
        self.age = age
        self.held = True
        self.sustained = False


class VoiceBank:
    """Packed voices: ``voices[0:n_active]`` sound, the rest are free.

    Parameters
    ----------
    n_rows : int
        Physical rows (max polyphony plus spares for voices fading out after a steal).
    polyphony : int
        Rows rendered at most, releasing voices included (see the module docstring).
    on_move : callable(src, dst)
        Called when row ``src`` is moved into row ``dst``.
    """

    def __init__(self, n_rows: int, polyphony: int, on_move):
        self.voices = [Voice() for _ in range(n_rows)]
        self.n_rows = n_rows
        self.polyphony = polyphony
        self.n_active = 0
        self.env = Envelope()
        self.velocity_curve = 1.0
        self.sustain = False
        self._on_move = on_move
        self._clock = 0
        self.stolen_count = 0  # sounding notes cut or stolen, waiting notes dropped
        self.cut_count = 0  # voices cut to free a row (releases and sounding notes)
        self.waiting: list[Waiting] = []
        # per-hop gains (start, end) for the packed rows
        self.g0 = np.zeros(n_rows)
        self.g1 = np.zeros(n_rows)
        self.knee = np.ones(n_rows)  # ramp reaches g1 at this fraction of the hop
        self.n_knee = 0  # rows with knee < 1 this hop

    # ------------------------------------------------------------------ events
    def velocity_gain(self, velocity: int) -> float:
        v = min(max(velocity, 1), 127) / 127.0
        return v ** self.velocity_curve

    def note_on(self, note: int, velocity: int) -> int | None:
        """Start a note; returns its row, or None when it waits for a row (next hop)."""
        self._clock += 1
        # retrigger of a sounding note: release the old one quickly (a new voice starts)
        for i in range(self.n_active):
            v = self.voices[i]
            if v.note == note and v.stage < RELEASE and not v.stolen:
                self._release(v, self.env.steal_ms)
                v.stolen = True
        if self.waiting:  # the same key already waiting: this note-on replaces it
            self.waiting = [w for w in self.waiting if w.note != note]
        if self.waiting or self.n_active >= self.polyphony:
            self.waiting.append(Waiting(note, velocity, self._clock))
            if len(self.waiting) > self.polyphony:  # more new notes than rows: drop the oldest
                self.waiting.pop(0)
                self.stolen_count += 1
            self._make_room()
            return None
        return self._start(note, velocity, self._clock)

    def _start(self, note: int, velocity: int, age: int) -> int:
        """Start a note in a free row (callers keep ``n_active < polyphony``)."""
        if self.n_active >= self.n_rows:
            # no row at all: reuse the oldest row outright (hard cut; not reached
            # while polyphony <= n_rows)
            row = min(range(self.n_active), key=lambda i: self.voices[i].age)
        else:
            row = self.n_active
            self.n_active += 1
        v = self.voices[row]
        v.note = note
        v.velocity_gain = self.velocity_gain(velocity)
        v.stage = ATTACK
        v.level = 0.0
        v.age = age
        v.held = True
        v.sustained = False
        v.stolen = False
        v.primed = False
        v.cut = False
        self.g0[row] = 0.0
        return row

    def _make_room(self) -> None:
        """Cut voices until the rows freed by the next hop cover the waiting notes."""
        free = max(0, self.polyphony - self.n_active)
        freeing = sum(1 for i in range(self.n_active)
                      if self.voices[i].cut or self.voices[i].stage >= FADE)
        need = len(self.waiting) - free - freeing
        if need <= 0:
            return
        live = [self.voices[i] for i in range(self.n_active)
                if not self.voices[i].cut and self.voices[i].stage < FADE]
        # the oldest releases first, then the oldest sounding notes
        live.sort(key=lambda v: (v.stage < RELEASE, v.age))
        for v in live[:need]:
            if v.stage < RELEASE:
                self.stolen_count += 1
            self._cut(v)

    def _cut(self, v: Voice) -> None:
        ms = self.env.steal_ms
        if v.stage == RELEASE:
            ms = min(ms, v.release_ms)
        self._release(v, ms)
        v.stolen = True
        v.cut = True
        v.held = False
        v.sustained = False
        self.cut_count += 1

    def note_off(self, note: int, sustain: bool | None = None) -> None:
        """Key up. ``sustain=False``: the key went up before the pedal went down (a
        note-off applied late), so the pedal does not hold it."""
        pedal = self.sustain and sustain is not False
        for i in range(self.n_active):
            v = self.voices[i]
            if v.note == note and v.held:
                v.held = False
                if pedal:
                    v.sustained = True
                elif v.stage < RELEASE:
                    self._release(v, self.env.release_ms)
        if self.waiting:
            for w in self.waiting:
                if w.note == note and w.held:
                    w.held = False
                    w.sustained = pedal
            self.waiting = [w for w in self.waiting if w.held or w.sustained]

    def set_sustain(self, on: bool) -> None:
        self.sustain = bool(on)
        if not on:
            for i in range(self.n_active):
                v = self.voices[i]
                if v.sustained:
                    v.sustained = False
                    if v.stage < RELEASE:
                        self._release(v, self.env.release_ms)
            if self.waiting:
                self.waiting = [w for w in self.waiting if w.held]

    def all_notes_off(self) -> None:
        """Release every voice (pedal too); voices already releasing slowly get
        the current release time if it is shorter."""
        self.sustain = False
        self.waiting.clear()
        for i in range(self.n_active):
            v = self.voices[i]
            v.held = False
            v.sustained = False
            if v.stage < RELEASE:
                self._release(v, self.env.release_ms)
            elif v.stage == RELEASE:
                v.release_ms = min(v.release_ms, self.env.release_ms)

    def set_polyphony(self, n: int) -> None:
        """New cap; rows beyond it are cut (oldest releases first, then the oldest notes)."""
        self.polyphony = n
        while len(self.waiting) > n:
            self.waiting.pop(0)
            self.stolen_count += 1
        live = [self.voices[i] for i in range(self.n_active)
                if not self.voices[i].cut and self.voices[i].stage < FADE]
        live.sort(key=lambda v: (v.stage < RELEASE, v.age))
        for v in live[: max(0, len(live) - n)]:
            if v.stage < RELEASE:
                self.stolen_count += 1
            self._cut(v)
        self._make_room()

    def take_over(self, other: "VoiceBank") -> None:
        """Continue the notes of ``other`` here (a model switch).

        Its held or pedal-held voices start in this bank at their level (heading for
        sustain; a key already up stays up, held by the pedal only), its waiting notes
        wait here, and polyphony and pedal carry over. ``other`` keeps its voices:
        :meth:`fade_out_all` them.
        """
        self.polyphony = other.polyphony
        self.sustain = other.sustain
        for note, vgain, level, held in other.active_notes():
            row = self.note_on(note, 127)
            v = self.voices[row]
            v.velocity_gain = vgain
            v.level = level
            v.stage = DECAY  # toward sustain; the level carries over
            v.held = held
            v.sustained = not held
        for w in other.waiting:  # notes that were waiting for a row of the other bank
            row = self.note_on(w.note, w.velocity)
            v = self.voices[row] if row is not None else self.waiting[-1]
            v.held = w.held
            v.sustained = w.sustained
        other.waiting.clear()

    def fade_out_all(self) -> None:
        """Let every voice go (keys and pedal) with the fast fade of ``env.steal_ms``."""
        for i in range(self.n_active):
            v = self.voices[i]
            v.held = False
            v.sustained = False
            self._release(v, self.env.steal_ms)

    def _release(self, v: Voice, ms: float) -> None:
        v.stage = RELEASE
        v.release_ms = max(float(ms), 0.0)
        if v.level <= _RELEASE_FLOOR:
            v.stage = FADE

    # ------------------------------------------------------------------ per hop
    def step(self, hop_ms: float) -> int:
        """Advance envelopes one hop; fill ``g0``/``g1`` (start/end gains) for rows.

        Returns the number of rows to render this hop. Voices that finished in the
        *previous* hop are freed first (rows packed).
        """
        i = 0
        while i < self.n_active:
            v = self.voices[i]
            if v.stage == DONE:
                last = self.n_active - 1
                if i != last:
                    self.voices[i], self.voices[last] = self.voices[last], self.voices[i]
                    self.g0[i] = self.g0[last]
                    self._on_move(last, i)
                self.n_active -= 1
                continue
            i += 1
        if self.waiting:  # notes that waited for a row: their rows were freed just now
            while self.waiting and self.n_active < min(self.polyphony, self.n_rows):
                w = self.waiting.pop(0)
                row = self._start(w.note, w.velocity, w.age)
                v = self.voices[row]
                v.held = w.held
                v.sustained = w.sustained
            self._make_room()
        n_knee = 0
        for i in range(self.n_active):
            v = self.voices[i]
            start = v.level * v.velocity_gain
            end = self.env.step(v, hop_ms) * v.velocity_gain
            self.g0[i] = start
            self.g1[i] = end
            self.knee[i] = v.knee
            if v.knee < 1.0:
                n_knee += 1
        self.n_knee = n_knee
        return self.n_active

    def active_notes(self) -> list[tuple[int, float, float, bool]]:
        """(note, velocity_gain, level, held) of held/sustained voices (for a model switch).

        ``held`` is False for a voice kept only by the sustain pedal (key already up).
        """
        return [(v.note, v.velocity_gain, v.level, v.held) for v in self.voices[: self.n_active]
                if (v.held or v.sustained) and v.stage < RELEASE]
