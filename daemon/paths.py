"""Where the shipped and the performer's own models and mappings live.

Shipped data
------------
The repository keeps ``models/`` and ``mappings/`` at its root. An install
(``pip install .``, a wheel, ``pipx``) copies them into the package as
``daemon/_shipped/models/`` and ``daemon/_shipped/mappings/`` (``pyproject.toml``
maps those two package names onto the root folders; every model folder under
``models/`` and every ``mappings/*.yaml`` is included, whatever its name). The
two stay siblings, so a mapping's ``../models/NAME`` works the same in a checkout
and in an install. :func:`shipped_dir` returns the installed copy when there is
one, else the checkout's folder (running from a clone or an editable install).

The performer's own folders
---------------------------
``canne learn`` writes a user copy, never the shipped file; ``canne-train export
--out`` can write a model there. Conventions per platform (as ``platformdirs``
would give, written out here to keep the runtime's dependencies small):

- Linux and other Unix: mappings in ``$XDG_CONFIG_HOME/canne/mappings``
  (``~/.config/canne/mappings``), models in ``$XDG_DATA_HOME/canne/models``
  (``~/.local/share/canne/models``);
- macOS: ``~/Library/Application Support/CANNe/{mappings,models}``;
- Windows: ``%APPDATA%\\CANNe\\mappings`` and ``%LOCALAPPDATA%\\CANNe\\models``.

Name look-up
------------
``--model NAME`` and ``--mapping NAME`` accept a path or a bare name. A path that
exists is used as it is. A bare name (``default``, ``korg_nanokontrol2``; also the
checkout-style ``mappings/korg_nanokontrol2.yaml`` when no such file is here) is
looked up in the user folder first, then among the shipped ones, so a user copy
made by ``canne learn`` shadows the shipped mapping of the same name.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from daemon.errors import MappingError, ModelNotFoundError

__all__ = [
    "APP_NAME",
    "shipped_dir",
    "user_dir",
    "is_shipped",
    "find_model",
    "find_mapping",
    "available",
    "default_model",
    "default_mapping",
    "user_copy_of",
]

APP_NAME = "canne"
KINDS = ("models", "mappings")

_PACKAGE_DIR = Path(__file__).resolve().parent


def shipped_dir(kind: str) -> Path:
    """The folder of shipped ``models`` or ``mappings`` (installed copy, else the checkout's)."""
    _check_kind(kind)
    installed = _PACKAGE_DIR / "_shipped" / kind
    if installed.is_dir():
        return installed
    return _PACKAGE_DIR.parent / kind


def user_dir(kind: str) -> Path:
    """The performer's own folder for ``models`` or ``mappings`` (may not exist yet)."""
    _check_kind(kind)
    home = Path.home()
    if sys.platform == "win32":
        var = "LOCALAPPDATA" if kind == "models" else "APPDATA"
        base = Path(os.environ.get(var) or home / "AppData" / ("Local" if kind == "models" else "Roaming"))
        return base / "CANNe" / kind
    if sys.platform == "darwin":
        return home / "Library" / "Application Support" / "CANNe" / kind
    if kind == "models":
        base = _xdg("XDG_DATA_HOME", home / ".local" / "share")
    else:
        base = _xdg("XDG_CONFIG_HOME", home / ".config")
    return base / APP_NAME / kind


def _xdg(var: str, fallback: Path) -> Path:
    value = os.environ.get(var, "")
    # The XDG spec: a relative path in these variables is invalid and must be ignored.
    return Path(value) if value and os.path.isabs(value) else fallback


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")


def is_shipped(path) -> bool:
    """True when ``path`` lies in a shipped folder (installed package or the checkout's)."""
    p = Path(path).expanduser().resolve()
    roots = {(_PACKAGE_DIR / "_shipped").resolve(), (_PACKAGE_DIR.parent / "mappings").resolve(),
             (_PACKAGE_DIR.parent / "models").resolve()}
    return any(p == r or r in p.parents for r in roots)


def available(kind: str) -> list[str]:
    """Names found in the user folder and the shipped one (user first, no duplicates)."""
    names: list[str] = []
    for folder in (user_dir(kind), shipped_dir(kind)):
        if not folder.is_dir():
            continue
        if kind == "models":
            found = sorted(p.name for p in folder.iterdir() if (p / "decoder.onnx").is_file())
        else:
            found = sorted(p.stem for p in folder.glob("*.yaml"))
        names += [n for n in found if n not in names]
    return names


def _lookup(spec, kind: str) -> tuple[Path, bool]:
    """(path, found) for a path or bare name; the path as given when nothing matches."""
    text = str(spec)
    given = Path(text).expanduser()
    if given.exists():
        return given, True
    parts = Path(text).parts
    bare = len(parts) == 1 or (len(parts) == 2 and parts[0] == kind)
    if not bare:
        return given, False
    name = parts[-1]
    candidates = [name]
    if kind == "mappings" and not name.endswith((".yaml", ".yml")):
        candidates.append(name + ".yaml")
    for folder in (user_dir(kind), shipped_dir(kind)):
        for cand in candidates:
            p = folder / cand
            if p.exists():
                return p, True
    return given, False


def find_model(spec) -> Path:
    """Resolve ``--model`` (a model folder, a ``decoder.onnx``, or a name such as ``default``).

    Raises :class:`ModelNotFoundError` (one line, with the names available) when
    nothing matches.
    """
    return _find(spec, "models", "a folder or decoder.onnx", ModelNotFoundError)


def find_mapping(spec) -> Path:
    """Resolve ``--mapping`` (a YAML file or a name such as ``korg_nanokontrol2``).

    Raises :class:`MappingError` (one line, with the names available) when nothing matches.
    """
    return _find(spec, "mappings", "a file", MappingError)


def _find(spec, kind: str, what: str, error) -> Path:
    """``_lookup`` or ``error``: one line naming where it looked and what there is."""
    path, found = _lookup(spec, kind)
    if found:
        return path
    names = ", ".join(available(kind)) or "none"
    one = kind[:-1]
    raise error(f"{one} not found: {spec} (not {what} here, nor a {one} name in "
                f"{user_dir(kind)} or {shipped_dir(kind)}; available: {names})")


def default_model() -> Path:
    """The model ``canne run`` plays without ``--model``: ``default`` (user copy first)."""
    own = user_dir("models") / "default"
    return own if (own / "decoder.onnx").is_file() else shipped_dir("models") / "default"


def default_mapping() -> Path:
    """The mapping used without ``--mapping``: ``default.yaml`` (the user copy made by learn first)."""
    own = user_dir("mappings") / "default.yaml"
    return own if own.is_file() else shipped_dir("mappings") / "default.yaml"


def user_copy_of(path) -> Path:
    """Where ``canne learn`` writes instead of a shipped mapping: same file name, user folder."""
    return user_dir("mappings") / Path(path).name
