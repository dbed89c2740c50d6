"""The layers of ``daemon/`` (docs/architecture.md): imports only go downwards.

app -> control, adapters, core, shared; control -> core, shared; adapters -> shared;
core -> shared; shared -> shared. And ``daemon`` never imports torch or ``training``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

DAEMON = Path(__file__).resolve().parent.parent / "daemon"
SHARED = {"errors", "paths", "inputfile", "__init__"}
ALLOWED = {
    "app": {"app", "control", "adapters", "core", "shared"},
    "control": {"control", "core", "shared"},
    "adapters": {"adapters", "shared"},
    "core": {"core", "shared"},
    "shared": {"shared"},
}


def _layer_of_file(path: Path) -> str:
    rel = path.relative_to(DAEMON).parts
    return rel[0] if len(rel) > 1 else "shared"


def _layer_of_module(name: str) -> str | None:
    parts = name.split(".")
    if parts[0] != "daemon":
        return None
    if len(parts) == 1 or parts[1] in SHARED or parts[1].startswith("__"):
        return "shared"  # the package itself (daemon.__version__) and its shared modules
    return parts[1]


def _imports(path: Path):
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, a.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "daemon":  # from daemon import paths, errors
                for a in node.names:
                    yield node.lineno, f"daemon.{a.name}"
            else:
                yield node.lineno, node.module


FILES = sorted(p for p in DAEMON.rglob("*.py") if "_shipped" not in p.parts)


def test_every_module_sits_in_a_known_layer():
    assert {_layer_of_file(p) for p in FILES} == set(ALLOWED)


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(DAEMON)))
def test_imports_only_go_downwards(path):
    here = _layer_of_file(path)
    bad = []
    for line, name in _imports(path):
        top = name.split(".")[0]
        if top in ("torch", "training"):
            bad.append(f"line {line}: {name} (daemon never imports torch or training)")
        layer = _layer_of_module(name)
        if layer is not None and layer not in ALLOWED[here]:
            bad.append(f"line {line}: {name} ({here} may not import {layer})")
    assert not bad, f"{path.relative_to(DAEMON)}: " + "; ".join(bad)
