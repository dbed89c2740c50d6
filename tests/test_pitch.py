"""Pitch in cents: transpose/tuned/shift modes on a known harmonic decoder, 44.1 and 48 kHz."""

from __future__ import annotations

import numpy as np
import pytest

from daemon.core.engine import Engine
from daemon.core.model import DecoderModel
from daemon.core.pitch import estimate_f0, peak_positions
from harmonic_model import build_harmonic_decoder, cents, hann_lobe_basis, measure_f0, midi_to_hz

NOTES = {"C2": 36, "C3": 48, "C4": 60, "A4": 69, "C5": 72, "C6": 84, "C7": 96}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return DecoderModel(build_harmonic_decoder(tmp_path_factory.mktemp("harmonic")))


def _played_f0(model, note, *, sr, mode, latents=None, bend=0.0):
    e = Engine(model, sample_rate=sr, pitch_mode=mode)
    if latents is not None:
        e.set_latents(latents)
    if bend:
        e.set_pitch_bend(bend)
    e.note_on(note, 100)
    y = e.render(int(1.5 * sr))[sr // 2:]
    return measure_f0(y, sr, midi_to_hz(note + bend), search=0.1)


@pytest.mark.parametrize("sr", [44100, 48000], ids=["44k1", "48k"])
@pytest.mark.parametrize("mode", ["transpose", "tuned"])
@pytest.mark.parametrize("name", list(NOTES))
def test_notes_c2_to_c7_within_5_cents(model, sr, mode, name):
    note = NOTES[name]
    f = _played_f0(model, note, sr=sr, mode=mode)
    assert abs(cents(f, midi_to_hz(note))) <= 5.0


@pytest.mark.parametrize("sr", [44100, 48000], ids=["44k1", "48k"])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_tuned_a4_is_440_whatever_the_latent(model, sr, seed):
    z = np.random.default_rng(seed).normal(0.0, 2.0, 8)
    f = _played_f0(model, 69, sr=sr, mode="tuned", latents=z)
    assert abs(cents(f, 440.0)) <= 5.0


@pytest.mark.parametrize("sr", [44100, 48000], ids=["44k1", "48k"])
def test_tuned_corrects_a_detuned_model(tmp_path, sr):
    """A decoder whose corpus is 30 cents sharp: transpose keeps the error, tuned removes it."""
    f0 = midi_to_hz(60.3)
    m = DecoderModel(build_harmonic_decoder(tmp_path, f0=f0))
    assert abs(cents(_played_f0(m, 69, sr=sr, mode="transpose"), 440.0) - 30.0) <= 5.0
    assert abs(cents(_played_f0(m, 69, sr=sr, mode="tuned"), 440.0)) <= 5.0


@pytest.mark.parametrize("bend", [2.0, -2.0, 0.5], ids=["up-2", "down-2", "up-half"])
def test_pitch_bend_in_semitones(model, bend):
    f = _played_f0(model, 69, sr=48000, mode="transpose", bend=bend)
    assert abs(cents(f, 440.0 * 2 ** (bend / 12))) <= 5.0


@pytest.mark.parametrize("note", [48, 69, 84])
def test_shift_mode_moves_every_partial_by_the_same_hertz(model, note):
    sr = 48000
    e = Engine(model, sample_rate=sr, pitch_mode="shift")
    e.note_on(note, 100)
    y = e.render(int(1.5 * sr))[sr // 2:]
    ref = midi_to_hz(60)
    delta = midi_to_hz(note) - ref
    f1 = measure_f0(y, sr, ref + delta, search=0.05)
    f2 = measure_f0(y, sr, 2 * ref + delta, search=0.05)
    assert abs(cents(f1, midi_to_hz(note))) <= 5.0  # the reference partial lands on the note
    assert abs(f2 - (2 * ref + delta)) < 1.0  # the 2nd partial moved by the same Hz (inharmonic)


def test_shift_without_wrap_drops_partials_past_nyquist(model):
    e = Engine(model, sample_rate=44100, pitch_mode="shift")
    e.set_param("shift_bins", 1900.0)  # ~20 kHz up: partials 7.. leave the band
    e.note_on(60, 100)
    y = e.render(44100)[22050:]
    spec = np.abs(np.fft.rfft(y * np.hanning(y.size)))
    low = spec[: int(15000 * y.size / 44100)]
    assert 20 * np.log10(low.max() / spec.max() + 1e-30) < -60.0  # nothing wrapped to the bottom
    e2 = Engine(model, sample_rate=44100, pitch_mode="shift")
    e2.set_param("shift_bins", 1900.0)
    e2.set_param("shift_wrap", 1.0)
    e2.note_on(60, 100)
    y2 = e2.render(44100)[22050:]
    spec2 = np.abs(np.fft.rfft(y2 * np.hanning(y2.size)))
    low2 = spec2[: int(15000 * y2.size / 44100)]
    assert 20 * np.log10(low2.max() / spec2.max()) > -25.0  # wrapped partials (7th: -17 dB) are there


@pytest.mark.parametrize("sr", [44100, 48000], ids=["44k1", "48k"])
def test_off_mode_plays_the_model_pitch_at_any_rate(model, sr):
    e = Engine(model, sample_rate=sr, pitch_mode="off")
    e.note_on(90, 100)  # the note does not matter
    y = e.render(int(1.5 * sr))[sr // 2:]
    assert abs(cents(measure_f0(y, sr, 261.6256, search=0.05), 261.6256)) <= 5.0


@pytest.mark.parametrize("f0", [55.0, 130.0, 261.6256, 440.0, 1000.0])
def test_estimate_f0_on_harmonic_frames(f0):
    amps = 1.0 / np.arange(1, 9)
    frame = amps @ hann_lobe_basis(f0, 8, 44100, 4096)
    est = estimate_f0(frame, 44100 / 4096)
    assert abs(cents(est, f0)) <= 2.0


def test_estimate_f0_of_silence_is_zero():
    assert estimate_f0(np.zeros(2049), 44100 / 4096) == 0.0


@pytest.mark.parametrize("true_bin", [24.0, 24.13, 24.3, 24.5, 24.77])
def test_peak_positions_on_hann_lobes(true_bin):
    n = 4096
    x = np.cos(2 * np.pi * true_bin * np.arange(n) / n) * (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n))
    mag = np.abs(np.fft.rfft(x))
    k = int(np.argmax(mag))
    assert abs(peak_positions(mag, np.array([k]))[0] - true_bin) < 0.005
