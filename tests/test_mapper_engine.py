"""Mapper + the real Engine + the harmonic test decoder: knobs change what is heard.

Measured in physical units on rendered audio: harmonic levels in dB, output level in
dB, pitch in cents.
"""

from __future__ import annotations

import sys
from pathlib import Path

import mido
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from harmonic_model import build_harmonic_decoder, cents, harmonic_amplitudes, measure_f0, midi_to_hz  # noqa: E402
from harmonic_model import rms_dbfs as rms_db  # noqa: E402

from daemon.core.engine import Engine  # noqa: E402
from daemon.control.mapper import Mapper  # noqa: E402
from daemon.control.mapping import load_mapping, load_mapping_text  # noqa: E402
from daemon.app.runtime import ProgramSwitcher  # noqa: E402

SR = 44100
MAPPING = (
    "takeover: jump\n"
    "params: {smoothing: 5, attack: 5}\n"
    "pitch_bend: {range: 12}\n"
    "notes: {pitch_mode: transpose, polyphony: 4}\n"
    "controls:\n"
    "  - {cc: 21, neuron: 2, range: [-2, 2]}\n"
    "  - {cc: 7, param: gain, range: [-30, -10]}\n"
)


@pytest.fixture()
def rig(model):
    engine = Engine(model, sample_rate=SR, polyphony=4, seed=1)
    mapper = Mapper(load_mapping_text(MAPPING, model), engine)
    return engine, mapper


def render(engine, seconds):
    out = engine.render(int(seconds * SR))
    assert np.all(np.isfinite(out)) and np.max(np.abs(out)) <= 1.0
    return out


def spectrum(x):
    w = np.hanning(len(x))
    mag = np.abs(np.fft.rfft(x * w))
    freqs = np.fft.rfftfreq(len(x), 1.0 / SR)
    return freqs, mag


def level_db_at(x, f):
    freqs, mag = spectrum(x)
    band = (freqs > f * 0.97) & (freqs < f * 1.03)
    return 20 * np.log10(mag[band].max() + 1e-12)


def test_cc_sweep_changes_the_harmonics_the_neuron_drives(rig):
    """Neuron 2 scales harmonics 4 and 12 (harmonic_model.py); CC 21 moves it -2..+2."""
    engine, mapper = rig
    f0 = midi_to_hz(60)
    mapper.handle(mido.Message("note_on", note=60, velocity=100))
    measured = {}
    for value in (0, 127):
        mapper.handle(mido.Message("control_change", control=21, value=value))
        render(engine, 0.5)  # settle (smoothing 5 ms)
        x = render(engine, 1.0)
        measured[value] = level_db_at(x, 4 * f0) - level_db_at(x, f0)
    z = np.zeros((2, 8))
    z[0, 2], z[1, 2] = -2.0, 2.0
    amps = harmonic_amplitudes(z)
    expected = 20 * np.log10(amps[:, 3] / amps[:, 0])
    change = measured[127] - measured[0]
    assert change == pytest.approx(expected[1] - expected[0], abs=2.0)  # ≈ +19.8 dB
    assert change > 10.0


def test_gain_cc_sets_output_level_in_db(rig):
    engine, mapper = rig
    mapper.handle(mido.Message("note_on", note=60, velocity=100))
    levels = {}
    for value in (127, 0):
        mapper.handle(mido.Message("control_change", control=7, value=value))
        render(engine, 0.5)
        levels[value] = rms_db(render(engine, 1.0))
    assert levels[0] - levels[127] == pytest.approx(-20.0, abs=1.0)


def test_pitch_bend_range_in_cents(rig):
    engine, mapper = rig
    mapper.handle(mido.Message("note_on", note=60, velocity=100))
    mapper.handle(mido.Message("pitchwheel", pitch=8191))  # +12 semitones with range 12
    render(engine, 0.5)
    f = measure_f0(render(engine, 1.0), SR, midi_to_hz(72), search=0.1)
    assert abs(cents(f, midi_to_hz(72))) <= 5.0, f"{f:.2f} Hz is {cents(f, midi_to_hz(72)):+.1f} cents from C5"


def test_note_off_returns_to_silence(rig):
    engine, mapper = rig
    mapper.handle(mido.Message("note_on", note=60, velocity=100))
    loud = rms_db(render(engine, 0.5))
    mapper.handle(mido.Message("note_on", note=60, velocity=0))  # velocity 0 = note off
    render(engine, 1.5)  # release 300 ms (engine default)
    quiet = rms_db(render(engine, 0.5))
    assert loud > -40.0 and quiet < loud - 60.0


def test_shipped_default_mapping_drives_the_engine(model):
    repo = Path(__file__).resolve().parents[1]
    engine = Engine(model, sample_rate=SR, seed=2)
    mapper = Mapper(load_mapping(repo / "mappings" / "default.yaml", model), engine)
    for msg in (mido.Message("note_on", note=64, velocity=90),
                mido.Message("control_change", control=21, value=64),  # picks up at the centre
                mido.Message("control_change", control=21, value=127),
                mido.Message("clock"), mido.Message("sysex", data=[1]),
                mido.Message("pitchwheel", pitch=-8192)):
        mapper.handle(msg)
    assert mapper.latents[0] == pytest.approx(2.0)  # the model's learned max for neuron 0
    x = render(engine, 1.0)
    assert rms_db(x) > -40.0


@pytest.mark.parametrize("threaded", [False, True], ids=["inline", "worker"])
def test_program_change_to_a_model_of_another_latent_size(model, tmp_path, threaded):
    """The real Engine takes the new mapping's latents (latent_dim 4) right after the
    switch is queued, before the render side has switched."""
    small = tmp_path / "small"
    build_harmonic_decoder(small, sample_rate=SR, latent_dim=4)
    main = tmp_path / "main.yaml"
    main.write_text("takeover: jump\n"
                    "initial_latent: [0.5, 0, 0, 0, 0, 0, 0, 0]\n"
                    "programs: {1: {model: small, mapping: small.yaml}}\n"
                    "controls:\n  - {cc: 21, neuron: 0, range: [-2, 2]}\n")
    (tmp_path / "small.yaml").write_text("takeover: jump\ninitial_latent: [1, -1, 0.5, 0]\n"
                                         "controls:\n  - {cc: 21, neuron: 3, range: [-2, 2]}\n")
    engine = Engine(model, sample_rate=SR, seed=3)
    mapper = Mapper(load_mapping(main, model), engine)
    switcher = ProgramSwitcher(mapper, engine)
    if threaded:
        switcher.start()
    mapper.handle(mido.Message("note_on", note=60, velocity=100))
    render(engine, 0.2)
    mapper.handle(mido.Message("program_change", program=1))
    assert switcher.wait_idle(30.0)
    mapper.handle(mido.Message("control_change", control=21, value=127))
    assert switcher.switches == 1 and switcher.errors == 0 and mapper.dropped == 0
    x = render(engine, 1.0)
    assert engine.model.latent_dim == 4
    np.testing.assert_allclose(engine.latent, [1.0, -1.0, 0.5, 2.0], atol=1e-6)
    assert rms_db(x[-8192:]) > -40.0
