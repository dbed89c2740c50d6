"""daemon.control.mapper: MIDI messages -> Engine calls, as the mapping says.

The engine here is a recording test double with the contract's method names
(docs/contracts.md); tests/test_mapper_engine.py drives the real Engine.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import mido
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from harmonic_model import build_harmonic_decoder  # noqa: E402

from daemon.control.mapper import TAKEOVER_TOLERANCE, Mapper  # noqa: E402
from daemon.control.mapping import load_mapping, load_mapping_text  # noqa: E402
from daemon.core.model import DecoderModel  # noqa: E402
from daemon.app.runtime import ProgramSwitcher  # noqa: E402


class RecordingEngine:
    """Records every control call as (name, args); the Engine API of docs/contracts.md."""

    def __init__(self, model=None):
        self.model = model
        self.calls: list = []

    def _rec(self, name, *args):
        self.calls.append((name, args))

    def note_on(self, note, velocity):
        self._rec("note_on", note, velocity)

    def note_off(self, note):
        self._rec("note_off", note)

    def set_sustain(self, on):
        self._rec("set_sustain", on)

    def set_pitch_bend(self, semitones):
        self._rec("set_pitch_bend", semitones)

    def set_latent(self, index, value):
        self._rec("set_latent", index, value)

    def set_latents(self, values):
        self._rec("set_latents", tuple(values))

    def set_param(self, name, value):
        self._rec("set_param", name, value)

    def set_pitch_mode(self, mode, reference_note=60):
        self._rec("set_pitch_mode", mode, reference_note)

    def all_notes_off(self):
        self._rec("all_notes_off")

    def set_polyphony(self, n):
        self._rec("set_polyphony", n)

    def set_model(self, model):
        self._rec("set_model", model)

    def of(self, name):
        return [args for n, args in self.calls if n == name]

    def clear(self):
        self.calls.clear()


def cc(control, value, channel=0):
    return mido.Message("control_change", channel=channel, control=control, value=value)


def make(model, text, **kw):
    mapping = load_mapping_text(text, model)
    engine = RecordingEngine(model)
    mapper = Mapper(mapping, engine, **kw)
    engine.clear()
    return mapper, engine


# --------------------------------------------------------------------------- set-up
def test_initial_configuration_is_sent(model):
    text = (
        "initial_latent: [1, 0, 0, 0, 0, 0, 0, -1]\n"
        "params: {gain: -6, release: 300}\n"
        "notes: {pitch_mode: tuned, reference_note: 57, polyphony: 4, velocity_curve: 1.5}\n"
    )
    engine = RecordingEngine(model)
    Mapper(load_mapping_text(text, model), engine)
    assert engine.of("set_pitch_mode") == [("tuned", 57)]
    assert engine.of("set_polyphony") == [(4,)]
    assert ("velocity_curve", 1.5) in engine.of("set_param")
    assert engine.of("set_latents") == [((1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0),)]
    assert ("gain_db", -6.0) in engine.of("set_param") and ("release_ms", 300.0) in engine.of("set_param")


def test_no_mapping_file_uses_the_engines_model(model):
    engine = RecordingEngine(model)
    mapper = Mapper(None, engine)
    assert mapper.mapping.controls == ()
    mapper.handle(mido.Message("note_on", note=64, velocity=90))
    assert engine.of("note_on") == [(64, 90)]


# --------------------------------------------------------------------------- notes
def test_note_on_velocity_zero_is_note_off(model):
    mapper, engine = make(model, "{}")
    mapper.handle(mido.Message("note_on", note=60, velocity=100))
    mapper.handle(mido.Message("note_on", note=60, velocity=0))
    mapper.handle(mido.Message("note_off", note=62, velocity=30))
    assert engine.calls == [("note_on", (60, 100)), ("note_off", (60,)), ("note_off", (62,))]


def test_fixed_velocity_curve_plays_full_velocity(model):
    mapper, engine = make(model, "notes: {velocity_curve: fixed}\n")
    mapper.handle(mido.Message("note_on", note=60, velocity=5))
    assert engine.of("note_on") == [(60, 127)]


@pytest.mark.parametrize(
    "pitch, expected",
    [pytest.param(8191, 12.0, id="full-up"), pytest.param(-8192, -12.0, id="full-down"),
     pytest.param(0, 0.0, id="centre"), pytest.param(4096, 12.0 * 4096 / 8191, id="half-up")],
)
def test_pitch_bend_scaled_by_range(model, pitch, expected):
    mapper, engine = make(model, "pitch_bend: {range: 12}\n")
    mapper.handle(mido.Message("pitchwheel", pitch=pitch))
    assert engine.of("set_pitch_bend") == [(pytest.approx(expected, abs=1e-12),)]


def test_pitch_bend_off(model):
    mapper, engine = make(model, "pitch_bend: off\n")
    mapper.handle(mido.Message("pitchwheel", pitch=8191))
    assert engine.calls == []


@pytest.mark.parametrize(
    "text, control, expected",
    [
        pytest.param("{}", 64, [(True,), (False,)], id="cc64-default"),
        pytest.param("sustain: 66\n", 66, [(True,), (False,)], id="cc66-configured"),
        pytest.param("sustain: {cc: 67}\n", 64, [], id="cc64-not-sustain-when-moved"),
    ],
)
def test_sustain_pedal(model, text, control, expected):
    mapper, engine = make(model, text)
    mapper.handle(cc(control, 127))
    mapper.handle(cc(control, 0))
    assert engine.of("set_sustain") == expected


def test_all_notes_off_channel_mode_messages(model):
    mapper, engine = make(model, "{}")
    mapper.handle(cc(123, 0))
    mapper.handle(cc(120, 0))
    assert engine.of("all_notes_off") == [(), ()]


# --------------------------------------------------------------------------- dropping
def test_clock_active_sensing_sysex_are_dropped(model):
    mapper, engine = make(model, "controls:\n  - {cc: 1, neuron: 0, takeover: jump}\n")
    for msg in (mido.Message("clock"), mido.Message("active_sensing"), mido.Message("sysex", data=[1, 2, 3]),
                mido.Message("start"), mido.Message("aftertouch", value=3)):
        mapper.handle(msg)
    assert engine.calls == [] and mapper.dropped == 5 and mapper.handled == 0


@pytest.mark.parametrize(
    "bad",
    [pytest.param(None, id="none"), pytest.param("note_on 60", id="a-string"),
     pytest.param(type("Odd", (), {"type": "control_change"})(), id="cc-without-fields"),
     pytest.param(type("Odd", (), {"type": "note_on", "channel": 0, "note": 60})(), id="note-without-velocity")],
)
def test_invalid_messages_never_raise(model, bad):
    mapper, engine = make(model, "controls:\n  - {cc: 1, neuron: 0}\n")
    mapper.handle(bad)
    assert mapper.dropped == 1 and engine.calls == []


class FailingEngine(RecordingEngine):
    def set_latent(self, index, value):
        raise RuntimeError("engine bug")


def test_engine_errors_do_not_escape_handle(model):
    mapping = load_mapping_text("controls:\n  - {cc: 1, neuron: 0, takeover: jump}\n", model)
    mapper = Mapper(mapping, FailingEngine(model))
    mapper.handle(cc(1, 64))
    assert mapper.dropped == 1


# --------------------------------------------------------------------------- channels
def test_channel_filter_global_and_per_control(model):
    text = (
        "channel: 2\n"
        "takeover: jump\n"
        "controls:\n"
        "  - {cc: 1, neuron: 0}\n"
        "  - {cc: 2, neuron: 1, channel: [3, 4]}\n"
        "notes: {channel: 10}\n"
    )
    mapper, engine = make(model, text)
    mapper.handle(cc(1, 127, channel=0))  # channel 1: filtered
    mapper.handle(cc(1, 127, channel=1))  # channel 2: applies
    mapper.handle(cc(2, 127, channel=1))  # control 2 listens on 3 and 4 only
    mapper.handle(cc(2, 0, channel=3))  # channel 4
    mapper.handle(mido.Message("note_on", channel=0, note=60, velocity=9))
    mapper.handle(mido.Message("note_on", channel=9, note=61, velocity=9))
    assert engine.of("set_latent") == [(0, 2.0), (1, -2.0)]
    assert engine.of("note_on") == [(61, 9)]


# --------------------------------------------------------------------------- absolute CCs
@pytest.mark.parametrize(
    "spec, value, expected",
    [
        pytest.param("", 127, 2.0, id="learned-range-top"),
        pytest.param("", 0, -2.0, id="learned-range-bottom"),
        pytest.param("range: [0, 10]", 127 // 2, 10 * 63 / 127, id="linear"),
        pytest.param("range: [0, 10], curve: exp", 127, 10.0, id="exp-top"),
        pytest.param("range: [0, 15], curve: exp", 64, 15 * (2 ** (4 * 64 / 127) - 1) / 15, id="exp-mid"),
        pytest.param("range: [0, 10], curve: 3", 64, 10 * (64 / 127) ** 3, id="exponent-3"),
        pytest.param("range: [0, 10], invert: true", 127, 0.0, id="invert"),
        pytest.param("range: [10, 0]", 0, 10.0, id="min-greater-than-max"),
        pytest.param("range: [-5, 5]", 127, 5.0, id="beyond-learned-range"),
    ],
)
def test_absolute_cc_with_curve_range_and_invert(model, spec, value, expected):
    mapper, engine = make(model, f"controls:\n  - {{cc: 21, neuron: 2, takeover: jump, {spec}}}\n")
    mapper.handle(cc(21, value))
    assert engine.of("set_latent") == [(2, pytest.approx(expected, abs=1e-9))]


def test_param_targets_use_engine_names(model):
    text = (
        "takeover: jump\n"
        "controls:\n"
        "  - {cc: 7, param: gain, range: [-60, 0]}\n"
        "  - {cc: 8, param: attack, range: [0, 1000], curve: linear}\n"
        "  - {cc: 9, param: shift, range: [-10, 10]}\n"
        "  - {cc: 10, param: smoothing, range: [0, 100], curve: linear}\n"
        "  - {cc: 11, param: release, range: [0, 1000], curve: linear}\n"
    )
    mapper, engine = make(model, text)
    for c in (7, 8, 9, 10, 11):
        mapper.handle(cc(c, 127))
    assert engine.of("set_param") == [("gain_db", 0.0), ("attack_ms", 1000.0), ("shift_bins", 10.0),
                                      ("smoothing_ms", 100.0), ("release_ms", 1000.0)]
    assert mapper.params["gain_db"] == 0.0


# --------------------------------------------------------------------------- takeover
def test_pickup_waits_until_the_knob_reaches_the_value(model):
    mapper, engine = make(model, "controls:\n  - {cc: 1, neuron: 0, takeover: pickup}\n")  # value 0 = knob 0.5
    for v in (0, 20, 40, 60):  # below the value: ignored
        mapper.handle(cc(1, v))
    assert engine.calls == []
    mapper.handle(cc(1, 70))  # crossed 63.5: picked up
    mapper.handle(cc(1, 10))  # now follows
    assert engine.of("set_latent") == [(0, pytest.approx(-2 + 4 * 70 / 127)), (0, pytest.approx(-2 + 4 * 10 / 127))]


def test_pickup_within_tolerance_engages_at_once(model):
    mapper, engine = make(model, "controls:\n  - {cc: 1, neuron: 0, takeover: pickup}\n")
    assert abs(64 / 127 - 0.5) <= TAKEOVER_TOLERANCE
    mapper.handle(cc(1, 64))
    assert engine.of("set_latent") == [(0, pytest.approx(-2 + 4 * 64 / 127))]


def test_jump_follows_at_once(model):
    mapper, engine = make(model, "controls:\n  - {cc: 1, neuron: 0, takeover: jump}\n")
    mapper.handle(cc(1, 0))
    assert engine.of("set_latent") == [(0, -2.0)]


def test_value_scaling_converges_at_the_end_stop(model):
    mapper, engine = make(model, "controls:\n  - {cc: 1, neuron: 0, range: [0, 1], takeover: scale}\n",)
    mapper._latents[0] = 0.5  # the sound sits at knob position 0.5
    mapper.handle(cc(1, 0))  # knob at 0: first message only locates the knob
    assert engine.calls == []
    mapper.handle(cc(1, 127 // 4))  # knob 0 -> 31/127: value moves a proportional share
    p = 31 / 127
    expected = 0.5 + p * (1 - 0.5) / (1 - 0)
    assert engine.of("set_latent")[-1] == (0, pytest.approx(expected))
    mapper.handle(cc(1, 127))  # end stop: value and knob meet
    assert engine.of("set_latent")[-1] == (0, pytest.approx(1.0))
    mapper.handle(cc(1, 100))  # and from then on the knob drives it directly
    assert engine.of("set_latent")[-1] == (0, pytest.approx(100 / 127))


def test_value_scaling_downwards(model):
    mapper, engine = make(model, "controls:\n  - {cc: 1, neuron: 0, range: [0, 1], takeover: scale}\n")
    mapper._latents[0] = 0.2
    mapper.handle(cc(1, 127))
    mapper.handle(cc(1, 100))
    prev, pos = 1.0, 100 / 127
    assert engine.of("set_latent") == [(0, pytest.approx(0.2 - (prev - pos) * 0.2 / prev))]


def test_other_control_moving_the_target_rearms_pickup(model):
    text = "controls:\n  - {cc: 1, neuron: 0, takeover: pickup}\n  - {cc: 2, neuron: 0, takeover: jump}\n"
    mapper, engine = make(model, text)
    mapper.handle(cc(1, 64))  # engaged at the centre
    mapper.handle(cc(2, 127))  # the other knob sends the neuron to the top
    engine.clear()
    mapper.handle(cc(1, 70))  # knob 1 no longer agrees with the sound: ignored until it reaches the top
    assert engine.calls == []
    mapper.handle(cc(1, 127))
    assert engine.of("set_latent") == [(0, 2.0)]


def test_set_mapping_rearms_soft_takeover(model):
    text = "controls:\n  - {cc: 1, neuron: 0, takeover: pickup}\n"
    mapper, engine = make(model, text)
    mapper.handle(cc(1, 64))
    mapper.handle(cc(1, 100))
    assert len(engine.of("set_latent")) == 2
    mapper.set_mapping(load_mapping_text(text, model))  # hot reload of the same file
    engine.clear()
    mapper.handle(cc(1, 0))  # far from the value the sound has now: ignored
    assert engine.calls == []
    assert mapper.latents[0] == pytest.approx(-2 + 4 * 100 / 127)  # a reload keeps what the knobs did


def test_reload_changing_note_channels_releases_held_notes(model):
    mapper, engine = make(model, "notes: {channel: 1}\n")
    mapper.handle(mido.Message("note_on", channel=0, note=60, velocity=90))
    mapper.set_mapping(load_mapping_text("notes: {channel: 2}\n", model))
    assert engine.of("all_notes_off") == [()]
    mapper.set_mapping(load_mapping_text("notes: {channel: 2}\n", model))  # same channels: notes keep sounding
    assert engine.of("all_notes_off") == [()]


def test_rearm_after_reconnect(model):
    mapper, engine = make(model, "controls:\n  - {cc: 1, neuron: 0, takeover: pickup}\n")
    mapper.handle(cc(1, 64))
    mapper.rearm()
    engine.clear()
    mapper.handle(cc(1, 0))
    assert engine.calls == []


def test_unknown_param_value_engages_at_once(model):
    """A parameter the mapping never set has no known value: the first move sets it."""
    mapper, engine = make(model, "controls:\n  - {cc: 7, param: gain, range: [-60, 0], takeover: pickup}\n")
    mapper.handle(cc(7, 0))
    assert engine.of("set_param") == [("gain_db", -60.0)]


# --------------------------------------------------------------------------- 14-bit
def test_14bit_msb_lsb_pairs(model):
    mapper, engine = make(model, "controls:\n  - {cc: 5, neuron: 1, range: [0, 1], resolution: 14bit, takeover: jump}\n")
    mapper.handle(cc(37, 99))  # LSB before any MSB: ignored
    assert engine.calls == []
    mapper.handle(cc(5, 64))  # MSB: LSB counts as 0
    mapper.handle(cc(37, 127))  # LSB refines
    mapper.handle(cc(37, 1, channel=1))  # LSB on another channel: no MSB there yet
    mapper.handle(cc(5, 10))  # a new MSB resets the LSB
    mapper.handle(cc(37, 5))
    values = [v * 16383 for _, v in engine.of("set_latent")]
    assert values == pytest.approx([64 * 128, 64 * 128 + 127, 10 * 128, 10 * 128 + 5], abs=1e-6)


def test_14bit_full_scale(model):
    mapper, engine = make(model, "controls:\n  - {cc: 0, neuron: 0, resolution: 14bit, takeover: jump}\n")
    mapper.handle(cc(0, 127))
    mapper.handle(cc(32, 127))
    assert engine.of("set_latent")[-1] == (0, pytest.approx(2.0))


# --------------------------------------------------------------------------- relative encoders
@pytest.mark.parametrize(
    "encoder, up, down",
    [
        pytest.param("signed_bit", 1, 65, id="signed-bit"),
        pytest.param("signed_bit_2", 65, 1, id="signed-bit-2"),
        pytest.param("binary_offset", 65, 63, id="binary-offset"),
        pytest.param("twos_complement", 1, 127, id="twos-complement"),
    ],
)
def test_relative_encoders_step_from_the_current_value(model, encoder, up, down):
    text = f"controls:\n  - {{cc: 16, neuron: 0, range: [0, 1], encoder: {encoder}, step: 0.05}}\n"
    mapper, engine = make(model, text)
    mapper._latents[0] = 0.5
    for _ in range(3):
        mapper.handle(cc(16, up))
    mapper.handle(cc(16, down))
    values = [v for _, v in engine.of("set_latent")]
    assert values == pytest.approx([0.55, 0.60, 0.65, 0.60])


def test_relative_encoder_acceleration_and_clamping(model):
    text = "controls:\n  - {cc: 16, neuron: 0, range: [0, 1], encoder: twos_complement, step: 0.1}\n"
    mapper, engine = make(model, text)
    mapper._latents[0] = 0.5
    mapper.handle(cc(16, 3))  # three ticks at once
    mapper.handle(cc(16, 64))  # far past the top: clamped
    mapper.handle(cc(16, 0))  # no movement: nothing sent
    assert [v for _, v in engine.of("set_latent")] == pytest.approx([0.8, 1.0])


def test_coalescing_predicate(model):
    text = (
        "controls:\n"
        "  - {cc: 1, neuron: 0}\n"
        "  - {cc: 2, neuron: 1, resolution: 14bit}\n"
        "  - {cc: 16, neuron: 2, encoder: signed_bit}\n"
    )
    mapper, _ = make(model, text)
    assert mapper.is_absolute_cc(0, 1) is True
    assert mapper.is_absolute_cc(0, 2) is False and mapper.is_absolute_cc(0, 34) is False
    assert mapper.is_absolute_cc(0, 16) is False
    assert mapper.is_absolute_cc(0, 64) is False  # sustain: every press counts
    assert mapper.is_absolute_cc(0, 99) is True  # unmapped


# --------------------------------------------------------------------------- programs
@pytest.fixture()
def programs(tmp_path):
    a = build_harmonic_decoder(tmp_path / "model_a")
    b = build_harmonic_decoder(tmp_path / "model_b", extra_metadata={"latent_default": [1.0] * 8,
                                                                     "latent_min": [0.0] * 8,
                                                                     "latent_max": [4.0] * 8})
    (tmp_path / "other.yaml").write_text("takeover: jump\ncontrols:\n  - {cc: 30, neuron: 5}\n")
    main = tmp_path / "main.yaml"
    main.write_text(
        "takeover: jump\n"
        "controls:\n  - {cc: 1, neuron: 0}\n"
        "programs:\n"
        "  0: {name: A, model: model_a, mapping: main.yaml}\n"
        "  1: {name: B, model: model_b, mapping: other.yaml}\n"
        "  2: {name: same model, mapping: other.yaml}\n"
        "  3: {name: model only, model: model_b}\n"
    )
    return tmp_path, DecoderModel(a), main


def with_programs(mapping, engine, *, threaded=False, **kw):
    """A Mapper with the instrument's program switcher (inline, or on its worker thread)."""
    mapper = Mapper(mapping, engine)
    switcher = ProgramSwitcher(mapper, engine, **kw)
    if threaded:
        switcher.start()
    return mapper, switcher


@pytest.mark.parametrize("threaded", [False, True], ids=["inline", "worker-thread"])
def test_program_change_switches_model_and_mapping(programs, threaded):
    tmp_path, model_a, main = programs
    engine = RecordingEngine(model_a)
    mapper, switcher = with_programs(load_mapping(main, model_a), engine, threaded=threaded,
                                     model_loader=DecoderModel)
    engine.clear()
    mapper.handle(mido.Message("program_change", program=1))
    assert switcher.wait_idle(10.0)
    (new_model,) = [args[0] for args in engine.of("set_model")]
    assert Path(new_model.path).parent == tmp_path / "model_b"
    assert mapper.mapping.path == tmp_path / "other.yaml" and mapper.model is new_model
    assert engine.of("set_latents") == [((1.0,) * 8,)]  # the new model's default latent
    engine.clear()
    mapper.handle(cc(1, 127))  # old mapping's control: gone
    mapper.handle(cc(30, 127))  # new mapping's control, range from model B
    assert engine.of("set_latent") == [(5, 4.0)]
    # other.yaml has no programs: the table stays, so program 0 returns to model A and main.yaml
    engine.clear()
    mapper.handle(mido.Message("program_change", program=0))
    assert switcher.wait_idle(10.0)
    assert engine.of("set_model") == [(model_a,)]  # already loaded: reused, not reloaded
    assert mapper.mapping.path == main and switcher.switches == 2


def test_program_change_mapping_only_keeps_model(programs):
    _, model_a, main = programs
    engine = RecordingEngine(model_a)
    mapper, switcher = with_programs(load_mapping(main, model_a), engine)
    engine.clear()
    mapper.handle(mido.Message("program_change", program=2))
    assert engine.of("set_model") == [] and mapper.mapping.path.name == "other.yaml"
    mapper.handle(mido.Message("program_change", program=99))  # not in the table: ignored
    assert mapper.mapping.path.name == "other.yaml" and switcher.errors == 0


def test_program_change_to_broken_mapping_keeps_the_current_one(programs, caplog):
    tmp_path, model_a, main = programs
    engine = RecordingEngine(model_a)
    mapper, switcher = with_programs(load_mapping(main, model_a), engine)
    (tmp_path / "other.yaml").write_text("controls:\n  - {cc: 300, neuron: 0}\n")  # broken after load
    engine.clear()
    with caplog.at_level(logging.WARNING, logger="canne.run"):
        mapper.handle(mido.Message("program_change", program=2))
    assert mapper.mapping.path == main and switcher.errors == 1 and engine.calls == []
    assert "program 2" in caplog.text and "other.yaml:2: controls[0].cc" in caplog.text


def test_program_change_model_only_revalidates_the_current_mapping(programs):
    """The same file against the new model: default ranges become the new model's."""
    _, model_a, main = programs
    engine = RecordingEngine(model_a)
    mapper, _ = with_programs(load_mapping(main, model_a), engine)
    mapper.handle(mido.Message("program_change", program=3))
    assert mapper.mapping.path == main and len(engine.of("set_model")) == 1
    engine.clear()
    mapper.handle(cc(1, 0))
    assert engine.of("set_latent") == [(0, 0.0)]  # model B's learned range is 0..4 (model A's: -2..2)


@pytest.mark.parametrize("threaded", [False, True], ids=["inline", "worker-thread"])
def test_engine_refusing_a_switch_is_counted_and_the_worker_survives(programs, threaded, caplog):
    """An engine that raises in set_model: counted, logged, the mapping stays, and the
    worker thread still finishes (wait_idle returns) and takes the next request."""
    _, model_a, main = programs

    class RefusingEngine(RecordingEngine):
        def set_model(self, model):
            raise ValueError("no switch today")

    engine = RefusingEngine(model_a)
    mapper, switcher = with_programs(load_mapping(main, model_a), engine, threaded=threaded,
                                     model_loader=DecoderModel)
    with caplog.at_level(logging.WARNING, logger="canne.run"):
        mapper.handle(mido.Message("program_change", program=1))
        assert switcher.wait_idle(10.0)
    assert switcher.errors == 1 and switcher.switches == 0 and mapper.mapping.path == main
    assert "no switch today" in caplog.text
    mapper.handle(mido.Message("program_change", program=2))  # same model: no set_model
    assert switcher.wait_idle(10.0)
    assert switcher.switches == 1 and mapper.mapping.path.name == "other.yaml"
