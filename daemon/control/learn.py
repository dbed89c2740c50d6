"""MIDI learn: bind the next CC moved to a chosen target and write it into the YAML.

Pure logic, no ports: the runtime hands ``learn_binding`` a *message source* (a
callable ``receive(timeout_s) -> mido.Message | None``, or any iterable of messages)
and this module

1. waits for the first control change (clock, notes, sysex… are ignored);
2. listens a little longer (``settle_s``) to the same controller to tell a 14-bit
   pair (LSB on cc+32 also moves) and a relative encoder (the same small step value
   repeated) from a plain 7-bit knob;
3. edits the mapping text (``apply_binding_to_yaml``): the controls that drove the
   same target are replaced (the new one takes the first one's place and keeps its
   range, curve, label...), otherwise a new line is appended to ``controls:``.
   Everything else, comments included, is left as it was. What was replaced is
   returned (``Binding.replaced``, from ``replaced_controls``) so the caller can say
   so: the shipped default mapping drives each neuron from two or three controls;
4. re-validates the result (against the model when one is given) and writes the file
   atomically, so a running ``canne run`` hot-reloads it.

Which file: the caller's. ``canne learn`` never edits a shipped mapping in place: it
passes the performer's own copy as the file to write and the shipped one as
``source`` (read only while the copy does not exist yet); see ``daemon.paths``.

Targets ``snapshot.recall``, ``snapshot.store`` and ``snapshot.morph`` bind a row of
snapshot keys (the first note-on, pressed button or program change) or the morph knob
instead: ``daemon.control.snapshots.learn_snapshot_key`` (docs/snapshots.md).

Relative-encoder detection is a guess (signed bit and signed bit 2 send the same
values in opposite directions); the written line says which it chose.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from daemon.errors import MappingError
from daemon.control.mapping import PARAMS, load_mapping_text

__all__ = [
    "Binding",
    "parse_target",
    "detect_binding",
    "learn_binding",
    "apply_binding_to_yaml",
    "replaced_controls",
    "write_binding",
]

_IGNORED_TYPES = ("clock", "active_sensing", "sysex", "start", "stop", "continue", "songpos")

# Target spellings: 'neuron 3', 'neuron:3', 'latent.3', 'z3', ... and parameter names in
# the YAML form ('gain') or the engine form ('gain_db').
_NEURON_RE = re.compile(r"^\s*(?:neuron|latent|z)\s*[\s:.\[_-]?\s*(\d+)\s*\]?\s*$", re.IGNORECASE)
_PARAM_ALIASES = {name: (name, None) for name in PARAMS}
_PARAM_ALIASES.update({spec.engine_name: (name, None) for name, spec in PARAMS.items()})
_PARAM_ALIASES.update({"shift_semitones": ("shift", "semitones"), "volume": ("gain", None)})
_SNAPSHOT_ALIASES = {a: f"snapshot.{w}" for w in ("recall", "store", "morph")
                     for a in (f"snapshot.{w}", f"snapshot_{w}", f"snapshots.{w}", f"snapshots_{w}")}
_SNAPSHOT_ALIASES["morph"] = "snapshot.morph"


@dataclass(frozen=True)
class Binding:
    """What learn found: one controller and the target it should drive."""

    cc: int
    channel: int | None  # 1..16 as written in YAML; None = any channel
    neuron: int | None = None
    param: str | None = None  # YAML parameter name ('gain', 'shift', ...)
    unit: str | None = None  # 'semitones' for a shift in semitones
    encoder: str = "absolute"
    resolution: int = 7
    #: The controls this binding replaced in the file, one line each (``line N: {cc: ...}``).
    replaced: tuple = dataclasses.field(default=(), compare=False)

    def yaml_item(self, keep: dict | None = None) -> str:
        """The control as one YAML flow mapping, e.g. ``{cc: 21, channel: 1, neuron: 3}``.

        ``keep``: settings of the control being replaced (range, curve, label, ...)
        carried over so that re-learning a knob does not lose them.
        """
        parts = [f"cc: {self.cc}"]
        if self.channel is not None:
            parts.append(f"channel: {self.channel}")
        if self.resolution == 14:
            parts.append("resolution: 14bit")
        if self.neuron is not None:
            parts.append(f"neuron: {self.neuron}")
        else:
            parts.append(f"param: {self.param}")
            if self.unit:
                parts.append(f"unit: {self.unit}")
        if self.encoder != "absolute":
            parts.append(f"encoder: {self.encoder}")
        for key, value in (keep or {}).items():
            if key == "step" and self.encoder == "absolute":
                continue
            if key == "unit" and (self.neuron is not None or self.unit):
                continue
            parts.append(f"{key}: {_flow(value)}")
        return "{" + ", ".join(parts) + "}"

    def describe(self) -> str:
        what = f"neuron {self.neuron}" if self.neuron is not None else f"param {self.param}"
        src = f"CC {self.cc}" + (f"/{self.cc + 32} (14-bit)" if self.resolution == 14 else "")
        ch = f" on channel {self.channel}" if self.channel is not None else ""
        enc = f", {self.encoder} encoder" if self.encoder != "absolute" else ""
        return f"{src}{ch} -> {what}{enc}"


_KEPT_KEYS = ("unit", "step", "range", "curve", "invert", "takeover", "label")


def _flow(value) -> str:
    """One YAML value in flow style (strings quoted when needed)."""
    out = yaml.safe_dump(value, default_flow_style=True, width=1000, sort_keys=False).strip()
    return out[:-4].strip() if out.endswith("\n...") or out.endswith("...") else out


def parse_target(target: str, latent_dim: int | None = None) -> tuple:
    """``'neuron 3'`` / ``'latent.3'`` / ``'gain'`` / ``'attack_ms'`` -> (neuron, param, unit).

    Raises ``MappingError`` naming the allowed targets.
    """
    text = str(target).strip()
    m = _NEURON_RE.match(text)
    if m:
        n = int(m.group(1))
        if latent_dim is not None and not 0 <= n < latent_dim:
            raise MappingError(f"learn target {target!r}: neuron {n} out of range; allowed: 0..{latent_dim - 1}")
        return n, None, None
    key = text.lower().replace("-", "_").replace(" ", "_")
    if key in _SNAPSHOT_ALIASES:  # a snapshot key row or the morph knob (daemon.control.snapshots)
        return None, _SNAPSHOT_ALIASES[key], None
    if key in _PARAM_ALIASES:
        param, unit = _PARAM_ALIASES[key]
        return None, param, unit
    raise MappingError(
        f"learn target {target!r} unknown; allowed: neuron N (or latent.N), "
        f"{', '.join(PARAMS)}, shift_semitones, snapshot.recall, snapshot.store, snapshot.morph"
    )


# --------------------------------------------------------------------------- detection
def _guess_encoder(values: list) -> str:
    """Relative encoders repeat small step codes; absolute knobs never repeat a value."""
    if len(values) < 3:
        return "absolute"
    repeats = any(a == b for a, b in zip(values, values[1:]))
    if not repeats:
        return "absolute"
    vs = set(values)
    if vs <= set(range(1, 9)) | set(range(120, 128)):
        return "twos_complement"
    if vs <= set(range(56, 73)):
        return "binary_offset"
    if vs <= set(range(1, 9)) | set(range(65, 73)):
        return "signed_bit"
    return "absolute"


def detect_binding(messages, target: str, latent_dim: int | None = None) -> Binding:
    """Infer a Binding from the messages seen during learn (first CC wins).

    Parameters
    ----------
    messages : iterable of mido.Message
        Everything received, in order; non-CC messages are ignored.
    """
    neuron, param, unit = parse_target(target, latent_dim)
    first = None
    values: list = []
    lsb_seen = False
    for msg in messages:
        if getattr(msg, "type", None) != "control_change":
            continue
        if first is None:
            first = (msg.channel, msg.control)
        ch, cc = first
        if msg.channel != ch:
            continue
        if msg.control == cc:
            values.append(msg.value)
        elif cc <= 31 and msg.control == cc + 32:
            lsb_seen = True
    if first is None:
        raise MappingError("learn: no control change received; move a knob or fader on the controller")
    ch, cc = first
    resolution = 14 if lsb_seen else 7
    encoder = "absolute" if resolution == 14 else _guess_encoder(values)
    return Binding(cc=cc, channel=ch + 1, neuron=neuron, param=param, unit=unit,
                   encoder=encoder, resolution=resolution)


def _iter_source(source, timeout_s: float, settle_s: float, clock):
    """Yield messages until ``settle_s`` after the first CC, or ``timeout_s`` without one."""
    deadline = clock() + timeout_s
    settle_end = None
    if hasattr(source, "poll") and hasattr(source, "receive"):  # a mido input port: never block on it
        port = source

        def source(timeout):
            msg = port.poll()
            if msg is None:
                time.sleep(min(timeout, 0.005))
            return msg

    if callable(source) and not hasattr(source, "__iter__"):
        while True:
            now = clock()
            end = settle_end if settle_end is not None else deadline
            if now >= end:
                return
            msg = source(min(0.05, end - now))
            if msg is None:
                continue
            if getattr(msg, "type", None) in _IGNORED_TYPES:
                continue
            if settle_end is None and getattr(msg, "type", None) == "control_change":
                settle_end = clock() + settle_s
            yield msg
    else:
        for msg in source:
            yield msg


def _first_key(message_source, timeout_s: float, clock, target: str) -> list:
    """Messages up to the first one a snapshot target can use (see detect_snapshot_key)."""
    out = []
    for msg in _iter_source(message_source, timeout_s, 0.0, clock):
        out.append(msg)
        t = getattr(msg, "type", None)
        if target == "snapshot.morph":
            if t == "control_change":
                break
        elif (t == "note_on" and msg.velocity > 0) or (t == "control_change" and msg.value > 0) \
                or (t == "program_change" and target == "snapshot.recall"):
            break
    return out


def learn_binding(mapping_path, target: str, message_source, timeout: float = 60.0, *, model=None,
                  settle_s: float = 0.4, write: bool = True, clock=time.monotonic, source=None) -> Binding:
    """Wait for the next CC moved, bind it to ``target`` and (by default) write the YAML.

    Parameters
    ----------
    mapping_path : str or Path
        The mapping file to update (created with just this control if missing).
    target : str
        ``'neuron 3'`` (also ``latent.3``), ``'gain'``, ``'shift'``,
        ``'shift_semitones'``, ``'attack'``, ``'decay'``, ``'sustain_level'``,
        ``'release'``, ``'smoothing'`` (engine names like ``gain_db`` work too).
    message_source : callable(timeout_s) -> mido.Message | None, a mido input port
        (polled, never blocked on), or a finite iterable of messages
    timeout : float
        Seconds to wait for the first CC.
    model : DecoderModel, optional
        Validate the written file against it (recommended).
    source : str or Path, optional
        Read the mapping from this file while ``mapping_path`` does not exist yet
        (a shipped mapping copied, with the binding, to the performer's folder).

    Returns
    -------
    Binding
        With ``replaced``: the controls that drove the same target before (removed).

    Raises
    ------
    MappingError
        Unknown target, nothing received in time, or a result that does not validate
        (the file is then left untouched).
    """
    latent_dim = getattr(model, "latent_dim", None)
    _, param, _ = parse_target(target, latent_dim)  # fail before waiting
    if write:
        _check_folder(Path(mapping_path).expanduser())
    if param is not None and param.startswith("snapshot."):
        from daemon.control.snapshots import learn_snapshot_key

        msgs = _first_key(message_source, timeout, clock, param)
        if not msgs:
            raise MappingError(f"learn: nothing for {param} within {timeout:g} s; press a pad or key "
                               "(or move a knob for snapshot.morph)")
        return learn_snapshot_key(mapping_path, param, msgs, model=model, source=source)
    msgs = list(_iter_source(message_source, timeout, settle_s, clock))
    try:
        binding = detect_binding(msgs, target, latent_dim)
    except MappingError:
        raise MappingError(
            f"learn: no control change within {timeout:g} s; check the controller is connected "
            "and sends CC (canne devices lists the MIDI ports)"
        ) from None
    if write:
        before = _read_mapping(Path(mapping_path).expanduser(), source)
        replaced = replaced_controls(before, binding)
        write_binding(mapping_path, binding, model=model, source=source)
        binding = dataclasses.replace(binding, replaced=tuple(replaced))
    return binding


# --------------------------------------------------------------------------- YAML editing
def _item_target(node) -> tuple | None:
    if not isinstance(node, yaml.MappingNode):
        return None
    keys = {}
    for k, v in node.value:
        if isinstance(k, yaml.ScalarNode) and isinstance(v, yaml.ScalarNode):
            keys[k.value] = v.value
    if "neuron" in keys:
        try:
            return ("neuron", int(keys["neuron"]))
        except ValueError:
            return None
    if "param" in keys:
        return ("param", keys["param"].strip().lower())
    return None


def _last_line(node) -> int:
    """0-based index of the last line holding ``node``'s own text (trailing comments excluded)."""
    block = isinstance(node, (yaml.MappingNode, yaml.SequenceNode)) and not node.flow_style
    if block and node.value:
        last = node.value[-1]
        return _last_line(last[1] if isinstance(last, tuple) else last)
    end = node.end_mark
    if end.column == 0 and end.line > node.start_mark.line:
        return end.line - 1
    return end.line


def apply_binding_to_yaml(text: str, binding: Binding, *, comment: str | None = "learned") -> str:
    """Return ``text`` with ``binding`` written into ``controls:``.

    The control that already drives the same target (neuron N or parameter) is
    replaced in place; otherwise the new control is appended after the last one.
    Comments and everything else are kept. Raises ``MappingError`` when the text is
    not YAML or ``controls`` is not a block list.
    """
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader) if text.strip() else None
    except yaml.YAMLError as exc:
        raise MappingError(f"learn: the mapping is not valid YAML, fix it first: {str(exc).splitlines()[0]}") from None
    suffix = f"  # {comment}" if comment else ""
    item = "- " + binding.yaml_item() + suffix
    lines = text.splitlines()
    target = ("neuron", binding.neuron) if binding.neuron is not None else ("param", binding.param)

    controls = key_node = None
    if root is not None:
        if not isinstance(root, yaml.MappingNode):
            raise MappingError("learn: the mapping file must be a section of 'key: value' lines")
        for k, v in root.value:
            if isinstance(k, yaml.ScalarNode) and k.value == "controls":
                key_node, controls = k, v
    if controls is None or (isinstance(controls, yaml.ScalarNode) and controls.value in ("", "~", "null")) or (
        isinstance(controls, yaml.SequenceNode) and controls.flow_style and not controls.value
    ):
        if key_node is not None:  # 'controls:' empty or '[]': rewrite that line
            ln = key_node.start_mark.line
            indent = lines[ln][: key_node.start_mark.column]
            lines[ln] = f"{indent}controls:"
            lines.insert(ln + 1, f"{indent}  {item}")
        else:
            if lines and lines[-1].strip():
                lines.append("")
            lines += ["controls:", f"  {item}"]
        return "\n".join(lines) + "\n"
    if not isinstance(controls, yaml.SequenceNode) or controls.flow_style:
        raise MappingError(
            f"learn: 'controls' (line {key_node.start_mark.line + 1}) must be a block list of '- ...' lines"
        )

    matches = [n for n in controls.value if _item_target(n) == target]
    if matches:  # carry the first replaced control's own settings over
        try:
            old = yaml.safe_load(yaml.serialize(matches[0]))
        except yaml.YAMLError:
            old = None
        if isinstance(old, dict):
            keep = {k: old[k] for k in _KEPT_KEYS if k in old}
            item = "- " + binding.yaml_item(keep) + suffix
    if not controls.value:
        raise MappingError("learn: 'controls' is empty in an unexpected way; write 'controls:' on its own line")
    first_item = controls.value[0]
    dash_line = lines[first_item.start_mark.line]
    dash_col = dash_line.find("-")
    indent = dash_line[:dash_col] if dash_col >= 0 else "  "

    # Remove replaced items bottom-up, remember where the first one was.
    insert_at = None
    for node in sorted(matches, key=lambda n: n.start_mark.line, reverse=True):
        start, end = node.start_mark.line, _last_line(node)
        del lines[start : end + 1]
        insert_at = start
    if insert_at is None:
        remaining = [n for n in controls.value if n not in matches]
        insert_at = _last_line(remaining[-1]) + 1
    lines.insert(insert_at, f"{indent}{item}")
    return "\n".join(lines) + "\n"


def replaced_controls(text: str, binding: Binding) -> list[str]:
    """The controls of ``text`` that ``apply_binding_to_yaml`` would replace, one line each.

    Each is ``line N: {cc: 24, neuron: 3, label: Knob 4}`` (N counted from 1, as in
    an editor). Empty when the target had no control (the binding is appended).
    """
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader) if text.strip() else None
    except yaml.YAMLError:
        return []
    if not isinstance(root, yaml.MappingNode):
        return []
    target = ("neuron", binding.neuron) if binding.neuron is not None else ("param", binding.param)
    out = []
    for k, v in root.value:
        if not (isinstance(k, yaml.ScalarNode) and k.value == "controls" and isinstance(v, yaml.SequenceNode)):
            continue
        for node in v.value:
            if _item_target(node) != target:
                continue
            try:
                value = yaml.safe_load(yaml.serialize(node))
            except yaml.YAMLError:
                value = None
            shown = _flow(value) if isinstance(value, dict) else "(unreadable)"
            out.append(f"line {node.start_mark.line + 1}: {shown}")
    return out


def _read_mapping(path: Path, source=None) -> str:
    """The text to edit: the file itself, else ``source`` (a shipped mapping), else a new file.

    Read through the mapping loader's guarded reader (regular files only, size limit): a
    FIFO or a device in the mapping's place is a one-line MappingError, not a hang."""
    import os

    from daemon.control.mapping import read_mapping_text

    if os.path.lexists(path):
        return read_mapping_text(path)
    if source is not None:
        return read_mapping_text(Path(source).expanduser())
    return "# CANNe Live mapping written by canne learn; see docs/mappings.md\nversion: 1\n"


def _check_folder(path: Path) -> None:
    if not path.parent.is_dir():
        raise MappingError(f"learn: folder {path.parent} does not exist; create it or give another --mapping path")


def write_mapping_text(path: Path, new: str, model, what: str) -> None:
    """Validate ``new`` against ``model`` (when given) and write it to ``path`` atomically
    (a temporary file in the same folder, then a rename; the file keeps its mode, a new one
    gets the usual mode). ``what`` names the edit in the refusal message."""
    if model is not None:
        try:
            load_mapping_text(new, model, source=str(path), path=path)
        except MappingError as exc:
            raise MappingError(f"{what} refused, file left untouched: {exc}") from None
    fd, tmp = tempfile.mkstemp(prefix=".canne-", suffix=".yaml", dir=str(path.parent))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(new)
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o777)
        else:  # mkstemp makes it 0600; a new mapping gets the usual mode
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_binding(mapping_path, binding: Binding, *, model=None, comment: str | None = "learned",
                  source=None) -> str:
    """Apply ``binding`` to the file, validate, write atomically; return the new text.

    ``source``: read from this file instead while ``mapping_path`` does not exist
    (the shipped mapping a user copy starts from); it is never written.
    """
    path = Path(mapping_path).expanduser()
    _check_folder(path)
    text = _read_mapping(path, source)
    new = apply_binding_to_yaml(text, binding, comment=comment)
    try:
        yaml.safe_load(new)
    except yaml.YAMLError as exc:  # pragma: no cover - apply_binding_to_yaml keeps YAML valid
        raise MappingError(f"learn: the edit would break {path}: {exc}; file left untouched") from None
    write_mapping_text(path, new, model, f"learn: binding {binding.describe()}")
    return new
