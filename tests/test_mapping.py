"""daemon.control.mapping: YAML mappings validated once, with errors naming file, line and field."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from harmonic_model import build_harmonic_decoder  # noqa: E402

from daemon.errors import MappingError  # noqa: E402
from daemon.control.mapping import ALL_CHANNELS, decode_relative, load_mapping, load_mapping_text  # noqa: E402
from daemon.core.model import DecoderModel  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted((REPO / "mappings").glob("*.yaml"))


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = build_harmonic_decoder(
        tmp_path_factory.mktemp("model") / "hm",
        extra_metadata={"latent_min": [-1, -2, -3, -4, 0, 0, 0, 0], "latent_max": [1, 2, 3, 4, 5, 6, 7, 8],
                        "latent_default": [0.5] * 8},
    )
    return DecoderModel(path)


def write(tmp_path, text, name="m.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


# --------------------------------------------------------------------------- good files
def test_defaults_come_from_the_model(model, tmp_path):
    m = load_mapping(write(tmp_path, "controls:\n  - {cc: 21, neuron: 3}\n"), model)
    (c,) = m.controls
    assert (c.low, c.high) == (-4.0, 4.0)  # the model's learned range of neuron 3
    assert m.initial_latent == (0.5,) * 8
    assert m.notes.reference_note == model.reference_note
    assert m.notes.pitch_mode == "transpose" and m.notes.polyphony == 8
    assert m.pitch_bend_range == 2.0 and m.sustain_cc == 64
    assert c.takeover == "pickup" and c.channels == ALL_CHANNELS and c.line == 2
    assert m.name == "m"


def test_channels_are_counted_from_one(model, tmp_path):
    text = (
        "channel: 2\n"
        "controls:\n"
        "  - {cc: 1, neuron: 0}\n"
        "  - {cc: 2, neuron: 1, channel: 16}\n"
        "  - {cc: 3, neuron: 2, channel: [1, 10]}\n"
        "  - {cc: 4, neuron: 3, channel: all}\n"
        "notes: {channel: 10}\n"
    )
    m = load_mapping(write(tmp_path, text), model)
    assert [c.channels for c in m.controls] == [frozenset({1}), frozenset({15}), frozenset({0, 9}), ALL_CHANNELS]
    assert m.notes.channels == frozenset({9})
    assert m.pitch_bend_channels == frozenset({9}) and m.sustain_channels == frozenset({9})


@pytest.mark.parametrize(
    "curve, position, expected",
    [
        pytest.param("linear", 0.5, 0.5, id="linear-mid"),
        pytest.param("exp", 0.5, 0.2, id="exp-mid-is-one-fifth"),
        pytest.param("log", 0.2, 0.5, id="log-is-exp-mirrored"),
        pytest.param("2", 0.5, 0.25, id="exponent-2"),
        pytest.param("0.5", 0.25, 0.5, id="exponent-0.5"),
    ],
)
def test_curves_map_position_to_range(model, tmp_path, curve, position, expected):
    m = load_mapping(write(tmp_path, f"controls:\n  - {{cc: 1, neuron: 0, range: [0, 10], curve: {curve}}}\n"), model)
    c = m.controls[0]
    assert c.value_at(position) == pytest.approx(10 * expected, abs=1e-9)
    assert c.value_at(0.0) == pytest.approx(0.0) and c.value_at(1.0) == pytest.approx(10.0)
    for p in (0.0, 0.1, 0.37, 0.9, 1.0):
        assert c.position_of(c.value_at(p)) == pytest.approx(p, abs=1e-9)


@pytest.mark.parametrize(
    "spec, top, bottom",
    [
        pytest.param("range: [3, -1]", -1.0, 3.0, id="min-greater-than-max"),
        pytest.param("range: [-1, 3], invert: true", -1.0, 3.0, id="invert-flag"),
        pytest.param("range: [3, -1], invert: true", 3.0, -1.0, id="both-cancel"),
    ],
)
def test_inversion(model, tmp_path, spec, top, bottom):
    m = load_mapping(write(tmp_path, f"controls:\n  - {{cc: 1, neuron: 0, {spec}}}\n"), model)
    c = m.controls[0]
    assert c.value_at(1.0) == pytest.approx(top) and c.value_at(0.0) == pytest.approx(bottom)


def test_shift_in_semitones_converts_to_bins(model, tmp_path):
    m = load_mapping(write(tmp_path, "controls:\n  - {cc: 1, param: shift, unit: semitones, range: [-12, 12]}\n"), model)
    c = m.controls[0]
    f_ref = 440.0 * 2 ** ((model.reference_note - 69) / 12)
    bins_per_hz = model.n_fft / model.sample_rate
    assert c.engine_param == "shift_bins"
    assert c.value_at(1.0) == pytest.approx(f_ref * bins_per_hz)  # +1 octave: the reference moves by f_ref
    assert c.value_at(0.0) == pytest.approx(-0.5 * f_ref * bins_per_hz)  # -1 octave: by f_ref/2
    assert c.value_at(0.5) == pytest.approx(0.0, abs=1e-12)
    assert c.position_of(c.value_at(0.8)) == pytest.approx(0.8)


def test_params_initial_latent_and_programs(model, tmp_path):
    write(tmp_path, "name: other\n", "other.yaml")
    text = (
        "initial_latent: {2: 1.5, 7: -3}\n"
        "params: {gain: -6, attack: 5, shift_semitones: 0}\n"
        "programs:\n"
        f"  3: {{name: Alt, model: {model.path.parent}, mapping: other.yaml}}\n"
        "  0: {mapping: other.yaml}\n"
    )
    m = load_mapping(write(tmp_path, text), model)
    assert m.initial_latent == (0.5, 0.5, 1.5, 0.5, 0.5, 0.5, 0.5, -3.0)
    assert dict(m.params) == {"gain_db": -6.0, "attack_ms": 5.0, "shift_bins": 0.0}
    assert [p.number for p in m.programs] == [0, 3]
    assert m.program(3).model == model.path.parent.resolve() and m.program(3).name == "Alt"
    assert m.program(0).model is None and m.program(0).mapping == (tmp_path / "other.yaml").resolve()
    assert m.program(5) is None


@pytest.mark.parametrize(
    "encoder, value, ticks",
    [
        ("signed_bit", 1, 1), ("signed_bit", 64, 64), ("signed_bit", 65, -1), ("signed_bit", 127, -63),
        ("signed_bit_2", 65, 1), ("signed_bit_2", 127, 63), ("signed_bit_2", 1, -1), ("signed_bit_2", 64, -64),
        ("binary_offset", 65, 1), ("binary_offset", 127, 63), ("binary_offset", 63, -1), ("binary_offset", 0, -64),
        ("binary_offset", 64, 0),
        ("twos_complement", 1, 1), ("twos_complement", 64, 64), ("twos_complement", 127, -1),
        ("twos_complement", 65, -63), ("twos_complement", 0, 0),
    ],
)
def test_relative_encoder_conventions(encoder, value, ticks):
    """Ableton's table: signed bit 1-64 up / 65-127 down, signed bit 2 the reverse,
    binary offset around 64, two's complement 127 = -1."""
    assert decode_relative(encoder, value) == ticks


# --------------------------------------------------------------------------- bad files
BAD = [
    # (id, text, line, field fragment, message fragment)
    ("unknown-top-field", "name: x\ncolour: red\n", 2, "colour", "unknown field"),
    ("version", "version: 2\n", 1, "version", "1..1"),
    ("global-channel-17", "channel: 17\n", 1, "channel", "1..16"),
    ("global-channel-0", "channel: 0\n", 1, "channel", "1..16"),
    ("global-channel-text", "channel: drums\n", 1, "channel", "1..16"),
    ("takeover", "takeover: soft\n", 1, "takeover", "jump, pickup, scale"),
    ("controls-not-list", "controls: {cc: 1}\n", 1, "controls", "expected a list"),
    ("cc-missing", "controls:\n  - {neuron: 1}\n", 2, "controls[0].cc", "missing"),
    ("cc-128", "controls:\n  - {cc: 1, neuron: 0}\n  - {cc: 128, neuron: 1}\n", 3, "controls[1].cc", "0..127"),
    ("cc-negative", "controls:\n  - {cc: -1, neuron: 0}\n", 2, "controls[0].cc", "0..127"),
    ("cc-text", "controls:\n  - {cc: knob, neuron: 0}\n", 2, "controls[0].cc", "whole number"),
    ("two-targets", "controls:\n  - {cc: 1, neuron: 0, param: gain}\n", 2, "controls[0]", "exactly one target"),
    ("no-target", "controls:\n  - {cc: 1}\n", 2, "controls[0]", "exactly one target"),
    ("neuron-8", "controls:\n  - {cc: 1, neuron: 8}\n", 2, "controls[0].neuron", "latent_dim=8"),
    ("param-unknown", "controls:\n  - {cc: 1, param: volume}\n", 2, "controls[0].param", "gain"),
    ("range-one-value", "controls:\n  - {cc: 1, neuron: 0, range: [1]}\n", 2, "controls[0].range", "[min, max]"),
    ("range-equal", "controls:\n  - {cc: 1, neuron: 0, range: [1, 1]}\n", 2, "controls[0].range", "min equals max"),
    ("range-text", "controls:\n  - {cc: 1, neuron: 0, range: [0, loud]}\n", 2, "controls[0].range[1]", "not a number"),
    ("range-nan", "controls:\n  - {cc: 1, neuron: 0, range: [0, .nan]}\n", 2, "controls[0].range[1]", "not a number"),
    ("gain-range-limit", "controls:\n  - cc: 7\n    param: gain\n    range: [-60, 50]\n", 4,
     "controls[0].range[1]", "-120..24 dB"),
    ("curve-unknown", "controls:\n  - {cc: 1, neuron: 0, curve: sigmoid}\n", 2, "controls[0].curve", "linear, exp, log"),
    ("curve-exponent-0", "controls:\n  - {cc: 1, neuron: 0, curve: 0}\n", 2, "controls[0].curve", "0.05..20"),
    ("invert-text", "controls:\n  - {cc: 1, neuron: 0, invert: maybe}\n", 2, "controls[0].invert", "true, false"),
    ("14bit-high-cc", "controls:\n  - {cc: 40, neuron: 0, resolution: 14bit}\n", 2, "controls[0].cc", "0..31"),
    ("resolution-12", "controls:\n  - {cc: 1, neuron: 0, resolution: 12bit}\n", 2, "controls[0].resolution", "7bit, 14bit"),
    ("encoder-unknown", "controls:\n  - {cc: 1, neuron: 0, encoder: relative}\n", 2, "controls[0].encoder",
     "signed_bit, signed_bit_2, binary_offset, twos_complement"),
    ("14bit-relative", "controls:\n  - {cc: 1, neuron: 0, resolution: 14bit, encoder: signed_bit}\n", 2,
     "controls[0].encoder", "7-bit"),
    ("step-without-encoder", "controls:\n  - {cc: 1, neuron: 0, step: 0.1}\n", 2, "controls[0].step", "relative"),
    ("step-zero", "controls:\n  - {cc: 1, neuron: 0, encoder: binary_offset, step: 0}\n", 2, "controls[0].step", "1e-05..1"),
    ("unit-on-neuron", "controls:\n  - {cc: 1, neuron: 0, unit: semitones}\n", 2, "controls[0].unit", "param: shift"),
    ("unit-hz", "controls:\n  - {cc: 1, param: shift, unit: hz}\n", 2, "controls[0].unit", "bins, semitones"),
    ("semitones-limit", "controls:\n  - {cc: 1, param: shift, unit: semitones, range: [0, 60]}\n", 2,
     "controls[0].range[1]", "-48..48 semitones"),
    ("control-typo", "controls:\n  - cc: 1\n    neuron: 0\n    chanel: 2\n", 4, "controls[0].chanel", "unknown field"),
    ("control-duplicate-key", "controls:\n  - cc: 1\n    neuron: 0\n    cc: 2\n", 4, "controls[0].cc", "twice"),
    ("control-channel-list", "controls:\n  - {cc: 1, neuron: 0, channel: [1, 17]}\n", 2, "controls[0].channel[1]", "1..16"),
    ("pitch-mode", "notes:\n  pitch_mode: chromatic\n", 2, "notes.pitch_mode", "shift, transpose, tuned, off"),
    ("polyphony-0", "notes:\n  polyphony: 0\n", 2, "notes.polyphony", "1..64"),
    ("reference-note", "notes:\n  reference_note: 200\n", 2, "notes.reference_note", "0..127"),
    ("velocity-curve", "notes:\n  velocity_curve: loud\n", 2, "notes.velocity_curve", "linear, soft, hard, fixed"),
    ("notes-typo", "notes:\n  polyfony: 4\n", 2, "notes.polyfony", "unknown field"),
    ("bend-range", "pitch_bend:\n  range: 100\n", 2, "pitch_bend.range", "0..48 semitones"),
    ("sustain-text", "sustain: pedal\n", 1, "sustain", "a CC number"),
    ("sustain-cc-conflict", "sustain: {cc: 64}\ncontrols:\n  - {cc: 64, neuron: 0}\n", 3, "controls[0].cc", "sustain"),
    ("lsb-conflict", "controls:\n  - {cc: 2, neuron: 0, resolution: 14bit}\n  - {cc: 34, neuron: 1}\n", 3,
     "controls[1].cc", "LSB"),
    ("initial-latent-length", "initial_latent: [0, 1, 2]\n", 1, "initial_latent", "needs 8 values"),
    ("initial-latent-neuron", "initial_latent:\n  9: 1.0\n", 2, "initial_latent.9", "0..7"),
    ("initial-latent-word", "initial_latent: random\n", 1, "initial_latent", "default"),
    ("params-unknown", "params:\n  volume: 3\n", 2, "params.volume", "unknown field"),
    ("params-gain", "params:\n  gain: 100\n", 2, "params.gain", "-120..24 dB"),
    ("program-number", "programs:\n  200: {mapping: m.yaml}\n", 2, "programs.200", "0..127"),
    ("program-empty", "programs:\n  1: {name: x}\n", 2, "programs.1", "neither a model nor a mapping"),
    ("program-no-model", "programs:\n  1: {model: nowhere}\n", 2, "programs.1.model", "no model there"),
    ("program-no-mapping", "programs:\n  1:\n    mapping: nowhere.yaml\n", 3, "programs.1.mapping", "no such file"),
    ("yaml-syntax", "name: x\ncontrols:\n  - {cc: 1, neuron: 0\n  - {cc: 2}\n", 4, "YAML syntax error", ""),
    ("top-is-list", "- cc: 1\n", 1, "(top level): expected a section", ""),
    ("bend-range-huge-int", "pitch_bend: 1" + "0" * 400 + "\n", 1, "pitch_bend", "0..48 semitones"),
    ("range-huge-int", "controls:\n  - {cc: 1, neuron: 0, range: [0, -1" + "0" * 400 + "]}\n", 2,
     "controls[0].range[1]", "-1000..1000"),
]


@pytest.mark.parametrize("text, line, fieldname, fragment", [pytest.param(*c[1:], id=c[0]) for c in BAD])
def test_invalid_field_names_file_line_and_field(model, tmp_path, text, line, fieldname, fragment):
    path = write(tmp_path, text)
    with pytest.raises(MappingError) as info:
        load_mapping(path, model)
    msg = str(info.value)
    assert msg.startswith(f"{path}:{line}: "), msg
    assert fieldname in msg and fragment in msg, msg
    assert "\n" not in msg


def test_missing_and_empty_files(model, tmp_path):
    with pytest.raises(MappingError, match=r"nope\.yaml: mapping file not found"):
        load_mapping(tmp_path / "nope.yaml", model)
    with pytest.raises(MappingError, match=r"m\.yaml:1: the mapping file is empty"):
        load_mapping(write(tmp_path, "# nothing\n"), model)


def test_mapping_error_is_a_value_error(model):
    with pytest.raises(ValueError):
        load_mapping_text("channel: 99\n", model)


def test_model_without_metadata_is_refused():
    with pytest.raises(MappingError, match="lacks model metadata"):
        load_mapping_text("{}", object())


# --------------------------------------------------------------------------- shipped files
@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_mappings_load(model, path):
    m = load_mapping(path, model)
    assert m.controls, f"{path.name} maps no controls"
    assert all(0 <= c.cc <= 127 for c in m.controls)
    assert all(math.isfinite(c.value_at(p)) for c in m.controls for p in (0.0, 0.5, 1.0))
    text = path.read_text()
    assert text.lstrip().startswith("#"), f"{path.name} must start with a header comment saying what it follows"


def test_at_least_three_controller_files_ship():
    names = {p.name for p in SHIPPED}
    assert "default.yaml" in names
    assert len(names - {"default.yaml"}) >= 3, names


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_mappings_load_against_the_shipped_model(path):
    shipped = DecoderModel(REPO / "models" / "default")
    m = load_mapping(path, shipped)
    if m.effect is not None:  # an effect mapping (mappings/anne.yaml): its knobs drive the effect
        assert m.controls and all(c.param.startswith("effect_") for c in m.controls)
        assert len(m.effect.gains) == 5
        return
    first_eight = m.controls[:8]  # every synth mapping puts 8 neurons, default ranges, first
    assert sorted(c.neuron for c in first_eight) == list(range(8))
    for c in first_eight:
        assert (c.low, c.high) == pytest.approx(
            (float(shipped.latent_min[c.neuron]), float(shipped.latent_max[c.neuron])))


def test_neuron_with_an_empty_learned_range_needs_a_range(tmp_path):
    """A neuron the model never moved (latent_min == latent_max): a control with no
    range would do nothing (and its soft takeover would divide by zero)."""
    dead = DecoderModel(build_harmonic_decoder(
        tmp_path / "dead", extra_metadata={"latent_min": [-1, 0.25] + [0] * 6, "latent_max": [1, 0.25] + [1] * 6}))
    path = write(tmp_path, "controls:\n  - {cc: 1, neuron: 0}\n  - {cc: 2, neuron: 1}\n")
    with pytest.raises(MappingError) as info:
        load_mapping(path, dead)
    msg = str(info.value)
    assert msg.startswith(f"{path}:3: controls[1].range: ") and "neuron 1" in msg and "0.25..0.25" in msg, msg
    m = load_mapping(write(tmp_path, "controls:\n  - {cc: 2, neuron: 1, range: [0, 1]}\n"), dead)
    assert (m.controls[0].low, m.controls[0].high) == (0.0, 1.0)
