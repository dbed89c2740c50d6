"""Snapshots and morph: the mapping's 'snapshots:' section, MIDI keys, program changes,
saving into the user's copy, and a morph sweep through the real Engine's smoothing."""

from __future__ import annotations

import sys
from pathlib import Path

import mido
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))


from daemon.core.engine import Engine  # noqa: E402
from daemon.errors import MappingError  # noqa: E402
from daemon.control.mapper import Mapper  # noqa: E402
from daemon.control.mapping import load_mapping, load_mapping_text  # noqa: E402
from daemon.control.snapshots import apply_snapshot_to_yaml, write_snapshot  # noqa: E402

SR = 44100
MAPPING = """\
# my set
params: {smoothing: 60}
snapshots:
  slots:
    0: {name: Dark, latent: {0: -1.5, 1: 0.5}}
    1: {name: Bright, latent: {0: 1.5, 1: -0.5}, params: {gain: -12}}
  channel: 16
  recall: {note: 36}
  store: {note: 48}
  count: 4
  program_change: true
  morph: {cc: 1, from: 0, to: 1}
controls:
  - {cc: 21, neuron: 2, range: [-2, 2], takeover: jump}
"""


def rig(model, text=MAPPING):
    engine = Engine(model, sample_rate=SR, polyphony=4, seed=1)
    return engine, Mapper(load_mapping_text(text, model), engine)


def note(n, v=100, ch=15):
    return mido.Message("note_on", note=n, velocity=v, channel=ch)


def test_section_parsed(model):
    m = load_mapping_text(MAPPING, model).snapshots
    assert [s.name for s in m.slots] == ["Dark", "Bright"]
    assert m.slot(1).latent[:2] == (1.5, -0.5) and m.slot(1).params == (("gain_db", -12.0),)
    assert m.slot(0).latent[2:] == tuple(model.latent_default[2:])
    assert m.key_action("note", 15, 37) == ("recall", 1) and m.key_action("note", 15, 50) == ("store", 2)
    assert m.key_action("note", 0, 37) is None and m.key_action("note", 15, 40) is None


@pytest.mark.parametrize("text, error", [
    ("snapshots: {slots: {200: {latent: {}}}}", "snapshots.slots.200: not a slot number"),
    ("snapshots: {slots: {1: {name: x}}}", "snapshots.slots.1.latent: missing"),
    ("snapshots: {slots: {1: {latent: [1, 2]}}}", "snapshots.slots.1.latent: needs 8 values"),
    ("snapshots: {recall: {note: 36}, store: {note: 38}}", "snapshots.store.note: overlaps the recall notes"),
    ("snapshots: {recall: {note: 36, cc: 3}}", "snapshots.recall: needs exactly one of note / cc"),
    ("snapshots: {morph: {cc: 300}}", "snapshots.morph.cc: out of range"),
])
def test_section_errors(model, text, error):
    with pytest.raises(MappingError, match=error.replace(".", r"\.")):
        load_mapping_text(text + "\n", model)


def test_keys_store_recall_and_do_not_play(model):
    engine, mapper = rig(model)
    mapper.handle(mido.Message("control_change", control=21, value=127))  # neuron 2 -> 2.0
    mapper.handle(note(50))          # store into slot 2
    mapper.handle(note(50, 0))       # its release: nothing
    assert mapper.snapshots[2].latent[2] == 2.0 and mapper.snapshot_stores == 1
    mapper.handle(note(36))          # recall slot 0
    assert mapper.latents[:3] == (-1.5, 0.5, model.latent_default[2])
    mapper.handle(note(38))          # recall slot 2 (the stored one)
    assert mapper.latents[2] == 2.0
    engine.render(engine.hop_length)
    assert engine.stats.active_voices == 0  # snapshot keys never sound
    mapper.handle(mido.Message("program_change", program=1, channel=0))  # no programs: table -> slot 1
    assert mapper.latents[0] == 1.5 and mapper.params["gain_db"] == -12.0
    assert mapper.snapshot_recalls == 3


def test_save_current_sound_into_user_copy(model, tmp_path, monkeypatch):
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    src = shipped / "mine.yaml"
    src.write_text(MAPPING)
    user = tmp_path / "user"
    monkeypatch.setattr("daemon.paths.is_shipped", lambda p: Path(p).parent == shipped)
    monkeypatch.setattr("daemon.paths.user_copy_of", lambda p: user / Path(p).name)
    engine = Engine(model, sample_rate=SR)
    mapper = Mapper(load_mapping(src, model), engine)
    mapper.set_latent(3, 0.625)
    mapper.set_param("gain", -3.0)
    mapper.store_snapshot(1, "Found it")
    written = mapper.save_snapshot(1)
    assert written == user / "mine.yaml" and src.read_text() == MAPPING  # the shipped file untouched
    text = written.read_text()
    assert text.startswith("# my set\n") and "controls:" in text  # comments and the rest kept
    again = load_mapping(written, model).snapshots.slot(1)
    assert again.name == "Found it" and again.latent[3] == 0.625 and dict(again.params)["gain_db"] == -3.0
    assert load_mapping(written, model).snapshots.slot(0).name == "Dark"


@pytest.mark.parametrize("text", ["", "version: 1\n", "snapshots:\n", "snapshots:\n  count: 2\n",
                                  "snapshots:\n    slots:\n        4: [0, 0, 0, 0, 0, 0, 0, 0]\n  # end\n"])
def test_yaml_edit_shapes(model, text):
    from daemon.control.mapping import Snapshot

    snap = Snapshot(4, "new", tuple(float(i) for i in range(8)), (("gain_db", -6.0),))
    out = apply_snapshot_to_yaml(text, snap)
    got = load_mapping_text(out, model).snapshots.slot(4)
    assert got.latent == snap.latent and got.params == snap.params
    assert out.count("4: ") == 1


def test_write_refuses_flow_style(model, tmp_path):
    from daemon.control.mapping import Snapshot

    p = tmp_path / "m.yaml"
    p.write_text("snapshots: {count: 2}\n")
    with pytest.raises(MappingError, match="block section"):
        write_snapshot(p, Snapshot(0, "x", tuple([0.0] * 8)), model=model)
    assert p.read_text() == "snapshots: {count: 2}\n"


def test_morph_sweep_is_continuous(model):
    """A CC sweep 0..127 (one value per hop) moves the latent no faster than the
    smoothing allows, and the sound has no click (no sample step above the static sounds')."""
    engine, mapper = rig(model)
    hop = engine.hop_length
    mapper.handle(mido.Message("control_change", control=1, value=0))  # slot 0
    engine.note_on(60, 100)
    for _ in range(40):
        engine.render(hop)
    z_prev = engine.latent
    audio = []
    steps = []
    for v in list(range(128)) + [127] * 30:
        mapper.handle(mido.Message("control_change", control=1, value=v))
        audio.append(engine.render(hop).copy())
        z = engine.latent
        steps.append(np.max(np.abs(z - z_prev)))
        z_prev = z
    a, b = mapper.snapshots[0].latent, mapper.snapshots[1].latent
    per_cc = max(abs(x - y) for x, y in zip(a, b)) / 127.0
    # the target moves by per_cc each hop: a one-pole follows a ramp with steps <= per_cc
    assert max(steps) <= per_cc * (1 + 1e-9)
    assert max(steps) >= 0.5 * per_cc  # (it did move)
    assert np.allclose(engine.latent[:2], b[:2], atol=1e-3)
    # no click: compare with the largest sample step of the two static sounds
    y = np.concatenate(audio)
    static = []
    for slot in (0, 1):
        e2, m2 = rig(model)
        m2.recall_snapshot(slot)
        m2.handle(mido.Message("control_change", control=1, value=127 * slot))
        e2.note_on(60, 100)
        for _ in range(40):
            e2.render(hop)
        static.append(np.max(np.abs(np.diff(e2.render(60 * hop)))))
    assert np.max(np.abs(np.diff(y))) <= 1.25 * max(static)
    # gain params interpolate too (slot 1 has gain -12, slot 0 none: not touched)
    assert mapper.morph(0.5)


def test_recall_glides_through_smoothing(model):
    """A recall is a jump of the target: the latent follows at the smoothing's pace."""
    engine, mapper = rig(model)
    hop = engine.hop_length
    c = np.exp(-hop / SR / 0.060)  # one-pole coefficient for smoothing 60 ms (daemon.core.dsp)
    mapper.recall_snapshot(0)
    for _ in range(60):
        engine.render(hop)
    z0 = engine.latent
    mapper.recall_snapshot(1)
    dist = np.max(np.abs(np.subtract(mapper.snapshots[1].latent, z0)))
    prev, steps = z0, []
    for _ in range(60):
        engine.render(hop)
        steps.append(np.max(np.abs(engine.latent - prev)))
        prev = engine.latent
    assert steps[0] == pytest.approx((1 - c) * dist, rel=1e-6)
    assert max(steps) <= (1 - c) * dist * (1 + 1e-9)


def test_morph_needs_both_slots(model):
    engine, mapper = rig(model)
    mapper.set_morph_pair(0, 9)
    assert mapper.morph(0.5) is False and mapper.snapshot_errors == 1


@pytest.mark.parametrize("target, msgs, expect", [
    ("snapshot.recall", [mido.Message("clock"), mido.Message("note_on", note=40, velocity=90, channel=9)],
     {"recall_note": 40, "channels": frozenset({9})}),
    ("snapshot.store", [mido.Message("control_change", control=80, value=0),
                        mido.Message("control_change", control=81, value=127, channel=2)],
     {"store_cc": 81, "channels": frozenset({2})}),
    ("snapshot.morph", [mido.Message("note_on", note=1, velocity=9), mido.Message("control_change", control=16, value=3)],
     {"morph_cc": 16, "morph_from": 0, "morph_to": 1}),
    ("snapshot.recall", [mido.Message("program_change", program=5)], {"program_change": True}),
])
def test_learn_snapshot_keys(model, tmp_path, target, msgs, expect):
    from daemon.control.learn import learn_binding

    p = tmp_path / "m.yaml"
    p.write_text(MAPPING)
    b = learn_binding(p, target, msgs, model=model)
    assert b.describe() and b.replaced == ()
    text = p.read_text()
    assert text.startswith("# my set\n")
    sn = load_mapping(p, model).snapshots
    for key, value in expect.items():
        assert getattr(sn, key) == value, (key, text)
    assert [s.name for s in sn.slots] == ["Dark", "Bright"]  # the rest kept


def test_learn_snapshot_into_a_file_without_the_section(model, tmp_path):
    from daemon.control.learn import learn_binding

    p = tmp_path / "m.yaml"
    p.write_text("version: 1\n")
    learn_binding(p, "snapshot.store", [mido.Message("note_on", note=50, velocity=1)], model=model)
    sn = load_mapping(p, model).snapshots
    assert sn.store_note == 50 and sn.channels == frozenset({0})
    before = p.read_text()
    with pytest.raises(MappingError, match="no note, button or program change"):
        learn_binding(p, "snapshot.recall", [mido.Message("control_change", control=3, value=0)], model=model)
    assert p.read_text() == before
