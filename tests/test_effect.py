"""The ANNe effect: streaming, identity, gains, silence, safety, `canne process`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from daemon.core.effect import EffectEngine, EffectSettings, split_sizes
from daemon.core.model import DecoderModel, EncoderModel
from daemon.app.process import process_audio

SR, N_FFT, HOP = 16000, 512, 128
N_BINS = N_FFT // 2 + 1


def build_identity_model(folder: Path, *, scale_bins: np.ndarray | None = None) -> Path:
    """encoder: magnitude -> z (latent = the frame itself); decoder: z -> z (times an
    optional fixed per-bin scale). An 'identity-like' ANNe model with known answers."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    folder.mkdir(parents=True, exist_ok=True)
    meta = {
        "canne_format_version": "1", "sample_rate": str(SR), "n_fft": str(N_FFT),
        "hop_length": str(HOP), "window": "hann", "latent_dim": str(N_BINS),
        "latent_min": json.dumps([0.0] * N_BINS), "latent_max": json.dumps([1.0] * N_BINS),
        "latent_default": json.dumps([0.0] * N_BINS), "reference_note": "60",
        "corpus": "identity test model", "validation_metrics": json.dumps({"sc_mse": 0.0}),
    }
    for name, a, b, scale in (("encoder", "magnitude", "z", None), ("decoder", "z", "magnitude",
                                                                   scale_bins)):
        inits, nodes = [], []
        if scale is None:
            nodes.append(helper.make_node("Identity", [a], [b]))
        else:
            inits.append(numpy_helper.from_array(scale.astype(np.float32)[None, :], "S"))
            nodes.append(helper.make_node("Mul", [a, "S"], [b]))
        g = helper.make_graph(nodes, name, [helper.make_tensor_value_info(a, TensorProto.FLOAT,
                                                                          ["batch", N_BINS])],
                              [helper.make_tensor_value_info(b, TensorProto.FLOAT, ["batch", N_BINS])],
                              initializer=inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        m.ir_version = 8
        helper.set_model_props(m, meta)
        onnx.save(m, str(folder / f"{name}.onnx"))
    return folder


@pytest.fixture(scope="module")
def identity(tmp_path_factory):
    d = DecoderModel(build_identity_model(tmp_path_factory.mktemp("m") / "identity"))
    return d, EncoderModel(d)


def signal(seconds=1.5, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    y = 0.3 * np.sin(2 * np.pi * 220 * t * (1 + 0.02 * np.sin(2 * np.pi * 3 * t)))
    y += 0.15 * np.sin(2 * np.pi * 1250 * t) * (t > 0.4)
    y += 0.02 * rng.standard_normal(t.size)
    return y


def sc_db(ref, y):
    return 20 * np.log10(np.linalg.norm(y - ref) / np.linalg.norm(ref))


def test_identity_model_gives_the_input_back(identity):
    x = signal()
    y = process_audio(x, SR, *identity)
    assert y.shape == x.shape
    # the one change: each wet frame's DC bin is zeroed (the effect's DC blocker), a
    # high-pass at about sr / n_fft; everything else passes unchanged
    assert sc_db(x[N_FFT:], y[N_FFT:]) < -40.0


@pytest.mark.parametrize("block", [1, 64, 65, 1000, 8193])
def test_streaming_equals_offline_at_any_block_size(identity, block):
    x = signal(0.8, seed=1)
    settings = EffectSettings(gains=[1.0, 2.0, 0.5, 1.0, 3.0], mix=0.7)
    ref = EffectEngine(*identity, sample_rate=SR, settings=settings).process(x)
    eng = EffectEngine(*identity, sample_rate=SR, settings=settings)
    got = np.concatenate([eng.process(x[i:i + block]) for i in range(0, len(x), block)])
    np.testing.assert_array_equal(got, ref)


def test_latency_is_n_fft(identity):
    x = np.zeros(4 * N_FFT)
    x[N_FFT + 100] = 0.5
    y = EffectEngine(*identity, sample_rate=SR).process(x)
    assert int(np.argmax(np.abs(y))) == N_FFT + 100 + N_FFT


def test_gains_change_the_spectrum_of_their_group(identity):
    x = signal(seed=2)
    sizes = split_sizes(N_BINS, "even")
    base = process_audio(x, SR, *identity)
    loud = process_audio(x, SR, *identity, EffectSettings(gains=[1, 1, 4, 1, 1]))
    spec = lambda y: np.abs(np.fft.rfft(y[N_FFT:] * np.hanning(len(y) - N_FFT)))  # noqa: E731
    a, b = spec(base), spec(loud)
    hz = np.fft.rfftfreq(len(x) - N_FFT, 1 / SR)
    lo = sum(sizes[:2]) * SR / N_FFT
    hi = sum(sizes[:3]) * SR / N_FFT
    band = (hz > lo + 50) & (hz < hi - 50)
    below = (hz > 100) & (hz < sum(sizes[:2]) * SR / N_FFT - 50)
    gain_db = 10 * np.log10(np.sum(b[band] ** 2) / np.sum(a[band] ** 2))
    assert 9.0 < gain_db < 13.0  # x4 = +12 dB in the third group's bins
    assert abs(10 * np.log10(np.sum(b[below] ** 2) / np.sum(a[below] ** 2))) < 1.0


def test_silence_in_gives_silence_out(identity):
    eng = EffectEngine(*identity, sample_rate=SR, settings=EffectSettings(gains=[5.5] * 5))
    eng.process(signal(0.5))
    y = eng.process(np.zeros(SR))
    assert np.all(y[2 * N_FFT:] == 0.0)
    fresh = EffectEngine(*identity, sample_rate=SR)
    assert not np.any(fresh.process(np.zeros(SR)))


@pytest.mark.parametrize("gains", [[10, 10, 10, 10, 10], [0, 0, 0, 0, 0], [0.5, 5.5, 0.5, 5.5, 3]])
def test_any_gain_setting_is_safe(identity, gains):
    x = 0.99 * np.sign(signal(seed=3))  # a square-ish, full-scale input
    x[1000:1010] = np.nan
    y = EffectEngine(*identity, sample_rate=SR, settings=EffectSettings(gains=gains)).process(x)
    assert np.all(np.isfinite(y)) and np.max(np.abs(y)) <= 1.0


def test_rtpghi_phase_option_rebuilds_a_tone(identity):
    t = np.arange(SR) / SR
    x = 0.3 * np.sin(2 * np.pi * 440 * t)
    y = process_audio(x, SR, *identity, EffectSettings(phase="rtpghi"))
    seg = y[N_FFT * 2:]
    spec = np.abs(np.fft.rfft(seg * np.hanning(len(seg))))
    f = np.fft.rfftfreq(len(seg), 1 / SR)[int(np.argmax(spec))]
    assert abs(f - 440) < 3.0
    rms = np.sqrt(np.mean(seg ** 2))
    assert abs(20 * np.log10(rms / (0.3 / np.sqrt(2)))) < 1.5


def test_freeze_holds_the_first_latent(identity):
    x = signal(seed=4)
    y = process_audio(x, SR, *identity, EffectSettings(freeze=True))
    # the frozen frame's magnitude (scaled by each frame's peak) keeps sounding: not the input
    assert sc_db(x[N_FFT:], y[N_FFT:]) > -20.0


@pytest.mark.parametrize("bad,needle", [
    (dict(gains=[1, 1]), "groups"), (dict(gains=[1, 1, 1, 1, 99]), "gain"),
    (dict(mix=1.5), "mix"), (dict(phase="nope"), "phase"), (dict(split="zig"), "zig"),
])
def test_bad_settings_are_refused(identity, bad, needle):
    with pytest.raises((ValueError, KeyError), match=needle):
        EffectEngine(*identity, sample_rate=SR, settings=EffectSettings(**bad))


def test_canne_process_command(tmp_path, identity):
    import soundfile as sf

    model = build_identity_model(tmp_path / "model")
    x = signal(seed=5)
    sf.write(tmp_path / "in.wav", x.astype(np.float32), SR, subtype="FLOAT")
    r = subprocess.run([sys.executable, "-m", "daemon.app.cli", "process", str(tmp_path / "in.wav"), "-o",
                        str(tmp_path / "out.flac"), "--model", str(model), "--gains", "1,1,1,1,1"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    y, sr = sf.read(tmp_path / "out.flac")
    assert sr == SR and len(y) == len(x)
    assert sc_db(x[N_FFT:], y[N_FFT:]) < -35.0  # 16-bit FLAC
    bad = subprocess.run([sys.executable, "-m", "daemon.app.cli", "process", str(tmp_path / "nope.wav"), "-o",
                          str(tmp_path / "o.wav"), "--model", str(model)],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "nope.wav" in bad.stderr and "Traceback" not in bad.stderr


def test_mapping_effect_section_and_knobs(tmp_path, identity):
    from daemon.core.effect import EffectControls
    from daemon.control.mapper import Mapper
    from daemon.control.mapping import load_mapping
    import mido

    dec, enc = identity
    y = tmp_path / "fx.yaml"
    y.write_text("name: fx\neffect:\n  split: fine_first\n  gains: [1, 2, 1, 1, 1]\n  mix: 0.5\n"
                 "  phase: rtpghi\n  offsets: {3: 0.25}\ncontrols:\n"
                 "  - {cc: 21, param: effect_gain_2}\n  - {cc: 22, param: effect_mix}\n")
    m = load_mapping(y, dec)
    assert m.effect.split == "fine_first" and m.effect.gains == [1, 2, 1, 1, 1]
    assert m.effect.mix == 0.5 and m.effect.phase == "rtpghi" and m.effect.offsets == {3: 0.25}
    eng = EffectEngine(dec, enc, sample_rate=SR, settings=m.effect)
    mapper = Mapper(m, EffectControls(eng))
    mapper.handle(mido.Message("control_change", control=21, value=127))
    mapper.handle(mido.Message("control_change", control=22, value=0))
    mapper.handle(mido.Message("note_on", note=60, velocity=100))  # nothing to play: ignored
    assert eng.settings.gains[1] == pytest.approx(5.5) and eng.settings.mix == 0.0


@pytest.mark.parametrize("body,line,needle", [
    ("effect:\n  gains: [1, 1]\n", 3, "effect.gains"),
    ("effect:\n  split: zigzag\n", 3, "effect.split"),
    ("effect:\n  mix: 3\n", 3, "effect.mix"),
    ("effect:\n  phase: random\n", 3, "effect.phase"),
    ("effect:\n  offsets: {999: 1}\n", 3, "effect.offsets"),
    ("effect:\n  wobble: 1\n", 3, "wobble"),
])
def test_bad_effect_sections_name_file_and_line(tmp_path, identity, body, line, needle):
    from daemon.errors import MappingError
    from daemon.control.mapping import load_mapping

    y = tmp_path / "bad.yaml"
    y.write_text("name: fx\n" + body)
    with pytest.raises(MappingError) as exc:
        load_mapping(y, identity[0])
    msg = str(exc.value)
    assert f"bad.yaml:{line}" in msg and needle in msg and len(msg.splitlines()) == 1
