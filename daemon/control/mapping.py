"""YAML knob mappings: load once, validate once, freeze.

A mapping file says what the performer's controller does to the instrument: which
CC moves which latent neuron (or gain, frequency shift, envelope, smoothing), how the
keys are played (pitch mode, reference note, polyphony, velocity curve), the pitch-bend
range, the sustain pedal, and which model/mapping each program change selects.
The words are the ones musicians know from Ableton Live and Mixxx: *range* (min > max
inverts), *takeover* (jump / pickup / scale), *relative encoders* (signed bit, signed
bit 2, binary offset, two's complement), *14-bit* MSB/LSB pairs. ``docs/mappings.md``
documents every field for performers.

``load_mapping(path, model)`` parses with a safe YAML loader that keeps line numbers,
checks every field against the model's metadata and returns a frozen ``Mapping``.
Any problem raises one ``MappingError`` whose one-line message names the file, the
line, the field, the value and what is allowed. The runtime (``daemon.control.mapper``) only
ever sees the validated form.

Channels are written 1..16 (as musicians count) and stored 0..15 (as mido sends them).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from daemon.core.effect import GAIN_RANGE
from daemon.core.engine import PARAMS as ENGINE_PARAMS
from daemon.errors import MappingError
from daemon.inputfile import format_size, read_input_file, short_path
from daemon.core.pitch import PITCH_MODES

__all__ = [
    "Control",
    "Mapping",
    "NoteSettings",
    "Program",
    "OscSettings",
    "Snapshot",
    "SnapshotSettings",
    "Lfo",
    "MpeSettings",
    "SOURCES",
    "LFO_SHAPES",
    "load_mapping",
    "load_mapping_text",
    "read_mapping_text",
    "MAX_MAPPING_BYTES",
    "MAX_NESTING",
    "MAX_CONTROLS",
    "PARAMS",
    "ENCODERS",
    "TAKEOVER_MODES",
    "PITCH_MODES",
    "decode_relative",
]

FORMAT_VERSION = 1

# Limits of the guarded loading path (docs/mappings.md, "Limits"). A full controller
# mapping is a few kB and 3 levels deep; anything far beyond is refused before parsing.
MAX_MAPPING_BYTES = 1 << 20  # 1 MiB, checked with stat before the file is opened
MAX_NESTING = 64  # lists/sections inside each other
MAX_CONTROLS = 2048  # 128 CCs x 16 channels
_MAX_NUMBER_CHARS = 64  # a number written with more characters is refused unparsed
_MAX_PATH_CHARS = 1024  # a path in programs:
ALL_CHANNELS = frozenset(range(16))

TAKEOVER_MODES = ("jump", "pickup", "scale")
ENCODERS = ("absolute", "signed_bit", "signed_bit_2", "binary_offset", "twos_complement")
CURVES = ("linear", "exp", "log")
VELOCITY_CURVES = {"linear": 1.0, "soft": 0.6, "hard": 1.7, "fixed": 1.0}
# What moves a control besides a CC: channel pressure, polyphonic pressure (the latest
# key's), the velocity of each new note (docs/modulation.md).
SOURCES = ("cc", "aftertouch", "poly_aftertouch", "velocity")
LFO_SHAPES = ("sine", "triangle", "random")
_LFO_FIELDS = ("depth", "offset")
_LFO_PARAM = re.compile(r"^lfo([1-9][0-9]?)_(depth|offset)$")
MAX_SNAPSHOTS = 128  # slots 0..127 (as an OSC int, a program number, a note offset)
MAX_LFOS = 32

# Steepness of the named 'exp' / 'log' curves: exp(p) = (2**(K p) - 1) / (2**K - 1),
# so half-way on the knob gives 1/5 of the range (fine control at the low end);
# 'log' is its mirror image (fine control at the top).
_CURVE_K = 4.0
_CURVE_DEN = 2.0**_CURVE_K - 1.0


@dataclass(frozen=True)
class _ParamSpec:
    engine_name: str  # name passed to Engine.set_param
    unit: str
    limits: tuple[float, float]  # allowed values in the YAML unit
    default_range: tuple[float, float]
    default_curve: str


def _engine_param(engine_name: str, unit: str, default_range: tuple[float, float],
                  default_curve: str) -> _ParamSpec:
    """A synthesizer parameter: its limits are the engine's (``daemon.core.engine.PARAMS``)."""
    _, lo, hi = ENGINE_PARAMS[engine_name]
    return _ParamSpec(engine_name, unit, (lo, hi), default_range, default_curve)


# YAML name -> engine parameter (docs/contracts.md, Engine.set_param).
PARAMS: dict[str, _ParamSpec] = {
    "gain": _engine_param("gain_db", "dB", (-60.0, 0.0), "linear"),
    "shift": _engine_param("shift_bins", "bins", (-24.0, 24.0), "linear"),
    "attack": _engine_param("attack_ms", "ms", (1.0, 2000.0), "exp"),
    "decay": _engine_param("decay_ms", "ms", (5.0, 5000.0), "exp"),
    "sustain_level": _engine_param("sustain_level", "0..1", (0.0, 1.0), "linear"),
    "release": _engine_param("release_ms", "ms", (5.0, 5000.0), "exp"),
    "smoothing": _engine_param("smoothing_ms", "ms", (0.0, 500.0), "exp"),
    # the ANNe effect (canne effect / canne process); the synthesizer ignores them
    **{f"effect_gain_{k}": _ParamSpec(f"effect_gain_{k}", "x", GAIN_RANGE, (0.5, 5.5), "linear")
       for k in range(1, 9)},
    "effect_mix": _ParamSpec("effect_mix", "0..1", (0.0, 1.0), (0.0, 1.0), "linear"),
    "effect_freeze": _ParamSpec("effect_freeze", "0..1", (0.0, 1.0), (0.0, 1.0), "linear"),
}
_SEMITONE_LIMITS = (-48.0, 48.0)
_SEMITONE_DEFAULT_RANGE = (-12.0, 12.0)
_LATENT_LIMIT = 1000.0  # |latent| allowed in a range: far outside any learned range


# --------------------------------------------------------------------------- curves
def _curve_fwd(kind: str, exponent: float, p: float) -> float:
    if kind == "linear":
        return p
    if kind == "exp":
        return (2.0 ** (_CURVE_K * p) - 1.0) / _CURVE_DEN
    if kind == "log":
        return math.log2(1.0 + p * _CURVE_DEN) / _CURVE_K
    return p**exponent  # 'power'


def _curve_inv(kind: str, exponent: float, y: float) -> float:
    if kind == "linear":
        return y
    if kind == "exp":
        return math.log2(1.0 + y * _CURVE_DEN) / _CURVE_K
    if kind == "log":
        return (2.0 ** (_CURVE_K * y) - 1.0) / _CURVE_DEN
    return y ** (1.0 / exponent)


def decode_relative(encoder: str, value: int) -> int:
    """Signed tick count of one relative-encoder CC value (Ableton's four conventions).

    =================  ===============  ===============
    encoder            increment        decrement
    =================  ===============  ===============
    signed_bit         1..64 → +1..+64  65..127 → -1..-63
    signed_bit_2       65..127 → +1..+63  1..64 → -1..-64
    binary_offset      65..127 → +1..+63  63..0 → -1..-64
    twos_complement    1..64 → +1..+64  127..65 → -1..-63
    =================  ===============  ===============

    0 means no movement for every convention but binary offset (where 64 does).
    """
    if encoder == "signed_bit":
        return value if value <= 64 else -(value - 64)
    if encoder == "signed_bit_2":
        return value - 64 if value >= 65 else -value
    if encoder == "binary_offset":
        return value - 64
    if encoder == "twos_complement":
        return value if value <= 64 else value - 128
    raise ValueError(f"not a relative encoder: {encoder!r}")


# --------------------------------------------------------------------------- data
@dataclass(frozen=True)
class Control:
    """One CC (or 14-bit CC pair) driving one target.

    ``low``/``high`` are the range in the YAML unit (``low > high`` inverts);
    ``value_at(position)`` turns a knob position 0..1 into the value sent to the
    engine (latent units, or the engine parameter's unit), ``position_of`` inverts it.
    """

    index: int
    line: int
    label: str
    cc: int
    channels: frozenset
    neuron: int  # -1 when the target is a parameter
    param: str  # YAML parameter name ('' for a neuron)
    engine_param: str  # Engine.set_param name ('' for a neuron)
    low: float
    high: float
    unit: str
    curve: str  # 'linear' | 'exp' | 'log' | 'power'
    exponent: float
    invert: bool
    takeover: str
    resolution: int  # 7 or 14
    encoder: str  # 'absolute' or one of the relative conventions
    step: float  # relative encoders: fraction of the range per tick
    semitone_bins: float = 0.0  # shift in semitones: bins = semitone_bins * (2**(s/12) - 1)
    source: str = "cc"  # 'cc' or one of SOURCES (then cc is -1)
    lfo: int = -1  # param 'lfoN_depth'/'lfoN_offset': the LFO's index (0-based), else -1

    @property
    def target(self) -> tuple:
        """Key of the target: ('neuron', n) or ('param', engine_name)."""
        return ("neuron", self.neuron) if self.neuron >= 0 else ("param", self.engine_param)

    @property
    def lsb_cc(self) -> int | None:
        return self.cc + 32 if self.resolution == 14 else None

    @property
    def relative(self) -> bool:
        return self.encoder != "absolute"

    def value_at(self, position: float) -> float:
        """Engine value for a knob position 0..1 (after invert, curve and range)."""
        p = min(1.0, max(0.0, position))
        if self.invert:
            p = 1.0 - p
        v = self.low + (self.high - self.low) * _curve_fwd(self.curve, self.exponent, p)
        if self.semitone_bins:
            v = self.semitone_bins * (2.0 ** (v / 12.0) - 1.0)
        return v

    def position_of(self, value: float) -> float:
        """Knob position 0..1 at which ``value_at`` gives ``value`` (clamped)."""
        v = value
        if self.semitone_bins:
            ratio = 1.0 + v / self.semitone_bins
            v = 12.0 * math.log2(ratio) if ratio > 0 else -1e9
        y = (v - self.low) / (self.high - self.low)
        y = min(1.0, max(0.0, y))
        p = _curve_inv(self.curve, self.exponent, y)
        return 1.0 - p if self.invert else p


@dataclass(frozen=True)
class NoteSettings:
    channels: frozenset
    pitch_mode: str
    reference_note: int
    polyphony: int
    velocity_curve: str  # 'linear' | 'soft' | 'hard' | 'fixed' | 'power'
    velocity_exponent: float


@dataclass(frozen=True)
class Program:
    number: int  # 0..127 as sent on the wire
    line: int
    name: str
    model: Path | None  # model directory or decoder.onnx; None keeps the current model
    mapping: Path | None  # mapping file; None keeps the current mapping file


@dataclass(frozen=True)
class OscSettings:
    """The 'osc:' section (docs/osc.md): where OSC is heard and where state goes."""

    port: int = 9000
    host: str = "127.0.0.1"
    feedback: tuple | None = None  # (host, port) of the state stream, or None
    feedback_rate: float = 20.0  # state messages per second (each a few floats)


@dataclass(frozen=True)
class Snapshot:
    """A named sound: a full latent vector and optional engine params (engine names)."""

    slot: int
    name: str
    latent: tuple
    params: tuple = ()  # ((engine_param, value), ...)
    line: int = 0


@dataclass(frozen=True)
class SnapshotSettings:
    """The 'snapshots:' section (docs/snapshots.md)."""

    slots: tuple = ()  # Snapshot, by slot number
    channels: frozenset = frozenset()  # channels of the recall/store keys
    recall_note: int | None = None  # note recall_note + k recalls slot k (k < count)
    store_note: int | None = None
    recall_cc: int | None = None  # CC recall_cc + k, value >= 64, recalls slot k
    store_cc: int | None = None
    count: int = 8
    program_change: bool = False  # a program change with no 'programs:' entry recalls that slot
    morph_cc: int | None = None
    morph_channels: frozenset = frozenset()
    morph_from: int = 0
    morph_to: int = 1

    def slot(self, number: int) -> Snapshot | None:
        for s in self.slots:
            if s.slot == number:
                return s
        return None

    @staticmethod
    def _index(first, number: int, count: int):
        if first is None:
            return None
        k = number - first
        return k if 0 <= k < count else None

    def key_action(self, kind: str, channel: int, number: int):
        """('recall' | 'store', slot) for a note or CC bound to snapshots, else None."""
        if channel not in self.channels:
            return None
        rec, sto = (self.recall_note, self.store_note) if kind == "note" else (self.recall_cc, self.store_cc)
        k = self._index(rec, number, self.count)
        if k is not None:
            return ("recall", k)
        k = self._index(sto, number, self.count)
        if k is not None:
            return ("store", k)
        return None


@dataclass(frozen=True)
class Lfo:
    """One LFO of the 'lfos:' list (docs/modulation.md), added to one target."""

    index: int
    line: int
    neuron: int  # -1 for a parameter
    engine_param: str  # '' for a neuron
    shape: str  # 'sine' | 'triangle' | 'random'
    rate_hz: float  # free-running rate (0 when synced to beats)
    beats: float  # cycle length in beats of the MIDI clock (0 when free-running)
    depth: float  # peak deviation, in the target's unit
    offset: float  # added to the target, in the target's unit
    phase: float  # start phase 0..1
    tempo: float  # BPM used for 'beats' until a MIDI clock arrives
    limits: tuple  # the target's allowed values (clamped after adding)

    @property
    def target(self) -> tuple:
        return ("neuron", self.neuron) if self.neuron >= 0 else ("param", self.engine_param)


@dataclass(frozen=True)
class MpeSettings:
    """The 'mpe:' section (docs/mpe.md): one MPE zone (MIDI MPE spec, 1.0)."""

    zone: str  # 'lower' (manager channel 1) | 'upper' (manager channel 16)
    manager: int  # mido channel 0 or 15
    members: frozenset  # mido channels of the member channels
    bend_range: float  # per-note pitch bend range on member channels, semitones (spec default 48)
    manager_bend_range: float  # zone-wide bend on the manager channel (spec default 2)


@dataclass(frozen=True)
class Mapping:
    """A validated mapping. Build it with ``load_mapping``; never mutate it."""

    path: Path | None
    name: str
    latent_dim: int
    controls: tuple
    notes: NoteSettings
    pitch_bend_range: float
    pitch_bend_channels: frozenset
    sustain_cc: int | None
    sustain_channels: frozenset
    programs: tuple
    initial_latent: tuple
    params: tuple  # ((engine_param, value), ...) sent once when the mapping starts
    default_takeover: str
    model: Any = field(default=None, compare=False, repr=False)
    effect: Any = None  # daemon.core.effect.EffectSettings from the 'effect:' section, or None
    osc: OscSettings | None = None  # the 'osc:' section, or None (OSC off unless asked on the command line)
    snapshots: SnapshotSettings = field(default_factory=SnapshotSettings)
    lfos: tuple = ()  # Lfo, in file order
    mpe: MpeSettings | None = None  # the 'mpe:' section, or None

    def program(self, number: int) -> Program | None:
        for prog in self.programs:
            if prog.number == number:
                return prog
        return None


# --------------------------------------------------------------------------- model info
@dataclass(frozen=True)
class _ModelInfo:
    latent_dim: int
    latent_min: tuple
    latent_max: tuple
    latent_default: tuple
    reference_note: int
    sample_rate: int
    n_fft: int


def _model_info(model) -> _ModelInfo:
    try:
        dim = int(model.latent_dim)
        info = _ModelInfo(
            latent_dim=dim,
            latent_min=tuple(float(x) for x in model.latent_min),
            latent_max=tuple(float(x) for x in model.latent_max),
            latent_default=tuple(float(x) for x in model.latent_default),
            reference_note=int(model.reference_note),
            sample_rate=int(getattr(model, "sample_rate", 44100)),
            n_fft=int(getattr(model, "n_fft", 4096)),
        )
    except (AttributeError, TypeError, ValueError) as exc:
        raise MappingError(
            f"cannot validate a mapping against {model!r}: it lacks model metadata ({exc}); "
            "pass a daemon.core.model.DecoderModel"
        ) from None
    if not (len(info.latent_min) == len(info.latent_max) == len(info.latent_default) == dim):
        raise MappingError(f"model {model!r}: latent_min/max/default must each have latent_dim={dim} values")
    return info


# --------------------------------------------------------------------------- YAML
_YAML_TAG = "tag:yaml.org,2002:"
_MERGE_TAG = _YAML_TAG + "merge"
_NUMBER_TAGS = frozenset(_YAML_TAG + t for t in ("int", "float", "timestamp"))
# Scalar tags a mapping may carry (explicitly or resolved): the YAML core types.
# Anything else (python/*, !!set, !!omap, !custom) is refused by name.
_SCALAR_TAGS = frozenset(_YAML_TAG + t for t in ("str", "int", "float", "bool", "null", "timestamp", "binary"))
# Characters YAML does not allow in a stream (PyYAML's Reader.NON_PRINTABLE).
_NON_PRINTABLE = re.compile("[^\x09\x0A\x0D\x20-\x7E\x85\xA0-\uD7FF\uE000-\uFFFD\U00010000-\U0010FFFF]")
_OPEN_EVENTS = (yaml.MappingStartEvent, yaml.SequenceStartEvent)
_CLOSE_EVENTS = (yaml.MappingEndEvent, yaml.SequenceEndEvent)
_CLoader = getattr(yaml, "CSafeLoader", None) if getattr(yaml, "__with_libyaml__", False) else None


class _TooDeep(Exception):
    def __init__(self, mark):
        super().__init__("too deep")
        self.mark = mark


class _PyLoader(yaml.SafeLoader):
    """Pure-Python safe loader that refuses nesting past MAX_NESTING (no RecursionError)."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_NESTING:
                raise _TooDeep(self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _compose(text: str):
    """YAML text -> node tree (marks kept), refusing nesting past MAX_NESTING.

    With libyaml (the usual case) the events are scanned first with a counter (libyaml's
    parser has no recursion; its composer would recurse in C) and then composed in C,
    20x faster than pure Python. A fresh loader every call: nothing outlives the load.
    """
    if _CLoader is None:
        return yaml.compose(text, Loader=_PyLoader)
    depth = 0
    for event in yaml.parse(text, Loader=_CLoader):
        if isinstance(event, _OPEN_EVENTS):
            depth += 1
            if depth > MAX_NESTING:
                raise _TooDeep(event.start_mark)
        elif isinstance(event, _CLOSE_EVENTS):
            depth -= 1
    return yaml.compose(text, Loader=_CLoader)


def _show(value, limit: int = 80) -> str:
    """repr() for a message: one line, at most ``limit`` characters, never raises."""
    try:
        r = repr(value)
    except Exception:  # e.g. int -> str past sys.get_int_max_str_digits()
        r = f"<{type(value).__name__}>"
    r = " ".join(r.splitlines())
    return r if len(r) <= limit else f"{r[: limit - 15]}… ({len(r)} chars)"


def _short_tag(tag: str) -> str:
    return "!!" + tag[len(_YAML_TAG):] if tag.startswith(_YAML_TAG) else tag


class _Ctx:
    """Error formatting: every message is one line, file:line: field: problem.

    Each load has its own context and its own YAML constructor (a shared one would
    keep every node it ever built, and be used by two threads at once).
    """

    def __init__(self, source: str):
        self.source = source
        self._constructor = yaml.constructor.SafeConstructor()

    def error(self, node, fieldname: str, problem: str, value=None, allowed: str | None = None, fix: str | None = None):
        line = node.start_mark.line + 1 if node is not None and node.start_mark is not None else 0
        msg = f"{self.source}:{line}: {fieldname or '(top level)'}: {problem}"
        if value is not None:
            msg += f" (got {_show(value)})"
        if allowed:
            msg += f"; allowed: {allowed}"
        if fix:
            msg += f"; {fix}"
        return MappingError(" ".join(msg.splitlines()))

    def construct(self, node, fieldname: str, allowed: str | None = None):
        """A scalar node's Python value; odd tags and unreadable values fail with one line."""
        tag = node.tag
        if tag == _MERGE_TAG:
            raise self.error(node, fieldname, "merge keys ('<<') are not supported", None, None,
                             "write the fields out in full")
        if tag not in _SCALAR_TAGS:
            raise self.error(node, fieldname, f"unknown YAML tag {_show(tag)}", None,
                             "plain values (tags !!str, !!int, !!float, !!bool, !!null)", "remove the tag")
        if tag in _NUMBER_TAGS and len(node.value) > _MAX_NUMBER_CHARS:
            raise self.error(node, fieldname, f"number too long ({len(node.value)} characters)", None,
                             allowed or f"at most {_MAX_NUMBER_CHARS} characters")
        try:
            return self._constructor.construct_object(node, deep=True)
        except Exception:  # ValueError ('!!int abc'), KeyError ('!!bool maybe'), AttributeError, ConstructorError
            raise self.error(node, fieldname, f"cannot read the value as {_short_tag(tag)}", node.value,
                             None, "remove the tag or fix the value") from None

    def scalar(self, node, fieldname: str, allowed: str | None = None):
        if not isinstance(node, yaml.ScalarNode):
            kind = "a list" if isinstance(node, yaml.SequenceNode) else "a section"
            raise self.error(node, fieldname, f"expected a single value, found {kind}")
        return self.construct(node, fieldname, allowed)

    def number(self, node, fieldname: str, lo: float, hi: float, unit: str = "") -> float:
        v = self.scalar(node, fieldname, f"{lo:g}..{hi:g}{unit}")
        # (ints are compared exactly: float() of a 400-digit int would overflow)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and not math.isfinite(v)):
            raise self.error(node, fieldname, "not a number", v, f"{lo:g}..{hi:g}{unit}")
        if not lo <= v <= hi:
            raise self.error(node, fieldname, "out of range", v, f"{lo:g}..{hi:g}{unit}")
        return float(v)

    def integer(self, node, fieldname: str, lo: int, hi: int, what: str = "") -> int:
        v = self.scalar(node, fieldname, f"{lo}..{hi}{what}")
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.error(node, fieldname, "not a whole number", v, f"{lo}..{hi}{what}")
        if not lo <= v <= hi:
            raise self.error(node, fieldname, "out of range", v, f"{lo}..{hi}{what}")
        return v

    def boolean(self, node, fieldname: str) -> bool:
        v = self.scalar(node, fieldname, "true, false")
        if not isinstance(v, bool):
            raise self.error(node, fieldname, "not true/false", v, "true, false")
        return v

    def choice(self, node, fieldname: str, choices) -> str:
        v = self.scalar(node, fieldname, ", ".join(str(c) for c in choices))
        key = str(v).strip().lower().replace("-", "_").replace(" ", "_") if isinstance(v, str) else v
        if key not in choices:
            raise self.error(node, fieldname, "unknown value", v, ", ".join(str(c) for c in choices))
        return key

    def text(self, node, fieldname: str) -> str:
        v = self.scalar(node, fieldname)
        if v is None or isinstance(v, (list, dict, bytes)):
            raise self.error(node, fieldname, "expected text", v)
        v = str(v)
        if "\x00" in v:
            raise self.error(node, fieldname, "the text contains a NUL character", None, None, "remove it")
        return v

    def section(self, node, fieldname: str, allowed: tuple) -> dict:
        """A YAML mapping node -> {key: (key_node, value_node)}; unknown/duplicate keys fail."""
        if not isinstance(node, yaml.MappingNode):
            raise self.error(node, fieldname, "expected a section of 'key: value' lines", self._peek(node))
        out: dict = {}
        for knode, vnode in node.value:
            if not isinstance(knode, yaml.ScalarNode):
                kind = "a list" if isinstance(knode, yaml.SequenceNode) else "a section"
                raise self.error(knode, fieldname, f"a key is {kind}", None, "plain names", "check the indentation")
            if knode.tag == _MERGE_TAG:
                raise self.error(knode, f"{fieldname}.<<" if fieldname else "<<",
                                 "merge keys ('<<') are not supported", None, None, "write the fields out in full")
            key = self.construct(knode, f"{fieldname} (a key)" if fieldname else "(a key)")
            shown = key if isinstance(key, (str, int)) and len(str(key)) <= 60 else _show(key, 60)
            name = f"{fieldname}.{shown}" if fieldname else str(shown)
            if key in out:
                raise self.error(knode, name, "appears twice; keep one")
            if allowed and key not in allowed:
                raise self.error(knode, name, "unknown field", None, ", ".join(allowed), "check the spelling")
            out[key] = (knode, vnode)
        return out

    def sequence(self, node, fieldname: str) -> list:
        if not isinstance(node, yaml.SequenceNode):
            raise self.error(node, fieldname, "expected a list", self._peek(node))
        return list(node.value)

    @staticmethod
    def _peek(node):
        if isinstance(node, yaml.ScalarNode):
            return node.value
        return None

    def channels(self, node, fieldname: str) -> frozenset:
        """'all' / 'omni' / 'any', a channel 1..16, or a list of them -> mido channels 0..15."""
        allowed = "1..16, a list of them, or all"
        if isinstance(node, yaml.SequenceNode):
            if len(node.value) > 16:
                raise self.error(node, fieldname, f"a list of {len(node.value)} channels", None, allowed)
            chans = [self.integer(n, f"{fieldname}[{i}]", 1, 16, " (MIDI channels count from 1)")
                     for i, n in enumerate(node.value)]
            if not chans:
                raise self.error(node, fieldname, "empty channel list", None, allowed)
            return frozenset(c - 1 for c in chans)
        v = self.scalar(node, fieldname, allowed)
        if isinstance(v, str) and v.strip().lower() in ("all", "omni", "any"):
            return ALL_CHANNELS
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 16:
            raise self.error(node, fieldname, "not a MIDI channel", v, allowed)
        return frozenset((v - 1,))


# --------------------------------------------------------------------------- loading
def _mapping_path(path) -> Path:
    try:
        return Path(path).expanduser()
    except (TypeError, ValueError, RuntimeError) as exc:  # RuntimeError: no home folder for '~'
        raise MappingError(f"{short_path(path)}: not a usable mapping path: {exc}") from None


def read_mapping_text(path) -> str:
    """The text of a mapping file, through the guarded path (regular file, at most
    ``MAX_MAPPING_BYTES``, UTF-8), or ``MappingError`` with one line."""
    p = _mapping_path(path)
    data = read_input_file(p, limit=MAX_MAPPING_BYTES, what="mapping file", error=MappingError,
                           not_found_hint="pass an existing .yaml file (see mappings/)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise MappingError(f"{short_path(p)}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x}); "
                           "save the mapping as UTF-8") from None


def load_mapping(path, model) -> Mapping:
    """Load and validate a YAML mapping file against a model's metadata.

    The only outcomes are a ``Mapping`` or one ``MappingError``: the file must be a
    regular file of at most ``MAX_MAPPING_BYTES`` (checked with ``stat`` before it is
    opened: a FIFO, a device or a folder is refused without reading), UTF-8 YAML
    without custom tags, nested at most ``MAX_NESTING`` deep.

    Parameters
    ----------
    path : str or Path
        The YAML file.
    model : daemon.core.model.DecoderModel (or any object with ``latent_dim``,
        ``latent_min``, ``latent_max``, ``latent_default``, ``reference_note``,
        ``sample_rate``, ``n_fft``)

    Raises
    ------
    MappingError
        One line naming file, line, field, value and the allowed values.
    """
    p = _mapping_path(path)
    return load_mapping_text(read_mapping_text(p), model, source=short_path(p), path=p)


def load_mapping_text(text: str, model, *, source: str = "<mapping>", path: Path | None = None) -> Mapping:
    """Validate mapping YAML given as text (``path`` anchors relative program paths).

    Same guarantees as ``load_mapping`` (minus the file checks): a ``Mapping`` or one
    ``MappingError``; nothing else escapes.
    """
    info = _model_info(model)
    try:
        return _validate(text, info, model, source, path)
    except MappingError:
        raise
    except RecursionError:  # not expected (nesting is limited), but never a traceback
        raise MappingError(f"{source}: the mapping is nested too deeply; "
                           f"allowed: at most {MAX_NESTING} levels") from None
    except Exception as exc:  # a validation bug: still one line, but say so
        detail = " ".join((str(exc) or type(exc).__name__).splitlines())[:200]
        raise MappingError(f"{source}: unexpected error while validating the mapping "
                           f"({type(exc).__name__}: {detail}); please report this") from exc


def _validate(text: str, info: _ModelInfo, model, source: str, path: Path | None) -> Mapping:
    ctx = _Ctx(source)
    if not isinstance(text, str):
        raise MappingError(f"{source}: the mapping must be text, got {type(text).__name__}")
    if len(text) > MAX_MAPPING_BYTES:
        raise MappingError(f"{source}: the mapping is too large ({format_size(len(text))} characters); "
                           f"the limit is {format_size(MAX_MAPPING_BYTES)}")
    bad = _NON_PRINTABLE.search(text)
    if bad is not None:
        line = text.count("\n", 0, bad.start()) + 1
        col = bad.start() - (text.rfind("\n", 0, bad.start()) + 1) + 1
        raise MappingError(f"{source}:{line}: character U+{ord(bad.group()):04X} at column {col} is not allowed "
                           "in a YAML file (a NUL or control character?); remove it")
    try:
        root = _compose(text)
    except _TooDeep as exc:
        raise MappingError(f"{source}:{exc.mark.line + 1}: nested more than {MAX_NESTING} levels deep; "
                           "a mapping needs at most 4") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        problem = " ".join((exc.problem or str(exc)).split())
        raise MappingError(f"{source}:{line}: YAML syntax error: {problem}; check indentation and colons") from None
    except yaml.YAMLError as exc:
        raise MappingError(f"{source}: YAML error: {' '.join(str(exc).split())[:200]}") from None
    if root is None:
        raise MappingError(f"{source}:1: the mapping file is empty; start from mappings/default.yaml")
    top = ctx.section(root, "", _TOP_KEYS)

    if "version" in top:
        ctx.integer(top["version"][1], "version", FORMAT_VERSION, FORMAT_VERSION)
    name = ctx.text(top["name"][1], "name") if "name" in top else (path.stem if path else "mapping")
    if "description" in top:
        ctx.text(top["description"][1], "description")
    channels = ctx.channels(top["channel"][1], "channel") if "channel" in top else ALL_CHANNELS
    takeover = ctx.choice(top["takeover"][1], "takeover", TAKEOVER_MODES) if "takeover" in top else "pickup"

    n_lfos = _count_lfos(top.get("lfos"))
    controls = _controls(ctx, top.get("controls"), info, channels, takeover, n_lfos)
    notes = _notes(ctx, top.get("notes"), info, channels)
    mpe = _mpe(ctx, top.get("mpe"))
    if mpe is not None:  # the zone's channels play; the manager's bend is zone-wide
        if "pitch_bend" in top:
            raise ctx.error(top["pitch_bend"][0], "pitch_bend", "an MPE zone sets the bend ranges",
                            None, None, "use mpe.bend_range / mpe.manager_bend_range")
        notes = dataclasses.replace(notes, channels=mpe.members | {mpe.manager})
    bend_range, bend_channels = _pitch_bend(ctx, top.get("pitch_bend"), notes.channels)
    if mpe is not None:
        bend_range, bend_channels = mpe.manager_bend_range, frozenset((mpe.manager,))
    sustain_cc, sustain_channels = _sustain(ctx, top.get("sustain"), notes.channels)
    _check_conflicts(ctx, controls, sustain_cc, sustain_channels)
    initial = _initial_latent(ctx, top.get("initial_latent"), info)
    params = _params(ctx, top.get("params"), info)
    base = path.parent if path is not None else Path.cwd()
    programs = _programs(ctx, top.get("programs"), base)
    effect = _effect(ctx, top.get("effect"), info)
    osc = _osc(ctx, top.get("osc"))
    snapshots = _snapshots(ctx, top.get("snapshots"), info, channels)
    lfos = _lfos(ctx, top.get("lfos"), info)

    return Mapping(
        path=path,
        name=name,
        latent_dim=info.latent_dim,
        controls=tuple(controls),
        notes=notes,
        pitch_bend_range=bend_range,
        pitch_bend_channels=bend_channels,
        sustain_cc=sustain_cc,
        sustain_channels=sustain_channels,
        programs=tuple(programs),
        initial_latent=initial,
        params=params,
        default_takeover=takeover,
        model=model,
        effect=effect,
        osc=osc,
        snapshots=snapshots,
        lfos=tuple(lfos),
        mpe=mpe,
    )


_TOP_KEYS = (
    "version", "name", "description", "channel", "takeover", "initial_latent", "params",
    "controls", "notes", "pitch_bend", "sustain", "programs", "effect", "osc", "snapshots", "lfos",
    "mpe",
)
_CONTROL_KEYS = (
    "cc", "source", "channel", "neuron", "param", "label", "range", "curve", "invert", "takeover",
    "resolution", "encoder", "step", "unit",
)


def _controls(ctx: _Ctx, item, info: _ModelInfo, channels, takeover, n_lfos: int = 0) -> list:
    if item is None:
        return []
    knode, node = item
    if isinstance(node, yaml.ScalarNode) and node.value in ("", "~", "null"):
        return []
    items = ctx.sequence(node, "controls")
    if len(items) > MAX_CONTROLS:
        raise ctx.error(node, "controls", f"too many controls ({len(items)})", None, f"at most {MAX_CONTROLS}")
    return [_control(ctx, i, cnode, info, channels, takeover, n_lfos) for i, cnode in enumerate(items)]


def _control(ctx: _Ctx, i: int, node, info: _ModelInfo, channels, default_takeover, n_lfos: int = 0) -> Control:
    f = f"controls[{i}]"
    sec = ctx.section(node, f, _CONTROL_KEYS)
    line = node.start_mark.line + 1
    source = ctx.choice(sec["source"][1], f"{f}.source", SOURCES) if "source" in sec else "cc"
    if source == "cc":
        if "cc" not in sec:
            raise ctx.error(node, f"{f}.cc", "missing", None, "0..127",
                            "add 'cc: <number>' (the controller number) or 'source: aftertouch / poly_aftertouch / velocity'")
        cc = ctx.integer(sec["cc"][1], f"{f}.cc", 0, 127)
    else:
        if "cc" in sec:
            raise ctx.error(sec["cc"][0], f"{f}.cc", f"a control with 'source: {source}' has no CC; remove one of them")
        for key in ("resolution", "encoder", "step"):
            if key in sec:
                raise ctx.error(sec[key][0], f"{f}.{key}", f"only applies to CCs, not 'source: {source}'")
        cc = -1
    chans = ctx.channels(sec["channel"][1], f"{f}.channel") if "channel" in sec else channels
    label = ctx.text(sec["label"][1], f"{f}.label") if "label" in sec else (f"CC {cc}" if cc >= 0 else source)
    if source != "cc" and "takeover" not in sec:
        default_takeover = "jump"  # expression follows the hand at once
    lfo = -1

    if ("neuron" in sec) == ("param" in sec):
        raise ctx.error(
            node, f, "needs exactly one target", None,
            f"'neuron: 0..{info.latent_dim - 1}' or 'param: {' / '.join(PARAMS)}'",
        )
    semitone_bins = 0.0
    if "neuron" in sec:
        neuron = ctx.integer(sec["neuron"][1], f"{f}.neuron", 0, info.latent_dim - 1,
                             f" (this model has latent_dim={info.latent_dim})")
        param = engine_param = ""
        unit = "latent"
        limits = (-_LATENT_LIMIT, _LATENT_LIMIT)
        default_range = (info.latent_min[neuron], info.latent_max[neuron])
        default_curve = "linear"
        if "unit" in sec:
            raise ctx.error(sec["unit"][0], f"{f}.unit", "only applies to 'param: shift'")
    else:
        pv = ctx.scalar(sec["param"][1], f"{f}.param")
        m = _LFO_PARAM.match(pv.strip().lower()) if isinstance(pv, str) else None
        if m is not None:
            lfo = int(m.group(1)) - 1
            if lfo >= n_lfos:
                raise ctx.error(sec["param"][1], f"{f}.param", "no such LFO", pv,
                                f"lfo1..lfo{n_lfos} (the 'lfos:' list has {n_lfos})" if n_lfos else "add an 'lfos:' list first")
            param = engine_param = f"lfo{lfo + 1}_{m.group(2)}"
            spec = _ParamSpec(engine_param, "", (-_LATENT_LIMIT * 10, _LATENT_LIMIT * 10), (0.0, 1.0), "linear")
            if m.group(2) == "offset":
                spec = _ParamSpec(engine_param, "", spec.limits, (-1.0, 1.0), "linear")
        else:
            param = ctx.choice(sec["param"][1], f"{f}.param", tuple(PARAMS) + ("lfoN_depth", "lfoN_offset"))
            if param not in PARAMS:
                raise ctx.error(sec["param"][1], f"{f}.param", "unknown value", pv,
                                ", ".join(PARAMS) + ", lfoN_depth, lfoN_offset")
            spec = PARAMS[param]
        neuron = -1
        engine_param = spec.engine_name
        unit, limits, default_range, default_curve = spec.unit, spec.limits, spec.default_range, spec.default_curve
        if "unit" in sec:
            if param != "shift":
                raise ctx.error(sec["unit"][0], f"{f}.unit", "only applies to 'param: shift'")
            unit = ctx.choice(sec["unit"][1], f"{f}.unit", ("bins", "semitones"))
            if unit == "semitones":
                limits, default_range = _SEMITONE_LIMITS, _SEMITONE_DEFAULT_RANGE
                f_ref = 440.0 * 2.0 ** ((info.reference_note - 69) / 12.0)
                semitone_bins = f_ref * info.n_fft / info.sample_rate

    if "range" in sec:
        rnode = sec["range"][1]
        items = ctx.sequence(rnode, f"{f}.range")
        if len(items) != 2:
            raise ctx.error(rnode, f"{f}.range", "needs two values [min, max]", len(items), "[min, max]")
        u = f" {unit}" if unit not in ("latent", "0..1") else ""
        low = ctx.number(items[0], f"{f}.range[0]", *limits, unit=u)
        high = ctx.number(items[1], f"{f}.range[1]", *limits, unit=u)
        if low == high:
            raise ctx.error(rnode, f"{f}.range", "min equals max, the knob would do nothing", [low, high],
                            "two different values (min > max inverts)")
    else:
        low, high = default_range
        if low == high:  # a neuron the model never moved (1st == 99th percentile)
            raise ctx.error(node, f"{f}.range", f"missing, and the model's learned range of neuron {neuron} is "
                            f"empty ({low:g}..{high:g}), so the knob would do nothing", None,
                            "two different values (min > max inverts)", "add 'range: [min, max]'")

    curve, exponent = default_curve, 1.0
    if "curve" in sec:
        cnode = sec["curve"][1]
        v = ctx.scalar(cnode, f"{f}.curve", "linear, exp, log, or an exponent 0.05..20")
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            exponent = ctx.number(cnode, f"{f}.curve", 0.05, 20.0, " (an exponent)")
            curve = "power"
        else:
            curve = ctx.choice(cnode, f"{f}.curve", CURVES + ("an exponent 0.05..20",))
            if curve not in CURVES:
                raise ctx.error(cnode, f"{f}.curve", "unknown curve", v, "linear, exp, log, or an exponent 0.05..20")
    invert = ctx.boolean(sec["invert"][1], f"{f}.invert") if "invert" in sec else False
    takeover = ctx.choice(sec["takeover"][1], f"{f}.takeover", TAKEOVER_MODES) if "takeover" in sec else default_takeover

    resolution = 7
    if "resolution" in sec:
        rn = sec["resolution"][1]
        v = ctx.scalar(rn, f"{f}.resolution")
        key = str(v).strip().lower().replace("-", "").replace(" ", "")
        if key in ("7", "7bit"):
            resolution = 7
        elif key in ("14", "14bit"):
            resolution = 14
        else:
            raise ctx.error(rn, f"{f}.resolution", "unknown resolution", v, "7bit, 14bit")
        if resolution == 14 and cc > 31:
            raise ctx.error(sec["cc"][1], f"{f}.cc", "a 14-bit pair needs its MSB on CC 0..31 (LSB on cc+32)", cc, "0..31")

    encoder = ctx.choice(sec["encoder"][1], f"{f}.encoder", ENCODERS) if "encoder" in sec else "absolute"
    if encoder != "absolute" and resolution == 14:
        raise ctx.error(sec["encoder"][1], f"{f}.encoder", "relative encoders are 7-bit; remove 'resolution: 14bit'")
    step = 0.01
    if "step" in sec:
        if encoder == "absolute":
            raise ctx.error(sec["step"][0], f"{f}.step", "only applies to relative encoders",
                            None, None, "add 'encoder: signed_bit' (or the one your controller sends) or remove 'step'")
        step = ctx.number(sec["step"][1], f"{f}.step", 1e-5, 1.0, " (fraction of the range per encoder tick)")

    return Control(
        index=i, line=line, label=label, cc=cc, channels=chans, neuron=neuron, param=param,
        engine_param=engine_param, low=float(low), high=float(high), unit=unit, curve=curve,
        exponent=exponent, invert=invert, takeover=takeover, resolution=resolution,
        encoder=encoder, step=step, semitone_bins=semitone_bins, source=source, lfo=lfo,
    )


def _notes(ctx: _Ctx, item, info: _ModelInfo, channels) -> NoteSettings:
    sec = ctx.section(item[1], "notes", ("channel", "pitch_mode", "reference_note", "polyphony", "velocity_curve")) if item else {}
    chans = ctx.channels(sec["channel"][1], "notes.channel") if "channel" in sec else channels
    mode = ctx.choice(sec["pitch_mode"][1], "notes.pitch_mode", PITCH_MODES) if "pitch_mode" in sec else "transpose"
    ref = info.reference_note
    if "reference_note" in sec:
        rn = sec["reference_note"][1]
        v = ctx.scalar(rn, "notes.reference_note", "0..127 (MIDI note; or 'model')")
        if not (isinstance(v, str) and v.strip().lower() in ("model", "default")):
            ref = ctx.integer(rn, "notes.reference_note", 0, 127, " (MIDI note; or 'model')")
    poly = ctx.integer(sec["polyphony"][1], "notes.polyphony", 1, 64) if "polyphony" in sec else 8
    vcurve, vexp = "linear", 1.0
    if "velocity_curve" in sec:
        vn = sec["velocity_curve"][1]
        v = ctx.scalar(vn, "notes.velocity_curve", "linear, soft, hard, fixed, or an exponent 0.05..10")
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            vexp = ctx.number(vn, "notes.velocity_curve", *ENGINE_PARAMS["velocity_curve"][1:], " (an exponent)")
            vcurve = "power"
        else:
            vcurve = ctx.choice(vn, "notes.velocity_curve", tuple(VELOCITY_CURVES))
            vexp = VELOCITY_CURVES[vcurve]
    return NoteSettings(chans, mode, ref, poly, vcurve, vexp)


def _pitch_bend(ctx: _Ctx, item, note_channels):
    if item is None:
        return 2.0, note_channels
    node = item[1]
    if isinstance(node, yaml.ScalarNode):
        v = ctx.scalar(node, "pitch_bend", "0..48 semitones, or off")
        if v is False or v is None:
            return 0.0, note_channels
        return ctx.number(node, "pitch_bend", 0.0, 48.0, " semitones"), note_channels
    sec = ctx.section(node, "pitch_bend", ("range", "channel"))
    rng = ctx.number(sec["range"][1], "pitch_bend.range", 0.0, 48.0, " semitones") if "range" in sec else 2.0
    chans = ctx.channels(sec["channel"][1], "pitch_bend.channel") if "channel" in sec else note_channels
    return rng, chans


def _sustain(ctx: _Ctx, item, note_channels):
    if item is None:
        return 64, note_channels
    node = item[1]
    if isinstance(node, yaml.ScalarNode):
        v = ctx.scalar(node, "sustain", "a CC number 0..127, or off")
        if v is False or v is None:
            return None, note_channels
        if isinstance(v, int) and not isinstance(v, bool):
            return ctx.integer(node, "sustain", 0, 127, " (a CC number, or off)"), note_channels
        raise ctx.error(node, "sustain", "unknown value", v, "a CC number 0..127, off, or a section with cc/channel")
    sec = ctx.section(node, "sustain", ("cc", "channel"))
    cc = ctx.integer(sec["cc"][1], "sustain.cc", 0, 127) if "cc" in sec else 64
    chans = ctx.channels(sec["channel"][1], "sustain.channel") if "channel" in sec else note_channels
    return cc, chans


def _check_conflicts(ctx: _Ctx, controls, sustain_cc, sustain_channels) -> None:
    """A 14-bit pair's LSB CC and the sustain CC cannot also drive another control."""
    by_cc: dict = {}  # cc -> controls on it, in file order (one pass: no n x n scan)
    for c in controls:
        by_cc.setdefault(c.cc, []).append(c)
    for c in controls:
        if c.resolution != 14:
            continue
        for other in by_cc.get(c.lsb_cc, ()):
            if other.channels & c.channels:
                raise MappingError(
                    f"{ctx.source}:{other.line}: controls[{other.index}].cc: CC {other.cc} is the LSB of the "
                    f"14-bit pair on CC {c.cc} (controls[{c.index}], line {c.line}); use another CC"
                )
        if sustain_cc == c.lsb_cc and sustain_channels & c.channels:
            raise MappingError(
                f"{ctx.source}:{c.line}: controls[{c.index}].cc: its 14-bit LSB CC {c.lsb_cc} is the sustain CC; "
                "move sustain or the pair"
            )
    for c in controls:
        if sustain_cc is not None and c.cc == sustain_cc and c.channels & sustain_channels:
            raise MappingError(
                f"{ctx.source}:{c.line}: controls[{c.index}].cc: CC {c.cc} is the sustain pedal "
                "(sustain.cc); use another CC or set 'sustain: off'"
            )


def _initial_latent(ctx: _Ctx, item, info: _ModelInfo) -> tuple:
    if item is None:
        return tuple(info.latent_default)
    return _latent_vector(ctx, item[1], info, "initial_latent")


def _latent_vector(ctx: _Ctx, node, info: _ModelInfo, fieldname: str) -> tuple:
    """'default', a list of latent_dim numbers (null = default), or {neuron: value}."""
    values = list(info.latent_default)
    lim = (-_LATENT_LIMIT, _LATENT_LIMIT)
    if isinstance(node, yaml.ScalarNode):
        v = ctx.scalar(node, fieldname)
        if isinstance(v, str) and v.strip().lower() in ("default", "model"):
            return tuple(values)
        raise ctx.error(node, fieldname, "unknown value", v,
                        f"default, a list of {info.latent_dim} numbers, or a section 'neuron: value'")
    if isinstance(node, yaml.SequenceNode):
        if len(node.value) != info.latent_dim:
            raise ctx.error(node, fieldname, f"needs {info.latent_dim} values (latent_dim)", len(node.value))
        return tuple(
            info.latent_default[i] if (isinstance(n, yaml.ScalarNode) and ctx.scalar(n, f"{fieldname}[{i}]", "-1000..1000") is None)
            else ctx.number(n, f"{fieldname}[{i}]", *lim)
            for i, n in enumerate(node.value)
        )
    sec = ctx.section(node, fieldname, ())
    for key, (kn, vn) in sec.items():
        if isinstance(key, bool) or not isinstance(key, int) or not 0 <= key < info.latent_dim:
            raise ctx.error(kn, f"{fieldname}.{key}", "not a neuron number", key, f"0..{info.latent_dim - 1}")
        values[key] = ctx.number(vn, f"{fieldname}.{key}", *lim)
    return tuple(values)


def _params(ctx: _Ctx, item, info: _ModelInfo, fieldname: str = "params") -> tuple:
    if item is None:
        return ()
    sec = ctx.section(item[1], fieldname, tuple(PARAMS) + ("shift_semitones",))
    out = []
    for key, (_, vn) in sec.items():
        if key == "shift_semitones":
            s = ctx.number(vn, f"{fieldname}.shift_semitones", *_SEMITONE_LIMITS, unit=" semitones")
            f_ref = 440.0 * 2.0 ** ((info.reference_note - 69) / 12.0)
            out.append(("shift_bins", f_ref * info.n_fft / info.sample_rate * (2.0 ** (s / 12.0) - 1.0)))
            continue
        spec = PARAMS[key]
        u = f" {spec.unit}" if spec.unit != "0..1" else ""
        out.append((spec.engine_name, ctx.number(vn, f"{fieldname}.{key}", *spec.limits, unit=u)))
    names = [n for n, _ in out]
    if names.count("shift_bins") > 1:
        raise ctx.error(item[1], fieldname, "give either shift or shift_semitones, not both")
    return tuple(out)


def _address(ctx: _Ctx, node, fieldname: str) -> tuple:
    """'host:port' or a port alone (host 127.0.0.1) -> (host, port)."""
    v = ctx.scalar(node, fieldname, "a port 1..65535 or 'host:port'")
    if isinstance(v, int) and not isinstance(v, bool):
        return ("127.0.0.1", ctx.integer(node, fieldname, 1, 65535, " (a UDP port)"))
    text = str(v).strip() if isinstance(v, str) else ""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535 or len(text) > 300:
        raise ctx.error(node, fieldname, "not an address", v, "a port 1..65535 or 'host:port' (e.g. 127.0.0.1:9001)")
    return (host.strip("[]"), int(port))


def _osc(ctx: _Ctx, item):
    """The 'osc:' section, or None. ``osc: on`` takes every default."""
    if item is None:
        return None
    node = item[1]
    if isinstance(node, yaml.ScalarNode):
        v = ctx.scalar(node, "osc", "on, off, a port, or a section")
        if v is False or v is None:
            return None
        if v is True:
            return OscSettings()
        return OscSettings(port=ctx.integer(node, "osc", 1, 65535, " (a UDP port)"))
    sec = ctx.section(node, "osc", ("port", "host", "feedback", "feedback_rate"))
    st = OscSettings()
    port = ctx.integer(sec["port"][1], "osc.port", 1, 65535, " (a UDP port)") if "port" in sec else st.port
    host = st.host
    if "host" in sec:
        host = ctx.text(sec["host"][1], "osc.host").strip()
        if not host or len(host) > 253:
            raise ctx.error(sec["host"][1], "osc.host", "not an address", host, "an IP address or host name")
    feedback = _address(ctx, sec["feedback"][1], "osc.feedback") if "feedback" in sec else None
    rate = ctx.number(sec["feedback_rate"][1], "osc.feedback_rate", 1.0, 100.0, " messages/s") \
        if "feedback_rate" in sec else st.feedback_rate
    return OscSettings(port=port, host=host, feedback=feedback, feedback_rate=rate)


def _snapshots(ctx: _Ctx, item, info: _ModelInfo, channels) -> SnapshotSettings:
    if item is None:
        return SnapshotSettings()
    node = item[1]
    sec = ctx.section(node, "snapshots", ("slots", "channel", "recall", "store", "count",
                                          "program_change", "morph"))
    slots = []
    if "slots" in sec:
        ssec = ctx.section(sec["slots"][1], "snapshots.slots", ())
        for key, (kn, vn) in ssec.items():
            f = f"snapshots.slots.{key}"
            if isinstance(key, bool) or not isinstance(key, int) or not 0 <= key < MAX_SNAPSHOTS:
                raise ctx.error(kn, f, "not a slot number", key, f"0..{MAX_SNAPSHOTS - 1}")
            if isinstance(vn, yaml.SequenceNode):  # a bare latent list
                slots.append(Snapshot(key, f"snapshot {key}", _latent_vector(ctx, vn, info, f), (),
                                      kn.start_mark.line + 1))
                continue
            one = ctx.section(vn, f, ("name", "latent", "params"))
            if "latent" not in one:
                raise ctx.error(vn, f"{f}.latent", "missing", None,
                                f"a list of {info.latent_dim} numbers or 'neuron: value'")
            name = ctx.text(one["name"][1], f"{f}.name") if "name" in one else f"snapshot {key}"
            latent = _latent_vector(ctx, one["latent"][1], info, f"{f}.latent")
            params = _params(ctx, one.get("params"), info, f"{f}.params")
            slots.append(Snapshot(key, name, latent, params, kn.start_mark.line + 1))
    chans = ctx.channels(sec["channel"][1], "snapshots.channel") if "channel" in sec else channels
    count = ctx.integer(sec["count"][1], "snapshots.count", 1, MAX_SNAPSHOTS) if "count" in sec else 8
    keys = {}
    for what in ("recall", "store"):
        keys[what] = (None, None)
        if what not in sec:
            continue
        ksec = ctx.section(sec[what][1], f"snapshots.{what}", ("note", "cc"))
        if ("note" in ksec) == ("cc" in ksec):
            raise ctx.error(sec[what][1], f"snapshots.{what}", "needs exactly one of note / cc", None,
                            "note: <first note> or cc: <first CC>")
        if "note" in ksec:
            keys[what] = (ctx.integer(ksec["note"][1], f"snapshots.{what}.note", 0, 127 - count + 1,
                                      f" (the first of {count} notes)"), None)
        else:
            keys[what] = (None, ctx.integer(ksec["cc"][1], f"snapshots.{what}.cc", 0, 127 - count + 1,
                                            f" (the first of {count} CCs)"))
    for kind, idx in (("note", 0), ("cc", 1)):
        a, b = keys["recall"][idx], keys["store"][idx]
        if a is not None and b is not None and abs(a - b) < count:
            raise ctx.error(sec["store"][1], f"snapshots.store.{kind}",
                            f"overlaps the recall {kind}s ({a}..{a + count - 1})", b, "another first number")
    prog = ctx.boolean(sec["program_change"][1], "snapshots.program_change") if "program_change" in sec else False
    morph_cc = None
    morph_chans = channels
    m_from, m_to = 0, 1
    if "morph" in sec:
        msec = ctx.section(sec["morph"][1], "snapshots.morph", ("cc", "channel", "from", "to"))
        if "cc" in msec:
            morph_cc = ctx.integer(msec["cc"][1], "snapshots.morph.cc", 0, 127)
        if "channel" in msec:
            morph_chans = ctx.channels(msec["channel"][1], "snapshots.morph.channel")
        if "from" in msec:
            m_from = ctx.integer(msec["from"][1], "snapshots.morph.from", 0, MAX_SNAPSHOTS - 1, " (a slot)")
        if "to" in msec:
            m_to = ctx.integer(msec["to"][1], "snapshots.morph.to", 0, MAX_SNAPSHOTS - 1, " (a slot)")
    return SnapshotSettings(
        slots=tuple(sorted(slots, key=lambda x: x.slot)), channels=chans,
        recall_note=keys["recall"][0], store_note=keys["store"][0],
        recall_cc=keys["recall"][1], store_cc=keys["store"][1], count=count,
        program_change=prog, morph_cc=morph_cc, morph_channels=morph_chans, morph_from=m_from, morph_to=m_to,
    )


def _mpe(ctx: _Ctx, item):
    """The 'mpe:' section, or None. ``mpe: lower`` / ``mpe: upper`` take every default."""
    if item is None:
        return None
    node = item[1]
    if isinstance(node, yaml.ScalarNode):
        v = ctx.scalar(node, "mpe", "lower, upper, off, or a section")
        if v is False or v is None or (isinstance(v, str) and v.strip().lower() == "off"):
            return None
        sec = {}
        zone = ctx.choice(node, "mpe", ("lower", "upper"))
    else:
        sec = ctx.section(node, "mpe", ("zone", "members", "bend_range", "manager_bend_range"))
        zone = ctx.choice(sec["zone"][1], "mpe.zone", ("lower", "upper")) if "zone" in sec else "lower"
    members = ctx.integer(sec["members"][1], "mpe.members", 1, 15, " (member channels)") if "members" in sec else 15
    bend = ctx.number(sec["bend_range"][1], "mpe.bend_range", 0.0, 96.0, " semitones") if "bend_range" in sec else 48.0
    mbend = (ctx.number(sec["manager_bend_range"][1], "mpe.manager_bend_range", 0.0, 96.0, " semitones")
             if "manager_bend_range" in sec else 2.0)
    if zone == "lower":
        manager, chans = 0, frozenset(range(1, 1 + members))
    else:
        manager, chans = 15, frozenset(range(14, 14 - members, -1))
    return MpeSettings(zone, manager, chans, bend, mbend)


def _count_lfos(item) -> int:
    node = item[1] if item is not None else None
    return len(node.value) if isinstance(node, yaml.SequenceNode) else 0


def _lfos(ctx: _Ctx, item, info: _ModelInfo) -> list:
    if item is None:
        return []
    node = item[1]
    if isinstance(node, yaml.ScalarNode) and node.value in ("", "~", "null"):
        return []
    items = ctx.sequence(node, "lfos")
    if len(items) > MAX_LFOS:
        raise ctx.error(node, "lfos", f"too many LFOs ({len(items)})", None, f"at most {MAX_LFOS}")
    out = []
    for i, lnode in enumerate(items):
        f = f"lfos[{i}]"
        sec = ctx.section(lnode, f, ("neuron", "param", "shape", "rate", "beats", "depth", "offset",
                                     "phase", "tempo", "label"))
        if ("neuron" in sec) == ("param" in sec):
            raise ctx.error(lnode, f, "needs exactly one target", None,
                            f"'neuron: 0..{info.latent_dim - 1}' or 'param: {' / '.join(PARAMS)}'")
        if "neuron" in sec:
            neuron = ctx.integer(sec["neuron"][1], f"{f}.neuron", 0, info.latent_dim - 1,
                                 f" (this model has latent_dim={info.latent_dim})")
            engine_param = ""
            limits = (-_LATENT_LIMIT, _LATENT_LIMIT)
            unit = ""
        else:
            param = ctx.choice(sec["param"][1], f"{f}.param", tuple(PARAMS))
            neuron = -1
            engine_param = PARAMS[param].engine_name
            limits = PARAMS[param].limits
            unit = f" {PARAMS[param].unit}"
        shape = ctx.choice(sec["shape"][1], f"{f}.shape", LFO_SHAPES) if "shape" in sec else "sine"
        if ("rate" in sec) == ("beats" in sec):
            raise ctx.error(lnode, f, "needs exactly one of rate (Hz) / beats (synced to MIDI clock)", None,
                            "'rate: 0.5' or 'beats: 1'")
        rate = ctx.number(sec["rate"][1], f"{f}.rate", 0.001, 50.0, " Hz") if "rate" in sec else 0.0
        beats = ctx.number(sec["beats"][1], f"{f}.beats", 1.0 / 64.0, 256.0, " beats") if "beats" in sec else 0.0
        span = limits[1] - limits[0]
        depth = ctx.number(sec["depth"][1], f"{f}.depth", -span, span, unit) if "depth" in sec else 0.0
        offset = ctx.number(sec["offset"][1], f"{f}.offset", -span, span, unit) if "offset" in sec else 0.0
        phase = ctx.number(sec["phase"][1], f"{f}.phase", 0.0, 1.0, " (of a cycle)") if "phase" in sec else 0.0
        tempo = ctx.number(sec["tempo"][1], f"{f}.tempo", 20.0, 400.0, " BPM") if "tempo" in sec else 120.0
        if "label" in sec:
            ctx.text(sec["label"][1], f"{f}.label")
        out.append(Lfo(i, lnode.start_mark.line + 1, neuron, engine_param, shape, rate, beats, depth,
                       offset, phase, tempo, limits))
    return out


def _effect(ctx: _Ctx, item, info: _ModelInfo):
    """The 'effect:' section (the ANNe effect's starting settings), or None."""
    if item is None:
        return None
    from daemon.core.effect import PHASE_SOURCES, SPLIT_PRESETS, EffectSettings, split_sizes

    node = item[1]
    sec = ctx.section(node, "effect", ("split", "gains", "mix", "phase", "freeze", "offsets",
                                       "track_pitch"))
    st = EffectSettings()
    if "split" in sec:
        sn = sec["split"][1]
        if isinstance(sn, yaml.SequenceNode):
            sizes = [ctx.number(n, f"effect.split[{i}]", 1e-3, 1e6) for i, n in enumerate(sn.value)]
            st.split = sizes
        else:
            st.split = ctx.choice(sn, "effect.split", tuple(SPLIT_PRESETS) + ("a list of sizes",))
            if st.split not in SPLIT_PRESETS:
                raise ctx.error(sn, "effect.split", "unknown preset", st.split,
                                f"{', '.join(SPLIT_PRESETS)} or a list of sizes")
        try:
            n_groups = len(split_sizes(info.latent_dim, st.split))
        except ValueError as exc:
            raise ctx.error(sn, "effect.split", str(exc)) from None
        st.gains = [1.0] * n_groups
    if "gains" in sec:
        gn = sec["gains"][1]
        items = ctx.sequence(gn, "effect.gains")
        st.gains = [ctx.number(n, f"effect.gains[{i}]", *GAIN_RANGE) for i, n in enumerate(items)]
    try:
        n_groups = len(split_sizes(info.latent_dim, st.split))
    except ValueError as exc:
        raise ctx.error(node, "effect.split", str(exc)) from None
    if len(st.gains) != n_groups:
        where = sec["gains"][1] if "gains" in sec else node
        raise ctx.error(where, "effect.gains", f"needs one gain per latent group ({n_groups})",
                        len(st.gains), f"{n_groups} values")
    if "mix" in sec:
        st.mix = ctx.number(sec["mix"][1], "effect.mix", 0.0, 1.0)
    if "phase" in sec:
        st.phase = ctx.choice(sec["phase"][1], "effect.phase", PHASE_SOURCES)
    if "freeze" in sec:
        st.freeze = ctx.boolean(sec["freeze"][1], "effect.freeze")
    if "track_pitch" in sec:
        st.track_pitch = ctx.boolean(sec["track_pitch"][1], "effect.track_pitch")
    if "offsets" in sec:
        osec = ctx.section(sec["offsets"][1], "effect.offsets", ())
        offs = {}
        for key, (kn, vn) in osec.items():
            if isinstance(key, bool) or not isinstance(key, int) or not 0 <= key < info.latent_dim:
                raise ctx.error(kn, f"effect.offsets.{key}", "not a neuron number", key,
                                f"0..{info.latent_dim - 1}")
            offs[key] = ctx.number(vn, f"effect.offsets.{key}", -_LATENT_LIMIT, _LATENT_LIMIT)
        st.offsets = offs
    return st


def _programs(ctx: _Ctx, item, base: Path) -> list:
    if item is None:
        return []
    sec = ctx.section(item[1], "programs", ())
    out = []
    for key, (kn, vn) in sec.items():
        f = f"programs.{key}"
        if isinstance(key, bool) or not isinstance(key, int) or not 0 <= key <= 127:
            raise ctx.error(kn, f, "not a program number", key, "0..127 (as sent on the wire; 'PGM 1' on most controllers sends 0)")
        ps = ctx.section(vn, f, ("name", "model", "mapping"))
        if "model" not in ps and "mapping" not in ps:
            raise ctx.error(vn, f, "names neither a model nor a mapping", None, "model: <dir>, mapping: <file.yaml>")
        model = mapping = None
        if "model" in ps:
            model = _program_path(ctx, ps["model"][1], f"{f}.model", base)
            if not (_is_dir(model) and _is_file(model / "decoder.onnx")) and not _is_file(model):
                raise ctx.error(ps["model"][1], f"{f}.model", "no model there", str(model),
                                "a model directory holding decoder.onnx, or a .onnx file; relative to this file's folder")
        if "mapping" in ps:
            mapping = _program_path(ctx, ps["mapping"][1], f"{f}.mapping", base)
            if not _is_file(mapping):
                problem = "not a regular file" if _exists(mapping) else "no such file"
                raise ctx.error(ps["mapping"][1], f"{f}.mapping", problem, str(mapping),
                                "a .yaml mapping file; relative to this file's folder")
        name = ctx.text(ps["name"][1], f"{f}.name") if "name" in ps else f"program {key}"
        out.append(Program(key, kn.start_mark.line + 1, name, model, mapping))
    return sorted(out, key=lambda p: p.number)


def _program_path(ctx: _Ctx, node, fieldname: str, base: Path) -> Path:
    """A path in programs:, resolved against the mapping's folder; odd paths fail with one line."""
    text = ctx.text(node, fieldname)  # (refuses NUL characters)
    if not text.strip():
        raise ctx.error(node, fieldname, "empty path", None, None, "a path relative to this file's folder")
    if len(text) > _MAX_PATH_CHARS:
        raise ctx.error(node, fieldname, f"path too long ({len(text)} characters)", None,
                        f"at most {_MAX_PATH_CHARS} characters")
    try:
        return (base / text).resolve()
    except (OSError, ValueError, RuntimeError) as exc:  # ENAMETOOLONG, a symlink loop
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ctx.error(node, fieldname, f"not a usable path ({' '.join(reason.split())[:100]})") from None


def _stat_mode(p: Path) -> int:
    try:
        return os.stat(p).st_mode
    except (OSError, ValueError):  # missing, ENAMETOOLONG (a component > 255 bytes), EACCES
        return 0


def _is_file(p: Path) -> bool:
    return stat.S_ISREG(_stat_mode(p))


def _is_dir(p: Path) -> bool:
    return stat.S_ISDIR(_stat_mode(p))


def _exists(p: Path) -> bool:
    return _stat_mode(p) != 0
