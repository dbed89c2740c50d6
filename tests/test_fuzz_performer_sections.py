"""The new mapping sections (osc, snapshots, lfos, mpe, control sources) under mutation:
every variant either loads or fails with one MappingError line; nothing else escapes."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


from daemon.errors import MappingError  # noqa: E402
from daemon.control.mapping import load_mapping_text  # noqa: E402

BASE = """\
osc: {port: 9000, host: 127.0.0.1, feedback: '127.0.0.1:9001', feedback_rate: 20}
mpe: {zone: lower, members: 15, bend_range: 48, manager_bend_range: 2}
snapshots:
  slots:
    0: {name: A, latent: {0: -1.0}, params: {gain: -6}}
    1: {name: B, latent: [0, 1, 0, 0, 0, 0, 0, 0]}
  channel: 16
  recall: {note: 36}
  store: {cc: 80}
  count: 8
  program_change: true
  morph: {cc: 1, from: 0, to: 1}
lfos:
  - {neuron: 3, shape: sine, rate: 0.5, depth: 0.4, offset: 0, phase: 0.25}
  - {param: gain, shape: random, beats: 2, depth: 3, tempo: 100}
controls:
  - {source: aftertouch, neuron: 2, range: [0, 1]}
  - {source: velocity, param: attack, range: [200, 2], curve: exp}
  - {cc: 22, param: lfo1_depth, range: [0, 1]}
  - {cc: 23, param: lfo2_offset, range: [-6, 0]}
"""
TOKENS = ["-1", "0", "1", "16", "17", "128", "999999", "1e400", "nan", ".inf", "~", "''", "[]", "{}",
          "[1, 2]", "yes", "x", "'127.0.0.1:0'", "lower", "upper", "beats", "rate", "!!binary AA==", "&a 1", "*a"]


def test_base_loads(model):
    m = load_mapping_text(BASE, model)
    assert m.osc.feedback == ("127.0.0.1", 9001) and m.mpe.zone == "lower" and len(m.lfos) == 2
    assert m.snapshots.store_cc == 80 and [c.source for c in m.controls][:2] == ["aftertouch", "velocity"]


def test_mutants_load_or_fail_in_one_line(model):
    rnd = random.Random(2026)
    words = [w for w in sorted(set(BASE.replace("{", " ").replace("}", " ").replace(",", " ").replace("[", " ")
                           .replace("]", " ").split())) if w not in (":", "-")]
    loaded = refused = 0
    for _ in range(1500):
        text = BASE
        for _ in range(rnd.randrange(1, 4)):
            w = rnd.choice(words)
            i = text.find(w, rnd.randrange(len(text)))
            if i < 0:
                i = text.find(w)
            text = text[:i] + rnd.choice(TOKENS + words) + text[i + len(w):]
        try:
            load_mapping_text(text, model)
            loaded += 1
        except MappingError as exc:
            msg = str(exc)
            assert "\n" not in msg and "unexpected error" not in msg, msg
            refused += 1
    assert loaded > 50 and refused > 500
