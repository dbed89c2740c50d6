"""The Mapper: MIDI messages in, Engine control calls out, as a validated mapping says.

``Mapper(mapping, engine)`` is the one place where MIDI meets the instrument, both for
``canne render`` (a MIDI file) and ``canne run`` (live ports). ``handle(msg)`` takes one
``mido.Message`` and never raises: clock, active sensing, sysex and anything it does
not understand are dropped (and counted). It is called from one control thread (never
from the audio callback); ``set_mapping`` (hot reload) may come from another thread and
swaps the whole mapping at once, re-arming soft takeover.

Program changes: the Mapper finds the program in the ``programs:`` table and hands it
to ``on_program`` (the owner's program switcher, ``daemon.app.runtime.ProgramSwitcher``,
which loads the model and mapping off the MIDI path and switches engine and Mapper
under :attr:`Mapper.lock`). The Mapper never loads a model itself. Without an
``on_program`` a program change only recalls a snapshot (``snapshots.program_change``).

The latent target has one owner, the Mapper: :attr:`Mapper.latents` (the performer's
values, before LFO offsets) is the only copy that is read. The engine's latent target is
written from it alone (``set_latent`` / ``set_latents`` plus the LFO offsets) and never
read back; the engine only smooths toward it. After ``engine.set_model`` the switcher's
``set_mapping`` re-sends the Mapper's latent for the new model.

Soft takeover works in *knob position* (0..1, after ``invert``, before curve and range):
the Mapper remembers the value it last sent to every target, finds where a control's
knob would have to be to produce it (``Control.position_of``) and

- ``jump``: follows the knob at once;
- ``pickup``: ignores the knob until it reaches (or crosses) that position;
- ``scale``: moves the value toward the knob's end stop in proportion to the knob's
  movement, so value and knob meet at the end (Ableton's "Value Scaling").

A control whose target was changed by something else (another knob, an encoder, a
program change, a reload) is re-armed automatically.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from pathlib import Path

from daemon.core.engine import PARAMS as ENGINE_PARAMS
from daemon.control.mapping import PARAMS, Control, Mapping, Program, Snapshot, decode_relative, load_mapping_text
from daemon.control.modulation import ClockFollower, LfoBank

__all__ = ["Mapper", "TAKEOVER_TOLERANCE", "SNAPSHOT_PARAMS"]

log = logging.getLogger(__name__)

PARAMS_LIMITS = {spec.engine_name: spec.limits for spec in PARAMS.values()}
PARAMS_DEFAULTS = {name: spec[0] for name, spec in ENGINE_PARAMS.items()}

# A knob within this distance of the target's position picks it up (3/127 ≈ 2.4 %).
TAKEOVER_TOLERANCE = 3.0 / 127.0

_FAST_DROP = frozenset(
    ("active_sensing", "sysex", "songpos", "song_select", "quarter_frame", "tune_request", "reset")
)
_CLOCK = frozenset(("clock", "start", "stop", "continue"))
#: Engine parameters a snapshot stores (not smoothing: the glide belongs to the performance).
SNAPSHOT_PARAMS = tuple(spec.engine_name for name, spec in PARAMS.items()
                        if not name.startswith("effect_") and name != "smoothing")
_LFO_EMIT_S = 0.005  # LFO values go to the engine at most every 5 ms (the engine applies them per hop)
_ALL_NOTES_OFF_CCS = (120, 123)  # all sound off, all notes off (channel mode messages)


class _Runtime:
    """Mutable per-control state: takeover and 14-bit bookkeeping."""

    __slots__ = ("control", "engaged", "prev", "last_value", "msb")

    def __init__(self, control: Control):
        self.control = control
        self.engaged = False
        self.prev: float | None = None
        self.last_value: float | None = None
        self.msb = [-1] * 16  # 14-bit: last MSB per channel (-1 = none yet)


class _State:
    """Everything derived from one Mapping; replaced as a whole on a swap."""

    __slots__ = ("mapping", "by_cc", "by_lsb", "runtimes", "by_source")

    def __init__(self, mapping: Mapping):
        self.mapping = mapping
        self.runtimes = [_Runtime(c) for c in mapping.controls]
        by_cc: dict = {}
        by_lsb: dict = {}
        by_source: dict = {}
        for rt in self.runtimes:
            c = rt.control
            if c.source != "cc":
                by_source.setdefault(c.source, []).append(rt)
                continue
            for ch in c.channels:
                by_cc.setdefault(ch * 128 + c.cc, []).append(rt)
                if c.resolution == 14:
                    by_lsb.setdefault(ch * 128 + c.cc + 32, []).append(rt)
        self.by_cc = {k: tuple(v) for k, v in by_cc.items()}
        self.by_lsb = {k: tuple(v) for k, v in by_lsb.items()}
        self.by_source = {k: tuple(v) for k, v in by_source.items()}


class Mapper:
    """Turns mido messages into Engine calls according to a ``Mapping``.

    Parameters
    ----------
    mapping : daemon.control.mapping.Mapping
        From ``load_mapping(path, model)``; ``mapping.model`` is the model the engine
        plays now.
    engine : daemon.core.engine.Engine
        Anything with the Engine control API of docs/contracts.md.
    on_program : callable(Program), optional
        Called (under :attr:`lock`, from ``handle``) with the program a program change
        names; it switches model and mapping (``daemon.app.runtime.ProgramSwitcher``
        attaches itself here). May also be set later.
    apply_initial : bool
        Send the mapping's initial latent, params and note settings to the engine now.
    clock : callable() -> float, optional
        The time base of LFOs and MIDI clock (default ``time.monotonic``; ``canne
        render`` passes the position in the file, so offline LFOs are deterministic).
    """

    def __init__(self, mapping: Mapping | None, engine, *, on_program=None, apply_initial: bool = True,
                 clock=None):
        if mapping is None:  # no file: notes and pitch bend only, defaults from the engine's model
            mapping = load_mapping_text("{}", getattr(engine, "model", None), source="<no mapping>")
        self._engine = engine
        self._now = clock or time.monotonic
        self.on_program = on_program
        self._lock = threading.RLock()
        self._latents = [float(v) for v in mapping.initial_latent]
        # Current engine parameter values, when the engine says (an optional read-only
        # ``params`` dict); otherwise a parameter's value is known once we set it.
        known = getattr(engine, "params", None)
        self._params: dict = {k: float(v) for k, v in known.items()} if isinstance(known, dict) else {}
        self._programs: tuple = mapping.programs
        self.handled = 0
        self.dropped = 0
        self.snapshot_recalls = 0
        self.snapshot_stores = 0
        self.snapshot_saves = 0
        self.snapshot_errors = 0
        self._snapshots: dict = {}  # slot -> Snapshot (the file's, then what was stored)
        self._morph_pair: tuple | None = None  # (from, to) set at run time (OSC), else the file's
        self.clock = ClockFollower()
        self._lfos = LfoBank()
        self._mod: dict = {}  # target -> modulation added to the value sent to the engine
        self._t_emit = -1.0
        self._mpe_bend = [0.0] * 16  # MPE: the member channel's per-note bend, semitones
        self._mpe_notes: dict = {}  # member channel -> {note: released?}
        self._save_lock = threading.Lock()
        self._state = _State(mapping)
        self._configure(mapping, previous=None if apply_initial else mapping, model_changed=apply_initial)

    # ------------------------------------------------------------------ public API
    @property
    def mapping(self) -> Mapping:
        """The mapping in force now."""
        return self._state.mapping

    @property
    def model(self):
        """The model the current mapping was validated against (the engine's model)."""
        return self._state.mapping.model

    @property
    def latents(self) -> tuple:
        """The latent target (the one copy; the engine's target is this plus LFO offsets)."""
        return tuple(self._latents)

    @property
    def lock(self) -> threading.RLock:
        """Held by ``handle`` and every control call; a program switcher holds it while it
        switches the engine's model and the mapping, so no message lands in between."""
        return self._lock

    @property
    def params(self) -> dict:
        """Engine parameters last sent by this Mapper (engine names)."""
        return dict(self._params)

    @property
    def stats(self) -> dict:
        return {"handled": self.handled, "dropped": self.dropped}

    def set_mapping(self, mapping: Mapping, *, if_same_source: bool = False) -> bool:
        """Swap to a new mapping atomically (hot reload) and re-arm soft takeover.

        Note settings are re-sent; the initial latent and ``params`` are re-sent only
        where they differ from the previous mapping's (an edit is heard; an unrelated
        edit does not reset what the knobs did). A model different from the current
        one re-initialises the latent (the caller must also ``engine.set_model`` it, under
        :attr:`lock`, as ``daemon.app.runtime.ProgramSwitcher`` does).

        ``if_same_source=True`` (hot reload): swap only if the mapping in force still
        comes from the same file and was validated against the same model as
        ``mapping``; a program change that got in first wins. Returns whether the
        mapping was swapped.
        """
        with self._lock:
            old = self._state.mapping
            if if_same_source and (mapping.model is not old.model
                                   or (old.path is not None and old.path != mapping.path)):
                return False
            model_changed = mapping.model is not old.model or mapping.latent_dim != old.latent_dim
            self._state = _State(mapping)
            if mapping.programs:
                self._programs = mapping.programs
            self._configure(mapping, previous=old, model_changed=model_changed)
            return True

    def rearm(self) -> None:
        """Re-arm soft takeover for every control (e.g. after a controller reconnects)."""
        with self._lock:
            for rt in self._state.runtimes:
                rt.engaged = False
                rt.prev = None
                rt.msb = [-1] * 16

    def is_absolute_cc(self, channel: int, control: int) -> bool:
        """May values of this CC be coalesced (only the newest of a batch kept)?

        True for 7-bit absolute knobs and CCs the mapping ignores; False for relative
        encoders (every tick counts), 14-bit halves (MSB/LSB pairing) and the sustain
        pedal (every press counts).
        """
        st = self._state
        m = st.mapping
        if control == m.sustain_cc and channel in m.sustain_channels:
            return False
        key = channel * 128 + control
        if key in st.by_lsb:
            return False
        for rt in st.by_cc.get(key, ()):
            if rt.control.resolution == 14 or rt.control.encoder != "absolute":
                return False
        return True

    def handle(self, msg, now: float | None = None) -> None:
        """Apply one mido message. Never raises; unknown or invalid messages are dropped.

        ``now`` (seconds, the Mapper's clock by default) times MIDI clock messages."""
        try:
            t = msg.type
            if t == "note_on" and msg.velocity == 0:
                t = "note_off"  # MIDI's running-status note-off: the one place it is read so
            if t in _FAST_DROP:
                self.dropped += 1
                return
            if t in _CLOCK:
                self.clock.message(t, self._now() if now is None else now)
                if self._lfos.synced:
                    self.handled += 1
                else:
                    self.dropped += 1
                return
            with self._lock:
                st = self._state
                if t == "control_change":
                    if not self._snapshot_cc(st, msg.channel, msg.control, msg.value):
                        self._control_change(st, msg.channel, msg.control, msg.value)
                elif t == "note_on":
                    notes = st.mapping.notes
                    action = st.mapping.snapshots.key_action("note", msg.channel, msg.note)
                    if action is not None:
                        self._snapshot_action(*action)
                    elif msg.channel in notes.channels:
                        self._mpe_on(st, msg.channel, msg.note)
                        self._note_on_sources(st, msg.channel, msg.velocity)
                        vel = 127 if notes.velocity_curve == "fixed" else msg.velocity
                        self._engine.note_on(msg.note, vel)
                elif t == "note_off":
                    if st.mapping.snapshots.key_action("note", msg.channel, msg.note) is not None:
                        pass  # the release of a snapshot key
                    elif msg.channel in st.mapping.notes.channels:
                        self._mpe_off(st, msg.channel, msg.note)
                        self._engine.note_off(msg.note)
                elif t in ("aftertouch", "polytouch"):
                    rts = st.by_source.get("aftertouch" if t == "aftertouch" else "poly_aftertouch")
                    used = False
                    for rt in rts or ():
                        if msg.channel in rt.control.channels:
                            self._absolute(rt, msg.value / 127.0)
                            used = True
                    if not used:
                        self.dropped += 1
                        return
                elif t == "pitchwheel":
                    m = st.mapping
                    p = msg.pitch
                    frac = p / 8191.0 if p > 0 else p / 8192.0
                    if m.mpe is not None and msg.channel in m.mpe.members:
                        self._mpe_pitch(m.mpe, msg.channel, frac * m.mpe.bend_range)
                    elif m.pitch_bend_range > 0 and msg.channel in m.pitch_bend_channels:
                        self._engine.set_pitch_bend(frac * m.pitch_bend_range)
                elif t == "program_change":
                    if not self._program_change(msg.program) and st.mapping.snapshots.program_change:
                        self.recall_snapshot(msg.program)
                else:
                    self.dropped += 1
                    return
            self.handled += 1
        except Exception:  # never let a bad message reach the caller (MIDI thread)
            self.dropped += 1

    def switch_program(self, number: int) -> bool:
        """Hand program ``number`` to ``on_program``; False if the table names none (or no
        switcher is attached)."""
        with self._lock:
            return self._program_change(number)

    def program(self, number: int) -> Program | None:
        """Program ``number`` of the programs table in force (the last mapping that had one)."""
        for p in self._programs:
            if p.number == number:
                return p
        return None

    # ------------------------------------------------------------------ OSC-style direct control
    # (daemon.adapters.osc calls these from the control loop; each may raise ValueError on a bad value)
    def set_latent(self, index: int, value: float) -> None:
        """Move latent neuron ``index`` to ``value`` (as a knob in 'jump' mode would)."""
        value = float(value)
        if not math.isfinite(value):
            raise ValueError("not a finite number")
        with self._lock:
            if not 0 <= int(index) < len(self._latents):
                raise ValueError(f"latent index {index}: must be 0..{len(self._latents) - 1}")
            self._latents[int(index)] = value
            self._engine.set_latent(int(index), value + self._mod.get(("neuron", int(index)), 0.0))

    def set_latents(self, values) -> None:
        vals = [float(v) for v in values]
        if len(vals) != len(self._latents) or not all(math.isfinite(v) for v in vals):
            raise ValueError(f"needs {len(self._latents)} finite numbers")
        with self._lock:
            self._latents = vals
            self._send_latents()

    def set_param(self, name: str, value: float) -> None:
        """Set a parameter by its mapping name (``gain``, ``attack``...) or engine name."""
        value = float(value)
        if not math.isfinite(value):
            raise ValueError("not a finite number")
        spec = PARAMS.get(name)
        engine_name = spec.engine_name if spec is not None else name
        known = {p.engine_name: p for p in PARAMS.values()}
        if engine_name not in known:
            raise ValueError(f"unknown parameter {name!r}")
        lo, hi = known[engine_name].limits
        value = min(max(value, lo), hi)
        with self._lock:
            self._params[engine_name] = value
            self._send_param(engine_name, value)

    def note(self, note: int, velocity: int) -> None:
        """Play (velocity 1..127) or release (0) a note, as the mapping's keys would."""
        note, velocity = int(note), int(velocity)
        if not 0 <= note <= 127 or not 0 <= velocity <= 127:
            raise ValueError("note and velocity must be 0..127")
        with self._lock:
            if velocity == 0:
                self._engine.note_off(note)
            else:
                self._note_on_sources(self._state, None, velocity)
                vel = 127 if self._state.mapping.notes.velocity_curve == "fixed" else velocity
                self._engine.note_on(note, vel)

    def all_notes_off(self) -> None:
        self._engine.all_notes_off()

    @property
    def snapshots(self) -> dict:
        """Slot -> ``Snapshot`` known now (the file's and those stored since)."""
        return dict(self._snapshots)

    def store_snapshot(self, slot: int, name: str | None = None, *, save: bool = False) -> Snapshot:
        """Store the current sound (latents and engine params) in ``slot``.

        ``save=True`` also writes it into the user's copy of the mapping file, on a helper
        thread (see :meth:`save_snapshot`)."""
        slot = int(slot)
        if not 0 <= slot < 128:
            raise ValueError("snapshot slot must be 0..127")
        with self._lock:
            old = self._snapshots.get(slot)
            snap = Snapshot(slot, name or (old.name if old else f"snapshot {slot}"), tuple(self._latents),
                            tuple((k, self._params[k]) for k in SNAPSHOT_PARAMS if k in self._params))
            self._snapshots[slot] = snap
            self.snapshot_stores += 1
        log.info("snapshot %d stored (%s)", slot, snap.name)
        if save:
            threading.Thread(target=self.save_snapshot, args=(slot,), name="canne-snapshot-save",
                             daemon=True).start()
        return snap

    def save_snapshot(self, slot: int, path=None) -> Path | None:
        """Write snapshot ``slot`` into the mapping file (a shipped mapping: into the user's
        copy, see daemon/paths.py); returns the file written, or None (logged)."""
        from daemon import paths
        from daemon.control.snapshots import write_snapshot

        snap = self._snapshots.get(int(slot))
        mapping = self._state.mapping
        src = mapping.path
        if snap is None or (path is None and src is None):
            self.snapshot_errors += 1
            log.warning("snapshot %s not saved: %s", slot, "empty slot" if snap is None else "no mapping file")
            return None
        target = Path(path) if path is not None else (paths.user_copy_of(src) if paths.is_shipped(src) else Path(src))
        try:
            with self._save_lock:
                if path is None and target != Path(src):
                    target.parent.mkdir(parents=True, exist_ok=True)
                write_snapshot(target, snap, model=mapping.model, source=src)
        except Exception as exc:
            self.snapshot_errors += 1
            log.warning("snapshot %d not saved to %s: %s", snap.slot, target, exc)
            return None
        self.snapshot_saves += 1
        log.info("snapshot %d (%s) saved to %s", snap.slot, snap.name, target)
        return target

    def recall_snapshot(self, slot: int) -> bool:
        """Glide to snapshot ``slot`` (through the engine's latent smoothing); False if empty."""
        with self._lock:
            snap = self._snapshots.get(int(slot))
            if snap is None or len(snap.latent) != len(self._latents):
                self.snapshot_errors += 1
                return False
            self._latents = [float(v) for v in snap.latent]
            self._send_latents()
            for name, value in snap.params:
                self._params[name] = value
                self._send_param(name, value)
            self.snapshot_recalls += 1
            return True

    def set_morph_pair(self, a: int, b: int) -> None:
        self._morph_pair = (int(a), int(b))

    @property
    def morph_pair(self) -> tuple:
        sn = self._state.mapping.snapshots
        return self._morph_pair or (sn.morph_from, sn.morph_to)

    def morph(self, x: float) -> bool:
        """Set the sound to ``x`` (0..1) of the way between the two morph snapshots.

        Latents and the parameters both snapshots hold are interpolated linearly; the
        engine's latent smoothing makes the glide. False if a slot is empty."""
        x = float(x)
        if not math.isfinite(x):
            raise ValueError("not a finite number")
        x = min(1.0, max(0.0, x))
        with self._lock:
            a_slot, b_slot = self.morph_pair
            a, b = self._snapshots.get(a_slot), self._snapshots.get(b_slot)
            if a is None or b is None or len(a.latent) != len(self._latents) or len(b.latent) != len(a.latent):
                self.snapshot_errors += 1
                return False
            self._latents = [va + x * (vb - va) for va, vb in zip(a.latent, b.latent)]
            self._send_latents()
            pb = dict(b.params)
            for name, va in a.params:
                if name in pb:
                    v = va + x * (pb[name] - va)
                    self._params[name] = v
                    self._send_param(name, v)
            return True

    # ------------------------------------------------------------------ modulation
    def tick(self, now: float | None = None) -> None:
        """Advance the LFOs to ``now`` (the Mapper's clock by default) and send what moved.

        Called by the control loop every turn (and by offline renderers per block); a
        mapping without LFOs costs one attribute test."""
        if not self._lfos.lfos:
            return
        now = self._now() if now is None else float(now)
        if now - self._t_emit < _LFO_EMIT_S - 1e-6:
            return
        self._t_emit = now
        with self._lock:
            new = self._lfos.values(now, self.clock)
            for target, value in new.items():
                if self._mod.get(target) == value:
                    continue
                self._mod[target] = value
                if target[0] == "neuron":
                    n = target[1]
                    if n < len(self._latents):
                        self._engine.set_latent(n, self._latents[n] + value)
                else:
                    base = self._params.get(target[1])
                    if base is None:
                        base = PARAMS_DEFAULTS.get(target[1], 0.0)
                    self._send_param(target[1], base)

    @property
    def modulation(self) -> dict:
        """Target -> what the LFOs add now (for tests and a status line)."""
        return dict(self._mod)

    # ------------------------------------------------------------------ configuration
    def _configure(self, mapping: Mapping, previous: Mapping | None, model_changed: bool) -> None:
        eng = self._engine
        notes = mapping.notes
        set_fx = getattr(eng, "set_effect_settings", None)  # canne effect: the 'effect:' section
        if set_fx is not None and mapping.effect is not None and (
                previous is None or previous.effect != mapping.effect):
            set_fx(mapping.effect)
        if previous is None or previous.notes != notes:
            eng.set_pitch_mode(notes.pitch_mode, notes.reference_note)
            eng.set_polyphony(notes.polyphony)
            eng.set_param("velocity_curve", float(notes.velocity_exponent))
        if model_changed or previous is None or mapping.initial_latent != previous.initial_latent:
            self._latents = [float(v) for v in mapping.initial_latent]
            self._send_latents()
        old_params = dict(previous.params) if (previous is not None and not model_changed) else {}
        for name, value in mapping.params:
            if old_params.get(name) != value:
                self._params[name] = value
                eng.set_param(name, value)
        if previous is not None and previous.sustain_cc != mapping.sustain_cc:
            eng.set_sustain(False)
        if previous is not None and previous.notes.channels != notes.channels:
            eng.all_notes_off()  # their note-offs may no longer be listened to
        if model_changed and previous is not None:
            self._snapshots = {}  # latents of another model mean nothing here
        for snap in mapping.snapshots.slots:  # the file's slots win over stored ones
            self._snapshots[snap.slot] = snap
        if previous is None or previous.lfos != mapping.lfos:
            self._lfos.configure(mapping.lfos, self._now())
            gone = [t for t in self._mod if t not in {lfo.target for lfo in mapping.lfos}]
            for target in gone:  # an LFO removed: its target goes back to its own value
                del self._mod[target]
                if target[0] == "neuron" and target[1] < len(self._latents):
                    eng.set_latent(target[1], self._latents[target[1]])
                elif target[0] == "param" and target[1] in self._params:
                    eng.set_param(target[1], self._params[target[1]])

    # ------------------------------------------------------------------ CC handling
    def _control_change(self, st: _State, ch: int, cc: int, value: int) -> None:
        key = ch * 128 + cc
        m = st.mapping
        if cc == m.sustain_cc and ch in m.sustain_channels:
            self._engine.set_sustain(value >= 64)
            return
        rts = st.by_cc.get(key)
        if rts is not None:
            for rt in rts:
                c = rt.control
                if c.resolution == 14:
                    rt.msb[ch] = value  # a new MSB resets the LSB to 0
                    self._absolute(rt, (value << 7) / 16383.0)
                elif c.encoder != "absolute":
                    ticks = decode_relative(c.encoder, value)
                    if ticks:
                        self._relative(rt, ticks)
                else:
                    self._absolute(rt, value / 127.0)
        lsbs = st.by_lsb.get(key)
        if lsbs is not None:
            for rt in lsbs:
                msb = rt.msb[ch]
                if msb >= 0:
                    self._absolute(rt, ((msb << 7) | value) / 16383.0)
        if rts is None and lsbs is None and cc in _ALL_NOTES_OFF_CCS and ch in m.notes.channels:
            self._engine.all_notes_off()

    def _current(self, c: Control) -> float | None:
        if c.neuron >= 0:
            return self._latents[c.neuron] if c.neuron < len(self._latents) else None
        return self._params.get(c.engine_param)

    def _set(self, rt: _Runtime, value: float) -> None:
        c = rt.control
        if c.neuron >= 0:
            self._latents[c.neuron] = value
            self._engine.set_latent(c.neuron, value + self._mod.get(("neuron", c.neuron), 0.0))
        elif c.lfo >= 0:
            self._params[c.engine_param] = value
            self._lfos.set_field(c.lfo, c.engine_param.rsplit("_", 1)[1], value)
        else:
            self._params[c.engine_param] = value
            self._send_param(c.engine_param, value)
        rt.last_value = value

    def _send_param(self, name: str, value: float) -> None:
        mod = self._mod.get(("param", name))
        if mod is not None:
            lo, hi = PARAMS_LIMITS.get(name, (-math.inf, math.inf))
            value = min(max(value + mod, lo), hi)
        self._engine.set_param(name, value)

    def _send_latents(self) -> None:
        z = list(self._latents)
        if self._mod:
            for (kind, n), v in self._mod.items():
                if kind == "neuron" and n < len(z):
                    z[n] += v
        self._engine.set_latents(z)

    def _note_on_sources(self, st: _State, channel, velocity: int) -> None:
        for rt in st.by_source.get("velocity", ()):
            if channel is None or channel in rt.control.channels:
                self._absolute(rt, velocity / 127.0)

    # ------------------------------------------------------------------ MPE
    def _mpe_on(self, st: _State, ch: int, note: int) -> None:
        mpe = st.mapping.mpe
        if mpe is None or ch not in mpe.members:
            return
        held = self._mpe_notes.setdefault(ch, {})
        for n in [n for n, released in held.items() if released]:
            del held[n]  # a new note on the channel: bends no longer move released ones
        for other in self._mpe_notes.values():
            other.pop(note, None)
        held[note] = False
        self._engine.set_note_bend(note, self._mpe_bend[ch])  # before the note starts

    def _mpe_off(self, st: _State, ch: int, note: int) -> None:
        held = self._mpe_notes.get(ch)
        if held is not None and note in held:
            held[note] = True  # still bent by its channel while it rings out

    def _mpe_pitch(self, mpe, ch: int, semitones: float) -> None:
        self._mpe_bend[ch] = semitones
        for note in self._mpe_notes.get(ch, ()):
            self._engine.set_note_bend(note, semitones)

    # ------------------------------------------------------------------ snapshots from MIDI
    def _snapshot_cc(self, st: _State, ch: int, cc: int, value: int) -> bool:
        sn = st.mapping.snapshots
        if sn.morph_cc is not None and cc == sn.morph_cc and ch in sn.morph_channels:
            self.morph(value / 127.0)
            return True
        action = sn.key_action("cc", ch, cc)
        if action is None:
            return False
        if value >= 64:
            self._snapshot_action(*action)
        return True

    def _snapshot_action(self, what: str, slot: int) -> None:
        if what == "recall":
            self.recall_snapshot(slot)
        else:
            self.store_snapshot(slot)

    def _absolute(self, rt: _Runtime, pos: float) -> None:
        c = rt.control
        current = self._current(c)
        if c.takeover == "jump" or current is None:
            rt.prev = pos
            rt.engaged = True
            self._set(rt, c.value_at(pos))
            return
        if rt.engaged and rt.last_value is not None and current != rt.last_value:
            rt.engaged = False  # something else moved the target: take over again
        if not rt.engaged:
            q = c.position_of(current)
            prev = rt.prev
            rt.prev = pos
            if abs(pos - q) <= TAKEOVER_TOLERANCE or (prev is not None and (prev - q) * (pos - q) <= 0.0):
                rt.engaged = True
            elif c.takeover == "scale" and prev is not None and pos != prev:
                if pos > prev:
                    q_new = q + (pos - prev) * (1.0 - q) / (1.0 - prev)
                else:
                    q_new = q - (prev - pos) * q / prev
                if abs(q_new - pos) <= TAKEOVER_TOLERANCE:
                    rt.engaged = True
                    q_new = pos
                self._set(rt, c.value_at(q_new))
                return
            else:
                return
        rt.prev = pos
        self._set(rt, c.value_at(pos))

    def _relative(self, rt: _Runtime, ticks: int) -> None:
        c = rt.control
        current = self._current(c)
        q = 0.5 if current is None else c.position_of(current)
        pos = min(1.0, max(0.0, q + ticks * c.step))
        rt.prev = pos
        self._set(rt, c.value_at(pos))

    # ------------------------------------------------------------------ programs
    def _program_change(self, number: int) -> bool:
        prog = self.program(number)
        if prog is None or self.on_program is None:
            return False
        self.on_program(prog)
        return True
