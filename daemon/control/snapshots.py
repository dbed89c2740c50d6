"""Writing a snapshot ("save current sound") into a mapping file, keeping the rest.

``apply_snapshot_to_yaml(text, snapshot)`` is the pure text edit: the slot's line in
``snapshots: slots:`` is replaced in place, or added after the last slot, or the
section is created at the end of the file; comments and layout stay.
``write_snapshot(path, snapshot, model=..., source=...)`` re-validates the result
against the model and writes it atomically (the running instrument's hot reload
picks it up). See docs/snapshots.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from daemon.errors import MappingError
from daemon.control.learn import _last_line, _read_mapping, write_mapping_text
from daemon.control.mapping import PARAMS, Snapshot, load_mapping_text

__all__ = ["apply_snapshot_to_yaml", "write_snapshot", "snapshot_yaml", "SNAPSHOT_TARGETS",
           "SnapshotKeyBinding", "detect_snapshot_key", "apply_snapshot_key_to_yaml", "learn_snapshot_key"]

#: ``canne learn`` targets that bind a snapshot key row or the morph knob.
SNAPSHOT_TARGETS = ("snapshot.recall", "snapshot.store", "snapshot.morph")

_YAML_NAME = {spec.engine_name: name for name, spec in PARAMS.items()}


def _num(v: float) -> float:
    return float(f"{float(v):.6g}")


def snapshot_yaml(snap: Snapshot) -> str:
    """One flow-style YAML value: ``{name: ..., latent: [...], params: {...}}``."""
    value: dict = {"name": snap.name, "latent": [_num(v) for v in snap.latent]}
    params = {_YAML_NAME[k]: _num(v) for k, v in snap.params if k in _YAML_NAME}
    if params:
        value["params"] = params
    return yaml.safe_dump(value, default_flow_style=True, width=1 << 20, sort_keys=False).strip()


def _key(node_pair, name) -> bool:
    k = node_pair[0]
    return isinstance(k, yaml.ScalarNode) and k.value == str(name)


def _empty(node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.value in ("", "~", "null")


def apply_snapshot_to_yaml(text: str, snap: Snapshot) -> str:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader) if text.strip() else None
    except yaml.YAMLError as exc:
        raise MappingError(f"snapshot: the mapping is not valid YAML, fix it first: {str(exc).splitlines()[0]}") from None
    if root is not None and not isinstance(root, yaml.MappingNode):
        raise MappingError("snapshot: the mapping file must be a section of 'key: value' lines")
    entry = f"{snap.slot}: {snapshot_yaml(snap)}"
    lines = text.splitlines()
    pair = next((p for p in root.value if _key(p, "snapshots")), None) if root is not None else None
    if pair is None:
        if lines and lines[-1].strip():
            lines.append("")
        lines += ["snapshots:", "  slots:", f"    {entry}"]
        return "\n".join(lines) + "\n"
    knode, sec = pair
    base = lines[knode.start_mark.line][: knode.start_mark.column]
    if _empty(sec):
        ln = knode.start_mark.line
        lines[ln] = f"{base}snapshots:"
        lines[ln + 1:ln + 1] = [f"{base}  slots:", f"{base}    {entry}"]
        return "\n".join(lines) + "\n"
    if not isinstance(sec, yaml.MappingNode) or sec.flow_style:
        raise MappingError(f"snapshot: 'snapshots' (line {knode.start_mark.line + 1}) must be a block section "
                           "of 'key: value' lines to be edited")
    ind = " " * sec.value[0][0].start_mark.column if sec.value else base + "  "
    spair = next((p for p in sec.value if _key(p, "slots")), None)
    if spair is None:
        ln = knode.start_mark.line
        lines[ln + 1:ln + 1] = [f"{ind}slots:", f"{ind}  {entry}"]
        return "\n".join(lines) + "\n"
    sk, slots = spair
    if _empty(slots):
        ln = sk.start_mark.line
        lines[ln] = f"{ind}slots:"
        lines.insert(ln + 1, f"{ind}  {entry}")
        return "\n".join(lines) + "\n"
    if not isinstance(slots, yaml.MappingNode) or slots.flow_style or not slots.value:
        raise MappingError(f"snapshot: 'snapshots.slots' (line {sk.start_mark.line + 1}) must be a block section "
                           "of 'slot: {...}' lines to be edited")
    sind = " " * slots.value[0][0].start_mark.column
    old = next((p for p in slots.value if _key(p, snap.slot)), None)
    if old is not None:
        start, end = old[0].start_mark.line, _last_line(old[1])
        lines[start:end + 1] = [f"{sind}{entry}"]
    else:
        lines.insert(_last_line(slots.value[-1][1]) + 1, f"{sind}{entry}")
    return "\n".join(lines) + "\n"


def write_snapshot(path, snap: Snapshot, *, model=None, source=None) -> str:
    """Write ``snap`` into the mapping at ``path`` (read from ``source`` while ``path``
    does not exist: the shipped mapping a user copy starts from); validated against
    ``model`` first, written atomically. Returns the new text."""
    return _rewrite_mapping(path, source, model, f"snapshot {snap.slot}", "snapshot",
                            lambda text: apply_snapshot_to_yaml(text, snap))


def _rewrite_mapping(path, source, model, label: str, what: str, edit, hint: str = "") -> str:
    """Read the mapping (``path``, or ``source`` while ``path`` does not exist), apply
    ``edit`` to its text, validate the result against ``model`` and write it atomically."""
    path = Path(path).expanduser()
    if not path.parent.is_dir():
        raise MappingError(f"{what}: folder {path.parent} does not exist{hint}")
    new = edit(_read_mapping(path, source))
    write_mapping_text(path, new, model, label)
    return new


# --------------------------------------------------------------------------- learn
@dataclass(frozen=True)
class SnapshotKeyBinding:
    """What ``canne learn snapshot.recall|store|morph`` found: a note or CC row start."""

    target: str  # one of SNAPSHOT_TARGETS
    kind: str  # 'note' | 'cc' | 'program'
    number: int
    channel: int  # 1..16
    replaced: tuple = ()

    def describe(self) -> str:
        what = self.target.split(".")[1]
        if self.kind == "program":
            return "program changes -> recall snapshot n (snapshots.program_change)"
        src = f"{'note' if self.kind == 'note' else 'CC'} {self.number} on channel {self.channel}"
        if what == "morph":
            return f"{src} -> morph knob"
        return f"{src} -> {what} snapshot 0 (the next keys: 1, 2, ...)"


def detect_snapshot_key(messages, target: str) -> SnapshotKeyBinding:
    """The first note-on, pressed CC (value > 0) or program change among ``messages``
    (a CC only for ``snapshot.morph``)."""
    for msg in messages:
        t = getattr(msg, "type", None)
        if t == "note_on" and msg.velocity > 0 and target != "snapshot.morph":
            return SnapshotKeyBinding(target, "note", msg.note, msg.channel + 1)
        if t == "control_change" and (msg.value > 0 or target == "snapshot.morph"):
            return SnapshotKeyBinding(target, "cc", msg.control, msg.channel + 1)
        if t == "program_change" and target == "snapshot.recall":
            return SnapshotKeyBinding(target, "program", msg.program, msg.channel + 1)
    raise MappingError("learn: no note, button or program change received"
                       if target != "snapshot.morph" else "learn: no control change received; move a knob")


def _section_lines(text: str):
    root = yaml.compose(text, Loader=yaml.SafeLoader) if text.strip() else None
    if root is not None and not isinstance(root, yaml.MappingNode):
        raise MappingError("learn: the mapping file must be a section of 'key: value' lines")
    return root


def apply_snapshot_key_to_yaml(text: str, b: SnapshotKeyBinding) -> str:
    """Set ``snapshots.recall`` / ``store`` / ``morph`` (and the channel) in the text."""
    try:
        root = _section_lines(text)
    except yaml.YAMLError as exc:
        raise MappingError(f"learn: the mapping is not valid YAML, fix it first: {str(exc).splitlines()[0]}") from None
    what = b.target.split(".")[1]
    if b.kind == "program":
        items = {"program_change": "true"}
    elif what == "morph":
        items = {"morph": None}
    else:
        items = {what: f"{{{b.kind}: {b.number}}}", "channel": str(b.channel)}
    lines = text.splitlines()
    pair = next((p for p in root.value if _key(p, "snapshots")), None) if root is not None else None
    sec = pair[1] if pair is not None else None
    old_morph = {}
    if isinstance(sec, yaml.MappingNode):
        mp = next((p for p in sec.value if _key(p, "morph")), None)
        if mp is not None:
            try:
                old_morph = yaml.safe_load(yaml.serialize(mp[1])) or {}
            except yaml.YAMLError:
                old_morph = {}
    if "morph" in items:
        m = {k: v for k, v in (old_morph if isinstance(old_morph, dict) else {}).items() if k in ("from", "to")}
        m = {"cc": b.number, "channel": b.channel, **m}
        items["morph"] = "{" + ", ".join(f"{k}: {v}" for k, v in m.items()) + "}"
    if pair is None:
        if lines and lines[-1].strip():
            lines.append("")
        lines.append("snapshots:")
        lines += [f"  {k}: {v}" for k, v in items.items()]
        return "\n".join(lines) + "\n"
    knode = pair[0]
    base = lines[knode.start_mark.line][: knode.start_mark.column]
    if _empty(sec):
        ln = knode.start_mark.line
        lines[ln] = f"{base}snapshots:"
        lines[ln + 1:ln + 1] = [f"{base}  {k}: {v}" for k, v in items.items()]
        return "\n".join(lines) + "\n"
    if not isinstance(sec, yaml.MappingNode) or sec.flow_style:
        raise MappingError(f"learn: 'snapshots' (line {knode.start_mark.line + 1}) must be a block section "
                           "of 'key: value' lines to be edited")
    ind = " " * sec.value[0][0].start_mark.column if sec.value else base + "  "
    # replace existing keys bottom-up, then insert the new ones after 'snapshots:'
    todo = dict(items)
    for k, v in sorted(((p[0], p[1]) for p in sec.value if isinstance(p[0], yaml.ScalarNode) and p[0].value in items),
                       key=lambda kv: kv[0].start_mark.line, reverse=True):
        start, end = k.start_mark.line, _last_line(v)
        lines[start:end + 1] = [f"{ind}{k.value}: {items[k.value]}"]
        todo.pop(k.value)
    ln = knode.start_mark.line
    lines[ln + 1:ln + 1] = [f"{ind}{k}: {v}" for k, v in todo.items()]
    return "\n".join(lines) + "\n"


def learn_snapshot_key(mapping_path, target: str, messages, *, model=None, source=None) -> SnapshotKeyBinding:
    """Bind the first suitable message of ``messages`` to ``target`` and write the file."""
    b = detect_snapshot_key(messages, target)
    _rewrite_mapping(mapping_path, source, model, f"learn: {b.describe()}", "learn",
                     lambda text: apply_snapshot_key_to_yaml(text, b),
                     "; create it or give another --mapping path")
    return b
