"""MPE: a lower/upper zone, per-note pitch bend on member channels, rendered offline
through the real Engine and measured with a long FFT (cents)."""

from __future__ import annotations

import sys
from pathlib import Path

import mido
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from harmonic_model import cents, measure_f0, midi_to_hz  # noqa: E402

from daemon.core.engine import Engine  # noqa: E402
from daemon.errors import MappingError  # noqa: E402
from daemon.control.mapper import Mapper  # noqa: E402
from daemon.control.mapping import load_mapping_text  # noqa: E402

SR = 44100
MPE = "mpe: {zone: lower}\nnotes: {pitch_mode: transpose, polyphony: 4}\nparams: {attack: 5, release: 50}\n"


def bend(ch, value):
    return mido.Message("pitchwheel", channel=ch, pitch=value)


def st(value, rng=48.0):
    return (value / 8191.0 if value > 0 else value / 8192.0) * rng


def test_zone_section(model):
    m = load_mapping_text("mpe: lower\n", model)
    assert m.mpe.manager == 0 and m.mpe.members == frozenset(range(1, 16)) and m.mpe.bend_range == 48.0
    assert m.notes.channels == frozenset(range(16)) and m.pitch_bend_channels == frozenset({0})
    up = load_mapping_text("mpe: {zone: upper, members: 7, bend_range: 24}\n", model).mpe
    assert up.manager == 15 and up.members == frozenset(range(8, 15)) and up.bend_range == 24.0
    with pytest.raises(MappingError, match=r"mpe\.members: out of range"):
        load_mapping_text("mpe: {members: 16}\n", model)
    with pytest.raises(MappingError, match="pitch_bend: an MPE zone sets the bend ranges"):
        load_mapping_text("mpe: lower\npitch_bend: 12\n", model)


@pytest.mark.parametrize("zone, ch_a, ch_b, manager", [("lower", 1, 2, 0), ("upper", 14, 13, 15)])
def test_two_notes_bent_in_opposite_directions_land_in_tune(model, zone, ch_a, ch_b, manager):
    engine = Engine(model, sample_rate=SR, polyphony=4, seed=2)
    mapper = Mapper(load_mapping_text(MPE.replace("lower", zone), model), engine)
    up, down = 341, -341  # about +2 and -2 semitones of 48
    mapper.handle(bend(ch_a, 0))
    mapper.handle(mido.Message("note_on", channel=ch_a, note=60, velocity=100))
    mapper.handle(mido.Message("note_on", channel=ch_b, note=67, velocity=100))
    engine.render(int(0.3 * SR))
    # bend while the notes sound, in steps, as a finger slides
    for k in range(1, 11):
        mapper.handle(bend(ch_a, up * k // 10))
        mapper.handle(bend(ch_b, down * k // 10))
        engine.render(engine.hop_length)
    mapper.handle(bend(manager, 0))  # the zone-wide bend stays at 0
    engine.render(int(0.2 * SR))
    y = engine.render(2 * SR).astype(np.float64)
    target_a, target_b = 60 + st(up), 67 + st(down)
    ca = cents(measure_f0(y, SR, midi_to_hz(target_a), search=0.03), midi_to_hz(target_a))
    cb = cents(measure_f0(y, SR, midi_to_hz(target_b), search=0.03), midi_to_hz(target_b))
    print(f"MPE {zone}: {ca:+.3f} {cb:+.3f} cents")
    assert abs(ca) <= 5.0 and abs(cb) <= 5.0, (ca, cb)
    # and the unbent pitches are gone (the bend really moved each note its own way)
    spec = np.abs(np.fft.rfft(y * np.hanning(y.size)))
    f = np.fft.rfftfreq(y.size, 1.0 / SR)

    def level(hz):
        return spec[np.argmin(np.abs(f - hz))]

    assert level(midi_to_hz(60)) < 0.05 * level(midi_to_hz(target_a))
    assert level(midi_to_hz(67)) < 0.05 * level(midi_to_hz(target_b))


def test_manager_bend_moves_the_zone_and_member_bend_only_its_note(model):
    calls = []

    class Rec(Engine):
        def set_note_bend(self, note, semitones):
            calls.append((note, semitones))
            super().set_note_bend(note, semitones)

    engine = Rec(model, sample_rate=SR)
    mapper = Mapper(load_mapping_text(MPE, model), engine)
    mapper.handle(bend(3, 8191))  # before the note: the note starts bent (MPE spec)
    mapper.handle(mido.Message("note_on", channel=3, note=50, velocity=90))
    assert calls[-1] == (50, 48.0)
    mapper.handle(mido.Message("note_on", channel=4, note=52, velocity=90))
    assert calls[-1] == (52, 0.0)
    calls.clear()
    mapper.handle(bend(4, -8192))
    assert calls == [(52, -48.0)]
    mapper.handle(mido.Message("note_off", channel=4, note=52))
    mapper.handle(bend(4, 0))  # a released note still follows its channel while it rings
    assert calls[-1] == (52, 0.0)
    mapper.handle(mido.Message("note_on", channel=4, note=55, velocity=90))
    calls.clear()
    mapper.handle(bend(4, 100))
    assert [n for n, _ in calls] == [55]  # the released note was let go
    mapper.handle(bend(0, 8191))  # manager channel: zone-wide, +2 semitones
    engine.render(engine.hop_length)
    assert engine._bend == pytest.approx(2.0)


def test_pressure_and_cc74_on_member_channels_are_sources(model):
    text = MPE + ("controls:\n"
                  "  - {source: aftertouch, channel: all, neuron: 1, range: [0, 1]}\n"
                  "  - {cc: 74, channel: all, neuron: 2, range: [-1, 1], takeover: jump}\n")
    engine = Engine(model, sample_rate=SR)
    mapper = Mapper(load_mapping_text(text, model), engine)
    mapper.handle(mido.Message("aftertouch", channel=5, value=127))
    mapper.handle(mido.Message("control_change", channel=6, control=74, value=0))
    assert mapper.latents[1] == 1.0 and mapper.latents[2] == -1.0
