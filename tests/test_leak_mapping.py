"""Memory: 1,000 mapping loads and 1,000 program changes grow the heap by at most 5 MB.

Before the fix the module-level YAML constructor kept every node it had built: 87 kB
per load of the default mapping, 211 MB over 1,490 program changes in a live run.
Measured with tracemalloc (Python allocations), after a warm-up, with a full
collection before each reading.
"""

from __future__ import annotations

import gc
import logging
import sys
import tracemalloc
from pathlib import Path

import mido
import pytest

sys.path.insert(0, str(Path(__file__).parent))


from daemon.control.mapper import Mapper  # noqa: E402
from daemon.control.mapping import load_mapping  # noqa: E402
from daemon.app.runtime import ProgramSwitcher  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO / "mappings" / "default.yaml"
N = 1000
LIMIT = 5 << 20  # bytes (issue 9: <= 5 MB over 1,000 program changes)


class NullEngine:
    """The Engine control API, doing nothing (a recording engine would grow by itself)."""

    def __init__(self, model):
        self.model = model

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def traced_growth(step, n: int, warmup: int = 20) -> int:
    """Bytes of Python heap still allocated after ``n`` calls of ``step`` (minus before)."""
    for _ in range(warmup):
        step()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(n):
            step()
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def test_mapping_loads_do_not_leak(model):
    growth = traced_growth(lambda: load_mapping(DEFAULT, model), N)
    print(f"{N} loads of {DEFAULT.name}: {growth / 1024:.1f} KiB")
    assert growth <= LIMIT, f"{N} mapping loads grew the heap by {growth / 2**20:.1f} MiB"


def test_program_changes_do_not_leak(model, tmp_path):
    """Program changes through the Mapper and the instrument's program switcher (inline:
    each loads and swaps a mapping),
    alternating between two files, as a performer flipping between two programs."""
    programs = "\nprograms:\n  0: {name: A, mapping: a.yaml}\n  1: {name: B, mapping: b.yaml}\n"
    text = DEFAULT.read_text(encoding="utf-8")
    (tmp_path / "a.yaml").write_text(text + programs)
    (tmp_path / "b.yaml").write_text(text.replace("takeover: pickup", "takeover: jump") + programs)
    engine = NullEngine(model)
    mapper = Mapper(load_mapping(tmp_path / "a.yaml", model), engine)
    switcher = ProgramSwitcher(mapper, engine)
    messages = [mido.Message("program_change", program=p) for p in (1, 0)]
    count = [0]

    def change():
        mapper.handle(messages[count[0] % 2])
        count[0] += 1

    logging.getLogger("canne.run").setLevel(logging.WARNING)  # no INFO records kept by pytest
    try:
        growth = traced_growth(change, N)
    finally:
        logging.getLogger("canne.run").setLevel(logging.NOTSET)
    print(f"{N} program changes: {growth / 1024:.1f} KiB")
    assert switcher.errors == 0 and switcher.switches == N + 20
    assert mapper.mapping.path == tmp_path / ("a.yaml" if count[0] % 2 == 0 else "b.yaml")
    assert growth <= LIMIT, f"{N} program changes grew the heap by {growth / 2**20:.1f} MiB"
