"""daemon.control.learn: the next CC moved is bound to a target and written into a valid YAML."""

from __future__ import annotations

import sys
from pathlib import Path

import mido
import pytest

sys.path.insert(0, str(Path(__file__).parent))


from daemon.errors import MappingError  # noqa: E402
from daemon.control.learn import (  # noqa: E402
    Binding,
    apply_binding_to_yaml,
    detect_binding,
    learn_binding,
    parse_target,
    write_binding,
)
from daemon.control.mapping import load_mapping, load_mapping_text  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted((REPO / "mappings").glob("*.yaml"))


def cc(control, value, channel=0):
    return mido.Message("control_change", channel=channel, control=control, value=value)


# --------------------------------------------------------------------------- targets
@pytest.mark.parametrize(
    "text, expected",
    [
        ("neuron 3", (3, None, None)), ("neuron:3", (3, None, None)), ("latent.3", (3, None, None)),
        ("z3", (3, None, None)), ("Neuron[3]", (3, None, None)),
        ("gain", (None, "gain", None)), ("gain_db", (None, "gain", None)), ("attack_ms", (None, "attack", None)),
        ("shift_bins", (None, "shift", None)), ("shift_semitones", (None, "shift", "semitones")),
        ("smoothing", (None, "smoothing", None)), ("sustain-level", (None, "sustain_level", None)),
    ],
)
def test_targets(text, expected):
    assert parse_target(text, latent_dim=8) == expected


@pytest.mark.parametrize("text, fragment", [("neuron 8", "0..7"), ("cutoff", "allowed: neuron N")])
def test_bad_targets(text, fragment):
    with pytest.raises(MappingError, match=fragment.replace(".", r"\.")):
        parse_target(text, latent_dim=8)


# --------------------------------------------------------------------------- detection
@pytest.mark.parametrize(
    "values, encoder",
    [
        pytest.param([10, 11, 12, 14, 17], "absolute", id="absolute-knob"),
        pytest.param([64], "absolute", id="single-value"),
        pytest.param([1, 1, 1, 2], "twos_complement", id="twos-complement-up"),
        pytest.param([127, 127, 126], "twos_complement", id="twos-complement-down"),
        pytest.param([63, 63, 62], "binary_offset", id="binary-offset-down"),
        pytest.param([65, 65, 65], "binary_offset", id="binary-offset-up"),
        pytest.param([65, 65, 1, 1], "signed_bit", id="signed-bit"),
    ],
)
def test_detect_encoder(values, encoder):
    b = detect_binding([cc(16, v, channel=2) for v in values], "neuron 1")
    assert (b.cc, b.channel, b.neuron, b.encoder, b.resolution) == (16, 3, 1, encoder, 7)


def test_detect_14bit_pair_and_ignore_other_controls():
    msgs = [mido.Message("clock"), cc(5, 20), cc(37, 3), cc(90, 1), cc(5, 21, channel=4), cc(37, 9)]
    b = detect_binding(msgs, "gain")
    assert (b.cc, b.channel, b.param, b.resolution, b.encoder) == (5, 1, "gain", 14, "absolute")


def test_detect_without_cc_fails():
    with pytest.raises(MappingError, match="no control change"):
        detect_binding([mido.Message("note_on", note=60)], "gain")


# --------------------------------------------------------------------------- YAML editing
def test_append_keeps_comments_and_loads(model):
    text = (
        "# my set — do not lose this comment\n"
        "name: mine\n"
        "controls:\n"
        "  # knob one\n"
        "  - cc: 1\n"
        "    neuron: 0   # inline comment\n"
        "\n"
        "# trailing comment\n"
        "notes: {polyphony: 4}\n"
    )
    new = apply_binding_to_yaml(text, Binding(cc=30, channel=2, param="release", encoder="twos_complement"))
    assert new.startswith(text.split("\n\n")[0])  # everything up to the last control untouched
    assert "# trailing comment" in new and "# knob one" in new and "# inline comment" in new
    m = load_mapping_text(new, model)
    assert [(c.cc, c.neuron, c.param) for c in m.controls] == [(1, 0, ""), (30, -1, "release")]
    assert m.controls[1].channels == frozenset({1}) and m.controls[1].encoder == "twos_complement"
    assert m.notes.polyphony == 4 and m.name == "mine"


def test_replace_keeps_range_label_and_position(model):
    text = (
        "controls:\n"
        "  - {cc: 21, neuron: 0, label: First}\n"
        "  - cc: 7\n"
        "    param: gain\n"
        "    range: [-40, 6]\n"
        "    label: Volume\n"
        "  - {cc: 23, neuron: 2}\n"
    )
    new = apply_binding_to_yaml(text, Binding(cc=11, channel=1, param="gain"))
    m = load_mapping_text(new, model)
    assert [(c.cc, c.label) for c in m.controls] == [(21, "First"), (11, "Volume"), (23, "CC 23")]
    gain = m.controls[1]
    assert (gain.low, gain.high, gain.channels) == (-40.0, 6.0, frozenset({0}))


@pytest.mark.parametrize(
    "text",
    [pytest.param("version: 1\n", id="no-controls"), pytest.param("controls: []\nname: x\n", id="empty-flow-list"),
     pytest.param("controls:\nname: x\n", id="empty-key"), pytest.param("", id="empty-file")],
)
def test_first_control_in_a_file_without_any(model, text):
    new = apply_binding_to_yaml(text, Binding(cc=3, channel=None, neuron=5))
    m = load_mapping_text(new, model)
    assert [(c.cc, c.neuron) for c in m.controls] == [(3, 5)]


def test_flow_style_controls_are_refused():
    with pytest.raises(MappingError, match="block list"):
        apply_binding_to_yaml("controls: [{cc: 1, neuron: 0}]\n", Binding(cc=3, channel=1, neuron=5))


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
@pytest.mark.parametrize(
    "binding",
    [pytest.param(Binding(cc=102, channel=1, neuron=3), id="neuron"),
     pytest.param(Binding(cc=103, channel=1, param="shift", unit="semitones"), id="shift-semitones"),
     pytest.param(Binding(cc=9, channel=16, param="smoothing", resolution=14), id="14bit-param")],
)
def test_learn_into_every_shipped_mapping_stays_valid(model, path, binding):
    text = path.read_text()
    new = apply_binding_to_yaml(text, binding)
    m = load_mapping_text(new, model, source=str(path), path=path)
    learned = [c for c in m.controls if c.cc == binding.cc]
    assert len(learned) == 1 and learned[0].resolution == binding.resolution
    kept_comments = [ln for ln in text.splitlines() if ln.lstrip().startswith("#")]
    assert all(ln in new for ln in kept_comments)


# --------------------------------------------------------------------------- end to end
def test_learn_binding_writes_a_file_that_loads(model, tmp_path):
    path = tmp_path / "set.yaml"
    path.write_text((REPO / "mappings" / "default.yaml").read_text())
    queue = [None, mido.Message("clock"), cc(44, 1, channel=3), cc(44, 1, channel=3), cc(44, 1, channel=3)]

    def receive(timeout):
        return queue.pop(0) if queue else None

    ticks = iter(range(10**6))
    binding = learn_binding(path, "latent.6", receive, timeout=5.0, model=model,
                            clock=lambda: next(ticks) * 0.01)
    assert binding == Binding(cc=44, channel=4, neuron=6, encoder="twos_complement")
    m = load_mapping(path, model)
    (c,) = [c for c in m.controls if c.neuron == 6]
    assert (c.cc, c.channels, c.encoder) == (44, frozenset({3}), "twos_complement")


def test_learn_binding_timeout_leaves_file_untouched(model, tmp_path):
    path = tmp_path / "set.yaml"
    path.write_text("controls:\n  - {cc: 1, neuron: 0}\n")
    ticks = iter(range(10**6))
    with pytest.raises(MappingError, match="no control change within 2 s"):
        learn_binding(path, "gain", lambda t: None, timeout=2.0, model=model, clock=lambda: next(ticks) * 0.1)
    assert path.read_text() == "controls:\n  - {cc: 1, neuron: 0}\n"


def test_learn_binding_refuses_a_conflict_and_leaves_file_untouched(model, tmp_path):
    path = tmp_path / "set.yaml"
    original = "controls:\n  - {cc: 2, neuron: 0, resolution: 14bit}\n"
    path.write_text(original)
    with pytest.raises(MappingError, match="refused, file left untouched.*LSB"):
        learn_binding(path, "gain", [cc(34, 10)], model=model)  # CC 34 is CC 2's LSB
    assert path.read_text() == original


def test_learn_binding_creates_a_missing_file(model, tmp_path):
    path = tmp_path / "new.yaml"
    learn_binding(path, "neuron 2", [cc(20, 5), cc(20, 9)], model=model)
    m = load_mapping(path, model)
    assert [(c.cc, c.neuron) for c in m.controls] == [(20, 2)]


def test_learn_into_a_missing_folder_fails_before_waiting(model, tmp_path):
    """A mapping path in a folder that does not exist: a MappingError naming the folder,
    raised before any message is read (the source must not be consumed)."""
    path = tmp_path / "no_such_folder" / "m.yaml"

    def receive(timeout):
        raise AssertionError("learn read MIDI before checking the folder")

    with pytest.raises(MappingError, match="no_such_folder.*does not exist"):
        learn_binding(path, "gain", receive, timeout=1.0, model=model)
    with pytest.raises(MappingError, match="no_such_folder.*does not exist"):
        write_binding(path, Binding(cc=1, channel=1, neuron=0), model=model)
    assert not path.parent.exists()


# --------------------------------------------------------------------------- what learn replaced
def test_learn_reports_every_control_it_replaced(model, tmp_path):
    """The shipped default drives neuron 3 from CC 24 and CC 73: both go, and both are named."""
    path = tmp_path / "set.yaml"
    path.write_text((REPO / "mappings" / "default.yaml").read_text())
    binding = learn_binding(path, "latent.3", [cc(40, 10), cc(40, 20)], model=model)
    assert len(binding.replaced) == 2, binding.replaced
    first, second = binding.replaced
    assert "cc: 24" in first and "neuron: 3" in first and "Knob 4" in first and first.startswith("line ")
    assert "cc: 73" in second and "K4" in second
    m = load_mapping(path, model)
    assert [c.cc for c in m.controls if c.neuron == 3] == [40]


def test_learn_into_a_free_target_replaces_nothing(model, tmp_path):
    path = tmp_path / "set.yaml"
    path.write_text("controls:\n  - {cc: 1, neuron: 0}\n")
    binding = learn_binding(path, "release", [cc(50, 3), cc(50, 5)], model=model)
    assert binding.replaced == ()


def test_learn_from_a_source_writes_the_copy_and_never_the_source(model, tmp_path):
    source = tmp_path / "shipped.yaml"
    original = (REPO / "mappings" / "default.yaml").read_text()
    source.write_text(original)
    copy = tmp_path / "user" / "default.yaml"
    copy.parent.mkdir()
    b = learn_binding(copy, "neuron 5", [cc(41, 1), cc(41, 2)], model=model, source=source)
    assert source.read_text() == original
    text = copy.read_text()
    assert "cc: 41" in text and "Knob 1" in text  # the rest of the shipped file came along
    assert len(b.replaced) == 2
    # Once the copy exists it is what learn edits (the source is not read again).
    source.write_text("this: [is not read\n")
    learn_binding(copy, "neuron 6", [cc(42, 1), cc(42, 2)], model=model, source=source)
    assert "cc: 41" in copy.read_text() and "cc: 42" in copy.read_text()


def test_replaced_controls_lists_block_style_items_with_their_line():
    text = "controls:\n  - cc: 1\n    neuron: 0\n    label: Mod wheel\n  - {cc: 21, neuron: 0}\n  - {cc: 7, param: gain}\n"
    from daemon.control.learn import replaced_controls

    assert replaced_controls(text, Binding(cc=5, channel=1, neuron=0)) == [
        "line 2: {cc: 1, neuron: 0, label: Mod wheel}", "line 5: {cc: 21, neuron: 0}"]
    assert replaced_controls(text, Binding(cc=5, channel=1, param="gain")) == ["line 6: {cc: 7, param: gain}"]
