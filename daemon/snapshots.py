"""Writing a snapshot ("save current sound") into a mapping file, keeping the rest.

``apply_snapshot_to_yaml(text, snapshot)`` is the pure text edit: the slot's line in
``snapshots: slots:`` is replaced in place, or added after the last slot, or the
section is created at the end of the file; comments and layout stay.
``write_snapshot(path, snapshot, model=..., source=...)`` re-validates the result
against the model and writes it atomically (the running instrument's hot reload
picks it up). See docs/snapshots.md.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import yaml

from daemon.errors import MappingError
from daemon.learn import _last_line
from daemon.mapping import PARAMS, Snapshot, load_mapping_text

__all__ = ["apply_snapshot_to_yaml", "write_snapshot", "snapshot_yaml"]

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
    path = Path(path).expanduser()
    if not path.parent.is_dir():
        raise MappingError(f"snapshot: folder {path.parent} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        text = Path(source).read_text(encoding="utf-8") if source is not None else "version: 1\n"
    new = apply_snapshot_to_yaml(text, snap)
    if model is not None:
        try:
            load_mapping_text(new, model, source=str(path), path=path)
        except MappingError as exc:
            raise MappingError(f"snapshot {snap.slot} refused, file left untouched: {exc}") from None
    fd, tmp = tempfile.mkstemp(prefix=".snapshot-", suffix=".yaml", dir=str(path.parent))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(new)
        mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return new
