"""`canne render SONG.mid -o OUT.wav`: the real CLI, real MIDI files, real decoders."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mido
import numpy as np
import pytest
from scipy.io import wavfile

from harmonic_model import build_harmonic_decoder, cents, measure_f0, midi_to_hz, rms_dbfs

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MAPPING = REPO / "mappings" / "default.yaml"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("harmonic")
    build_harmonic_decoder(d)
    return d


def _song(path: Path, *, cc_sweep: bool = False, bend: bool = False, end_ticks: int | None = None) -> Path:
    """A4 for 1 s (optionally a CC22 sweep / pitch bend), then a C major triad held by the pedal."""
    mf = mido.MidiFile(ticks_per_beat=480)
    tr = mido.MidiTrack()
    mf.tracks.append(tr)
    tr.append(mido.MetaMessage("set_tempo", tempo=500000, time=0))  # 120 bpm: 960 ticks = 1 s
    tr.append(mido.Message("note_on", note=69, velocity=100, time=0))
    if cc_sweep:
        for v in range(0, 128, 8):
            tr.append(mido.Message("control_change", control=22, value=v, time=10))
        tr.append(mido.Message("control_change", control=22, value=127, time=10))
        tr.append(mido.Message("note_off", note=69, velocity=0, time=960 - 170))
    elif bend:
        tr.append(mido.Message("pitchwheel", pitch=8191, time=480))
        tr.append(mido.Message("note_off", note=69, velocity=0, time=480))
    else:
        tr.append(mido.Message("note_off", note=69, velocity=0, time=960))
    for n in (60, 64, 67):
        tr.append(mido.Message("note_on", note=n, velocity=90, time=0))
    tr.append(mido.Message("control_change", control=64, value=127, time=240))
    for n in (60, 64, 67):
        tr.append(mido.Message("note_off", note=n, velocity=0, time=0))
    tr.append(mido.Message("control_change", control=64, value=0, time=720))  # at 2.0 s
    if end_ticks is not None:  # the end of the song, as a DAW writes it (bar end), after the last event
        tr.append(mido.MetaMessage("end_of_track", time=end_ticks))
    mf.save(str(path))
    return path


def _render(args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "daemon.app.cli", "render", "--no-progress", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=120)


def _read(path):
    sr, data = wavfile.read(str(path))
    if data.dtype == np.int16:
        data = data.astype(np.float64) / 32767.0
    return sr, data.astype(np.float64)


def test_render_pitch_level_and_silent_end(tmp_path, model_dir):
    song = _song(tmp_path / "song.mid")
    out = tmp_path / "out.wav"
    r = _render([str(song), "-o", str(out), "--model", str(model_dir), "--mapping", str(DEFAULT_MAPPING),
                 "--sample-rate", "48000", "--tail", "1"])
    assert r.returncode == 0, r.stderr
    assert "wrote" in r.stdout
    sr, y = _read(out)
    assert sr == 48000 and y.ndim == 1
    assert y.size == 3 * sr  # the file's 2.0 s + the 1 s tail asked for
    a4 = y[int(0.3 * sr):int(0.95 * sr)]
    assert abs(cents(measure_f0(a4, sr, 440.0, search=0.05), 440.0)) <= 5.0
    assert -30.0 < rms_dbfs(a4) < -15.0  # -20 dBFS per voice at full velocity, velocity 100, sustain 0.8
    chord = y[int(1.3 * sr):int(1.9 * sr)]  # held by the pedal after the keys went up
    for n in (60, 64, 67):
        assert abs(cents(measure_f0(chord, sr, midi_to_hz(n), search=0.02), midi_to_hz(n))) <= 5.0
    assert np.max(np.abs(y[-2048:])) < 2.0 / 32767  # released to silence (16-bit zero)


def test_render_is_deterministic_and_float_format(tmp_path, model_dir):
    song = _song(tmp_path / "song.mid", bend=True)
    outs = []
    for i in range(2):
        out = tmp_path / f"out{i}.wav"
        r = _render([str(song), "-o", str(out), "--model", str(model_dir), "--mapping", "",
                     "--sample-rate", "44100", "--format", "float"])
        assert r.returncode == 0, r.stderr
        outs.append(_read(out)[1])
    np.testing.assert_array_equal(outs[0], outs[1])
    y = outs[0]
    assert y.dtype == np.float64 and np.max(np.abs(y)) <= 1.0
    bent = y[int(0.7 * 44100):int(0.98 * 44100)]  # +2 semitones (full bend, range 2)
    assert abs(cents(measure_f0(bent, 44100, midi_to_hz(71), search=0.05), midi_to_hz(71))) <= 5.0


def test_cc_automation_reaches_the_latent(tmp_path, model_dir):
    """CC22 -> neuron 1 (default mapping) boosts harmonics 3 and 11 of the harmonic decoder."""
    def third_harmonic_db(song):
        out = tmp_path / (song.stem + ".wav")
        r = _render([str(song), "-o", str(out), "--model", str(model_dir), "--mapping", str(DEFAULT_MAPPING),
                     "--sample-rate", "48000"])
        assert r.returncode == 0, r.stderr
        sr, y = _read(out)
        seg = y[int(0.5 * sr):int(0.95 * sr)]
        spec = np.abs(np.fft.rfft(seg * np.hanning(seg.size)))
        k = lambda f: int(round(f * seg.size / sr))  # noqa: E731
        return 20 * np.log10(spec[k(3 * 440.0)] / spec[k(440.0)])
    plain = third_harmonic_db(_song(tmp_path / "plain.mid"))
    swept = third_harmonic_db(_song(tmp_path / "swept.mid", cc_sweep=True))
    assert swept > plain + 3.0


def test_render_default_model_and_mapping(tmp_path):
    if not (REPO / "models" / "default" / "decoder.onnx").is_file():
        pytest.fail("models/default/decoder.onnx is missing: the shipped model is part of the repo")
    song = _song(tmp_path / "song.mid")
    out = tmp_path / "out.wav"
    r = _render([str(song), "-o", str(out)], cwd=tmp_path)  # defaults resolved from the package
    assert r.returncode == 0, r.stderr
    sr, y = _read(out)
    assert sr == 48000
    assert np.all(np.isfinite(y)) and rms_dbfs(y[: sr]) > -45.0


@pytest.mark.parametrize("case", ["missing-midi", "missing-model", "bad-midi"])
def test_render_errors_are_one_line(tmp_path, model_dir, case):
    song = _song(tmp_path / "song.mid")
    args = [str(song), "-o", str(tmp_path / "o.wav"), "--model", str(model_dir), "--mapping", ""]
    if case == "missing-midi":
        args[0] = str(tmp_path / "nope.mid")
        needle = "nope.mid"
    elif case == "missing-model":
        args[4] = str(tmp_path / "no_model")
        needle = "no_model"
    else:
        bad = tmp_path / "bad.mid"
        bad.write_bytes(b"MThd garbage")
        args[0] = str(bad)
        needle = "bad.mid"
    r = _render(args)
    assert r.returncode == 2
    errors = [ln for ln in r.stderr.splitlines() if "ERROR" in ln]
    assert len(errors) == 1 and needle in errors[0], r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("polyphony,sounding", [(1, (67,)), (None, (60, 64, 67))], ids=["poly-1", "mapping-8"])
def test_polyphony_option_overrides_the_mapping(tmp_path, model_dir, polyphony, sounding):
    """--polyphony 1 beats the default mapping's 8: of the C major triad only G4 sounds."""
    from daemon.core.model import DecoderModel
    from daemon.app.render import render_midi

    sr = 48000
    y = render_midi(_song(tmp_path / "song.mid"), DecoderModel(model_dir), sample_rate=sr,
                    mapping_path=DEFAULT_MAPPING, polyphony=polyphony).astype(np.float64)
    chord = y[int(1.3 * sr):int(1.9 * sr)]
    spec = np.abs(np.fft.rfft(chord * np.hanning(chord.size)))
    level = {n: 20 * np.log10(spec[int(round(midi_to_hz(n) * chord.size / sr))] / spec.max()) for n in (60, 64, 67)}
    for n in (60, 64, 67):
        if n in sounding:
            assert level[n] > -12.0, level
        else:
            assert level[n] < -40.0, level


# -- length, format, channels, the output checked first --------------------------------------
@pytest.mark.parametrize("end_ticks, tail, seconds", [(0, 0, 2.0), (1920, 0, 4.0), (1920, 0.5, 4.5)],
                         ids=["ends-at-last-event", "ends-at-bar-end-after-it", "tail-after-the-end"])
def test_render_lasts_exactly_to_the_end_of_the_file(tmp_path, model_dir, end_ticks, tail, seconds):
    """Stems line up: the length is the MIDI file's (end-of-track included), not the last release."""
    song = _song(tmp_path / "song.mid", end_ticks=end_ticks)
    assert mido.MidiFile(str(song)).length == pytest.approx(seconds - tail)
    out = tmp_path / "out.wav"
    r = _render([str(song), "-o", str(out), "--model", str(model_dir), "--mapping", "", "--tail", str(tail)])
    assert r.returncode == 0, r.stderr
    sr, y = _read(out)
    assert y.size == round(seconds * sr)
    if end_ticks:  # everything released well before the end: silence there, not cut sound
        assert np.max(np.abs(y[-sr // 2:])) < 2.0 / 32767


def test_flac_and_two_channels_by_extension(tmp_path, model_dir):
    soundfile = pytest.importorskip("soundfile")
    song = _song(tmp_path / "song.mid")
    wav, flac = tmp_path / "a.wav", tmp_path / "a.flac"
    for out, extra in ((wav, []), (flac, ["--channels", "2"])):
        r = _render([str(song), "-o", str(out), "--model", str(model_dir), "--mapping", "", *extra])
        assert r.returncode == 0, r.stderr
    info = soundfile.info(str(flac))
    assert (info.format, info.subtype, info.channels, info.samplerate) == ("FLAC", "PCM_16", 2, 48000)
    stereo, _ = soundfile.read(str(flac))
    mono, _ = soundfile.read(str(wav))
    assert stereo.shape == (mono.size, 2)
    np.testing.assert_array_equal(stereo[:, 0], stereo[:, 1])
    np.testing.assert_array_equal(stereo[:, 0], mono)  # the same render, losslessly
    assert soundfile.info(str(wav)).format == "WAV"


@pytest.mark.parametrize(
    "output, extra, needle",
    [
        pytest.param("no_such_dir/o.wav", [], "output folder does not exist", id="missing-folder"),
        pytest.param("o.mp4", [], "extension picks the format", id="unknown-extension"),
        pytest.param("o", [], "extension picks the format", id="no-extension"),
        pytest.param("o.flac", ["--format", "float"], "cannot be stored in FLAC", id="float-flac"),
        pytest.param(".", [], "extension", id="a-folder"),
    ],
)
def test_output_is_checked_before_anything_is_loaded_or_rendered(tmp_path, output, extra, needle):
    """The model given does not exist: the error must still be about -o, i.e. checked first."""
    song = _song(tmp_path / "song.mid")
    r = _render([str(song), "-o", str(tmp_path / output), "--model", str(tmp_path / "no_model"), *extra])
    assert r.returncode == 2
    errors = [ln for ln in r.stderr.splitlines() if "ERROR" in ln]
    assert len(errors) == 1 and needle in errors[0], r.stderr
    assert not list(tmp_path.glob("o*"))


def test_render_streams_to_the_file_with_memory_independent_of_length(tmp_path):
    """render_midi(sink=...) keeps nothing: the Python heap peak of a 4x longer song is
    the same (tracemalloc), and the streamed file equals the in-memory render."""
    import tracemalloc

    import mido

    from daemon.core.model import DecoderModel
    from daemon.app.render import StreamWriter, render_midi

    model = DecoderModel(REPO / "models" / "default")

    def song(path, seconds):
        mid = mido.MidiFile(ticks_per_beat=480)
        tr = mido.MidiTrack()
        mid.tracks.append(tr)
        for i in range(seconds):
            tr.append(mido.Message("note_on", note=60 + i % 5, velocity=90, time=0 if i == 0 else 10))
            tr.append(mido.Message("note_off", note=60 + i % 5, time=950))
        mid.save(str(path))
        return path

    peaks = []
    for seconds in (3, 12):
        path = song(tmp_path / f"s{seconds}.mid", seconds)
        writer = StreamWriter(tmp_path / f"s{seconds}.wav", 48000, "float")
        tracemalloc.start()
        render_midi(path, model, sample_rate=48000, mapping_path=None, sink=writer)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        writer.close()
    # a 12 s float32 song at 48 kHz is 2.3 MB: a render that kept it would grow by that
    assert peaks[1] - peaks[0] < 1_000_000, peaks
    import soundfile as sf

    streamed, _ = sf.read(tmp_path / "s3.wav", dtype="float32")
    whole = render_midi(tmp_path / "s3.mid", model, sample_rate=48000, mapping_path=None)
    np.testing.assert_array_equal(streamed, whole)
