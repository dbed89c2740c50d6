"""daemon.core.engine.Engine with real ONNX decoders: streaming, safety, voices, model switch."""

from __future__ import annotations

import numpy as np
import pytest

from daemon.core.engine import PARAMS, Engine
from daemon.core.model import DecoderModel
from harmonic_model import build_harmonic_decoder, measure_f0, midi_to_hz, rms_dbfs, rms_modulation


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return DecoderModel(build_harmonic_decoder(tmp_path_factory.mktemp("harmonic")))


@pytest.fixture(scope="module")
def model_small(tmp_path_factory):
    """Another decoder with a different frame size (2048/512) and timbre."""
    d = tmp_path_factory.mktemp("harmonic_small")
    return DecoderModel(build_harmonic_decoder(d, n_fft=2048, hop_length=512, n_harmonics=6))


@pytest.fixture(scope="module")
def nan_model(tmp_path_factory):
    """A real ONNX decoder that emits Inf/NaN: magnitude = (1/z) @ ones."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    path = tmp_path_factory.mktemp("nan") / "decoder.onnx"
    good = build_harmonic_decoder(path.parent / "good.onnx")
    meta = {p.key: p.value for p in onnx.load(str(good)).metadata_props}
    graph = helper.make_graph(
        [helper.make_node("Reciprocal", ["z"], ["r"]), helper.make_node("MatMul", ["r", "W"], ["magnitude"])],
        "nan_decoder",
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("magnitude", TensorProto.FLOAT, ["batch", 2049])],
        initializer=[numpy_helper.from_array(np.ones((8, 2049), np.float32), "W")],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    meta["latent_default"] = "[1, 1, 1, 1, 1, 1, 1, 1]"
    helper.set_model_props(m, meta)
    onnx.save(m, str(path))
    return DecoderModel(path)


def _play(engine, schedule, total, block):
    """Render ``total`` samples in blocks of ``block``; ``schedule`` = {sample: [calls]}."""
    out = np.zeros(total, np.float32)
    marks = sorted(schedule)
    pos = 0
    while pos < total:
        nxt = min([m for m in marks if m > pos] + [total])
        while pos < nxt:
            n = min(block, nxt - pos)
            engine.render(n, out=out[pos:pos + n])
            pos += n
        for fn, args in schedule.get(pos, []):
            getattr(engine, fn)(*args)
    return out


def _schedule():
    return {
        0: [("note_on", (60, 100)), ("set_latents", ([0.5, -0.5, 1, 0, 0, 0, 0, 0],))],
        5000: [("note_on", (67, 80)), ("set_latent", (2, -1.5))],
        20000: [("set_pitch_bend", (1.0,)), ("note_off", (60,))],
        30001: [("set_param", ("gain_db", -6.0)), ("note_on", (72, 127))],
        40000: [("note_off", (67,)), ("note_off", (72,))],
    }


@pytest.mark.parametrize("block", [1, 64, 65, 1000, 8193])
def test_streaming_equals_offline(model, block):
    total = 48000
    offline = Engine(model, sample_rate=44100)
    sched = _schedule()
    # offline: one call between events
    ref = _play(offline, sched, total, total)
    got = _play(Engine(model, sample_rate=44100), sched, total, block)
    assert rms_dbfs(ref) > -40.0  # something was played
    np.testing.assert_array_equal(got, ref)


def test_same_seed_same_audio_other_seed_other_phases(model):
    def run(seed):
        e = Engine(model, sample_rate=44100, seed=seed)
        e.note_on(60, 100)
        return e.render(20000)
    a, b, c = run(1), run(1), run(2)
    np.testing.assert_array_equal(a, b)
    assert np.max(np.abs(a - c)) > 1e-3


def test_note_off_reaches_silence_and_frees_voice(model):
    e = Engine(model, sample_rate=48000)
    e.set_param("release_ms", 200.0)
    e.note_on(69, 127)
    y = e.render(48000)
    assert rms_dbfs(y[24000:]) > -30.0
    e.note_off(69)
    y = e.render(48000)  # 1 s after a 200 ms release
    assert e.stats.active_voices == 0
    tail = y[-8192:]
    assert np.max(np.abs(tail)) < 10 ** (-90 / 20)  # below -90 dBFS
    # the release itself: about -60 dB after release_ms
    hop = e.hop_length
    drop = rms_dbfs(y[int(0.2 * 48000):int(0.2 * 48000) + hop]) - rms_dbfs(y[:hop])
    assert -75.0 < drop < -45.0


def test_held_note_is_a_steady_tone(model):
    """Held latent, held note: constant level, modulation like the source tone's."""
    e = Engine(model, sample_rate=44100)
    e.note_on(60, 100)
    y = e.render(4 * 44100)[44100:]
    t = np.arange(y.size) / 44100
    from harmonic_model import harmonic_amplitudes
    src = sum(a * np.sin(2 * np.pi * (h + 1) * 261.6256 * t)
              for h, a in enumerate(harmonic_amplitudes(np.zeros(8))[0]))
    assert rms_modulation(y, 4096) <= 1.5 * rms_modulation(src, 4096)
    assert abs(rms_dbfs(y[:44100]) - rms_dbfs(y[-44100:])) < 0.1


@pytest.mark.parametrize("value", [1e3, -1e3], ids=["plus-1e3", "minus-1e3"])
def test_extreme_latents_stay_finite_and_bounded(model, value):
    e = Engine(model, sample_rate=48000)
    for n in (48, 60, 72):
        e.note_on(n, 127)
    e.set_param("gain_db", 24.0)
    e.set_latents([value] * 8)
    y = e.render(48000)
    assert np.all(np.isfinite(y)) and np.max(np.abs(y)) <= 1.0
    for i in range(8):
        e.set_latent(i, -value if i % 2 else value)
        y = e.render(4096)
        assert np.all(np.isfinite(y)) and np.max(np.abs(y)) <= 1.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_midi_flood_is_safe(model, seed):
    rng = np.random.default_rng(seed)
    e = Engine(model, sample_rate=48000, polyphony=16)
    params = list(PARAMS)
    peak = 0.0
    for _ in range(60):
        for _ in range(int(rng.integers(0, 40))):
            kind = rng.integers(0, 6)
            if kind == 0:
                e.note_on(int(rng.integers(0, 128)), int(rng.integers(1, 128)))
            elif kind == 1:
                e.note_off(int(rng.integers(0, 128)))
            elif kind == 2:
                e.set_pitch_bend(float(rng.uniform(-48, 48)))
            elif kind == 3:
                e.set_latent(int(rng.integers(0, 8)), float(rng.normal() * 10 ** rng.uniform(0, 3)))
            elif kind == 4:
                name = params[int(rng.integers(0, len(params)))]
                e.set_param(name, float(rng.uniform(-1e4, 1e4)))
            else:
                e.set_sustain(bool(rng.integers(0, 2)))
        y = e.render(int(rng.integers(1, 3000)))
        assert np.all(np.isfinite(y))
        peak = max(peak, float(np.max(np.abs(y))) if y.size else 0.0)
    assert peak <= 1.0
    e.set_param("release_ms", 10.0)
    e.all_notes_off()
    e.render(48000)
    assert e.stats.active_voices == 0


def test_decoder_nan_inf_become_silence(nan_model):
    e = Engine(nan_model, sample_rate=48000)
    e.note_on(60, 100)
    e.set_latents([0.0, 1, -1, 1, 1, 1, 1, 1])  # 1/0 = inf, inf - inf = nan
    y = e.render(20000)
    assert np.all(np.isfinite(y)) and np.max(np.abs(y)) <= 1.0
    assert rms_dbfs(y[-2048:]) < -90.0  # once the latent lands on the bad value: silence
    e.set_latents([1.0] * 8)  # finite again: sound comes back
    y = e.render(20000)
    assert rms_dbfs(y[-4096:]) > -40.0


def test_polyphony_steals_oldest(model):
    e = Engine(model, sample_rate=48000, polyphony=2)
    e.note_on(48, 100)
    e.render(4096)
    e.note_on(60, 100)
    e.render(4096)
    e.note_on(72, 100)
    y = e.render(48000)[8192:]
    assert e.stats.stolen_voices == 1
    assert e.stats.active_voices == 2
    level = {n: np.abs(np.fft.rfft(y * np.hanning(y.size)))[int(round(midi_to_hz(n) * y.size / 48000))]
             for n in (48, 60, 72)}
    assert 20 * np.log10(level[48] / level[60]) < -40.0
    assert abs(20 * np.log10(level[72] / level[60])) < 12.0


def test_sustain_pedal_holds_until_released(model):
    e = Engine(model, sample_rate=48000)
    e.set_param("release_ms", 50.0)
    e.note_on(64, 100)
    e.set_sustain(True)
    e.render(4800)
    e.note_off(64)
    y = e.render(48000)
    assert rms_dbfs(y[-4800:]) > -35.0  # still sounding a second later
    e.set_sustain(False)
    y = e.render(48000)
    assert e.stats.active_voices == 0 and np.max(np.abs(y[-4096:])) < 1e-5


@pytest.mark.parametrize("curve", [1.0, 2.0])
def test_velocity_curve(model, curve):
    def level(vel):
        e = Engine(model, sample_rate=48000)
        e.set_param("velocity_curve", curve)
        e.note_on(60, vel)
        return rms_dbfs(e.render(48000)[24000:])
    expect = 20 * np.log10((64 / 127) ** curve)
    assert abs(level(64) - level(127) - expect) < 0.2


def test_gain_db(model):
    def level(g):
        e = Engine(model, sample_rate=48000)
        e.set_param("gain_db", g)
        e.note_on(60, 100)
        return rms_dbfs(e.render(48000)[24000:])
    assert abs(level(-12.0) - level(0.0) + 12.0) < 0.2


def test_attack_and_no_click_at_note_on(model):
    e = Engine(model, sample_rate=48000)
    e.set_param("attack_ms", 100.0)
    e.set_param("sustain_level", 1.0)
    e.render(1000)
    e.note_on(60, 127)
    y = e.render(48000)
    start = np.flatnonzero(np.abs(y) > 0)[0]
    first = y[start:start + 480]  # first 10 ms: still quiet
    steady = y[24000:]
    assert rms_dbfs(first) < rms_dbfs(steady) - 15.0
    # no sample step larger than the steady signal's own largest step
    assert np.max(np.abs(np.diff(y[: 24000]))) <= 1.05 * np.max(np.abs(np.diff(steady)))


@pytest.mark.parametrize("other", ["same_config", "other_frame_size"])
def test_set_model_switches_without_gap(model, model_small, other):
    new = model if other == "same_config" else model_small
    e = Engine(model, sample_rate=48000)
    e.note_on(60, 100)
    before = e.render(48000)
    e.set_model(new)
    after = e.render(48000)
    assert e.stats.model_switches == 1
    assert e.model is new
    y = np.concatenate([before[-8192:], after])
    win = 512
    levels = [rms_dbfs(y[i:i + win]) for i in range(0, y.size - win, win)]
    ref = rms_dbfs(before[-8192:])
    assert min(levels) > ref - 12.0  # no gap (a crossfade dips a little at most)
    assert np.all(np.isfinite(after)) and np.max(np.abs(after)) <= 1.0
    f = measure_f0(after[24000:], 48000, midi_to_hz(60))
    assert abs(1200 * np.log2(f / midi_to_hz(60))) < 5.0
    e.note_off(60)
    e.render(48000)
    assert e.stats.active_voices == 0


def test_stats_counters(model):
    e = Engine(model, sample_rate=48000)
    e.note_on(60, 100)
    e.note_on(64, 100)
    e.render(10 * e.hop_length)
    s = e.stats
    assert s.hops_rendered == 10 and s.active_voices == 2
    assert s.decodes == 1  # held latent: decoded once
    assert s.last_hop_ms > 0.0 and s.max_hop_ms >= s.last_hop_ms
    assert set(s.as_dict()) >= {"active_voices", "hops_rendered", "last_hop_ms"}


@pytest.mark.parametrize("call,args,needle", [
    ("note_on", (128, 100), "0..127"),
    ("note_off", (-1,), "0..127"),
    ("set_latent", (8, 0.0), "latent_dim=8"),
    ("set_latents", ([0.0] * 3,), "latent_dim=8"),
    ("set_param", ("volume", 1.0), "gain_db"),
    ("set_pitch_mode", ("chromatic",), "transpose"),
    ("set_polyphony", (0,), "1..64"),
], ids=["note-range", "note-off-range", "latent-index", "latent-count", "unknown-param", "pitch-mode",
        "polyphony"])
def test_control_errors_name_the_value(model, call, args, needle):
    e = Engine(model, sample_rate=48000)
    with pytest.raises(ValueError, match=needle):
        getattr(e, call)(*args)


@pytest.mark.parametrize("kwargs,needle", [
    ({"sample_rate": 1000}, "sample_rate"),
    ({"sample_rate": 48000, "polyphony": 100}, "polyphony"),
    ({"sample_rate": 48000, "lookahead": 3}, "lookahead"),
    ({"sample_rate": 48000, "pitch_mode": "nope"}, "pitch_mode"),
], ids=["rate", "polyphony", "lookahead", "pitch-mode"])
def test_constructor_errors(model, kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        Engine(model, **kwargs)


def test_lookahead_one_plays_in_tune(model):
    e = Engine(model, sample_rate=48000, lookahead=1)
    e.note_on(69, 100)
    y = e.render(72000)[24000:]
    assert abs(1200 * np.log2(measure_f0(y, 48000, 440.0) / 440.0)) < 5.0
    assert e.latency_samples == 2 * e.hop_length


@pytest.mark.parametrize("attack_ms", [2.0, 5.0, 10.0])
def test_short_attack_keeps_its_length(model, attack_ms):
    """Attacks shorter than a hop are not stretched to the hop (21 ms at 48 kHz)."""
    sr = 48000
    e = Engine(model, sample_rate=sr)
    e.set_param("attack_ms", attack_ms)
    e.set_param("sustain_level", 1.0)
    e.render(e.hop_length)
    e.note_on(69, 127)
    y = e.render(sr)
    onset = np.flatnonzero(np.abs(y) > 0)[0]
    a = int(attack_ms * sr / 1000)
    env = np.abs(y[onset:onset + 4 * e.hop_length])
    full = np.max(np.abs(y[sr // 2:]))
    assert np.max(env[a + 48:a + 48 + 480]) > 0.8 * full  # at full level 1 ms after the attack
    assert np.max(env[: max(a // 4, 1)]) < 0.5 * full  # and it does ramp


def test_short_release_keeps_its_length(model):
    sr = 48000
    e = Engine(model, sample_rate=sr)
    e.set_param("release_ms", 5.0)
    e.note_on(69, 127)
    e.render(sr // 2 - (sr // 2) % e.hop_length)  # stop at a hop boundary
    e.note_off(69)
    y = e.render(4 * e.hop_length)
    # below -80 dBFS 6 ms after the note-off (what remains is the DC blocker's settling)
    assert np.max(np.abs(y[int(0.006 * sr):])) < 1e-4


@pytest.fixture(scope="module")
def model_dim4(tmp_path_factory):
    """A decoder with another latent size (4) and frame size (2048/512)."""
    d = tmp_path_factory.mktemp("harmonic_dim4")
    return DecoderModel(build_harmonic_decoder(d, n_fft=2048, hop_length=512, latent_dim=4))


def test_latent_calls_after_set_model_use_the_new_latent_dim(model, model_dim4):
    """A program change to a model of another latent size: the control calls that
    follow it (before the render side has switched) take the new size."""
    e = Engine(model, sample_rate=48000)
    e.note_on(60, 100)
    e.render(4096)
    e.set_model(model_dim4)
    e.set_latents([0.5, -0.5, 1.0, 0.0])  # raised ValueError (latent_dim=8) before the switch
    e.set_latent(3, -1.0)
    with pytest.raises(ValueError, match="latent_dim=4"):
        e.set_latent(4, 0.0)
    y = e.render(48000)
    np.testing.assert_allclose(e.latent, [0.5, -0.5, 1.0, -1.0], atol=1e-6)
    assert np.all(np.isfinite(y)) and np.max(np.abs(y)) <= 1.0 and rms_dbfs(y[-8192:]) > -40.0


def test_settings_queued_before_set_model_reach_the_new_model(model, model_small):
    """set_param / set_polyphony queued before set_model apply to the new model's voices."""
    def onset_level_db(switch):
        e = Engine(model, sample_rate=48000)
        e.set_param("attack_ms", 2000.0)
        e.set_param("sustain_level", 1.0)
        e.set_polyphony(1)
        if switch:
            e.set_model(model_small)
        e.note_on(60, 127)
        e.note_on(64, 127)  # polyphony 1: steals 60
        y = e.render(3 * 48000)
        return rms_dbfs(y[int(0.2 * 48000):int(0.25 * 48000)]) - rms_dbfs(y[-4800:]), e.stats.stolen_voices
    for switch in (False, True):
        level, stolen = onset_level_db(switch)
        assert level < -12.0, (switch, level)  # 2 s attack: ~-18 dB at 0.22 s
        assert stolen == 1, switch


@pytest.mark.parametrize("other", ["same_config", "other_frame_size"])
def test_note_held_by_the_pedal_across_set_model_is_released_with_it(model, model_small, other):
    """Key up, pedal down, program change, pedal up: the note ends (was stuck as held)."""
    e = Engine(model, sample_rate=48000)
    e.set_param("release_ms", 50.0)
    e.note_on(60, 100)
    e.note_on(64, 100)
    e.set_sustain(True)
    e.render(9600)
    e.note_off(60)  # sustained by the pedal
    e.set_model(model if other == "same_config" else model_small)
    y = e.render(9600)
    assert rms_dbfs(y[-4096:]) > -35.0 and e.stats.active_voices == 2  # both still sound
    e.set_sustain(False)  # 60 ends; 64 is still held by its key
    e.render(24000)
    assert e.stats.active_voices == 1
    e.note_off(64)
    y = e.render(24000)
    assert e.stats.active_voices == 0 and np.max(np.abs(y[-4096:])) < 1e-5
