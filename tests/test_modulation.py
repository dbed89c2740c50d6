"""LFOs (free and synced to MIDI clock) and expression sources (aftertouch, poly
aftertouch, velocity) through the Mapper and the real Engine. Time is simulated:
every ``handle``/``tick`` gets its ``now``, so nothing depends on the machine's speed."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import mido
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))


from daemon.core.engine import Engine  # noqa: E402
from daemon.errors import MappingError  # noqa: E402
from daemon.control.mapper import Mapper  # noqa: E402
from daemon.control.mapping import load_mapping_text  # noqa: E402
from daemon.control.modulation import lfo_wave  # noqa: E402

SR = 44100


def rig(model, text):
    engine = Engine(model, sample_rate=SR, polyphony=4, seed=1)
    return engine, Mapper(load_mapping_text(text, model), engine)


def rising_crossings(t, y):
    t, y = np.asarray(t), np.asarray(y)
    i = np.nonzero((y[:-1] < 0) & (y[1:] >= 0))[0]
    return t[i] + (t[i + 1] - t[i]) * (-y[i] / (y[i + 1] - y[i]))


def run_clock(mapper, bpm, beats, jitter_s=0.0, seed=0, tick_s=0.005, target=("neuron", 3)):
    """MIDI clock at ``bpm`` (24 per beat, each late/early by up to ``jitter_s``), ticks
    every ``tick_s``; returns (times, modulation of ``target``)."""
    rnd = random.Random(seed)
    pulse = 60.0 / bpm / 24
    clocks = [k * pulse + (rnd.uniform(-jitter_s, jitter_s) if k else 0.0) for k in range(int(beats * 24) + 1)]
    mapper.handle(mido.Message("start"), now=0.0)
    ticks = [i * tick_s for i in range(int(beats * 60.0 / bpm / tick_s))]
    events = sorted([(t, 0) for t in clocks] + [(t, 1) for t in ticks])
    ts, ys = [], []
    for t, kind in events:
        if kind == 0:
            mapper.handle(mido.Message("clock"), now=t)
        else:
            mapper.tick(t)
            ts.append(t)
            ys.append(mapper.modulation.get(target, 0.0))
    return ts, ys


LFO_SYNC = "lfos:\n  - {neuron: 3, shape: sine, beats: 1, depth: 0.5}\n"


@pytest.mark.parametrize("jitter_ms", [0.0, 1.0])
def test_lfo_synced_to_120_bpm_clock(model, jitter_ms):
    engine, mapper = rig(model, LFO_SYNC)
    ts, ys = run_clock(mapper, 120.0, 12, jitter_s=jitter_ms / 1000.0, seed=4)
    assert max(ys) == pytest.approx(0.5, abs=0.01) and min(ys) == pytest.approx(-0.5, abs=0.01)
    x = rising_crossings(ts, ys)
    periods = np.diff(x[x >= 2.0])  # after four beats
    assert len(periods) >= 6
    assert np.max(np.abs(periods / 0.5 - 1.0)) < 0.01  # within 1 % of one beat, every cycle
    # and in phase with the beat: a rising crossing on each beat
    assert np.max(np.abs(x[x >= 2.0] - np.round(x[x >= 2.0] / 0.5) * 0.5)) < 0.005
    assert mapper.clock.bpm == pytest.approx(120.0, rel=0.01)


def test_lfo_follows_a_tempo_change(model):
    engine, mapper = rig(model, "lfos:\n  - {neuron: 3, beats: 2, depth: 1}\n")
    run_clock(mapper, 120.0, 4)
    ts, ys = run_clock(mapper, 90.0, 12)
    x = rising_crossings(ts, ys)
    periods = np.diff(x[x >= 60.0 / 90 * 4])
    assert np.max(np.abs(periods / (2 * 60.0 / 90) - 1.0)) < 0.01


def test_lfo_free_running_reaches_engine(model):
    engine, mapper = rig(model, "params: {smoothing: 0}\nlfos:\n  - {neuron: 1, shape: triangle, rate: 2, depth: 0.4, offset: 0.1}\n")
    base = mapper.latents[1]
    t0 = mapper._lfos._t0
    ts, ys = [], []
    for i in range(400):
        t = t0 + i * 0.005
        mapper.tick(t)
        ts.append(t)
        ys.append(mapper.modulation[("neuron", 1)])
    assert max(ys) == pytest.approx(0.5, abs=1e-6) and min(ys) == pytest.approx(-0.3, abs=1e-6)
    x = rising_crossings(ts, np.subtract(ys, 0.1))
    assert np.allclose(np.diff(x), 0.5, rtol=1e-3)
    engine.render(engine.hop_length)
    assert engine.latent[1] == pytest.approx(base + ys[-1])
    assert mapper.latents[1] == base  # the knob's value is not the modulated one


def test_depth_and_offset_on_knobs(model):
    text = ("lfos:\n  - {param: gain, rate: 1, depth: 0}\n"
            "controls:\n  - {cc: 22, param: lfo1_depth, range: [0, 6], takeover: jump}\n"
            "  - {cc: 23, param: lfo1_offset, range: [-6, 0], takeover: jump}\n")
    engine, mapper = rig(model, text)
    t0 = mapper._lfos._t0
    mapper.tick(t0 + 0.25)
    assert mapper.modulation[("param", "gain_db")] == pytest.approx(0.0)
    mapper.handle(mido.Message("control_change", control=22, value=127))
    mapper.handle(mido.Message("control_change", control=23, value=0))
    mapper.tick(t0 + 1.25)  # a quarter cycle: sine at its top
    assert mapper.modulation[("param", "gain_db")] == pytest.approx(6.0 - 6.0)
    mapper.tick(t0 + 1.75)
    assert mapper.modulation[("param", "gain_db")] == pytest.approx(-12.0)
    engine.render(engine.hop_length)
    assert engine.params["gain_db"] == pytest.approx(-12.0)


def test_random_smooth_is_smooth_and_repeatable():
    ys = [lfo_wave("random", k / 1000.0, seed=2) for k in range(5000)]
    assert max(ys) <= 1.0 and min(ys) >= -1.0
    assert np.max(np.abs(np.diff(ys))) < 2 * np.pi / 1000  # no corner, no jump
    assert ys == [lfo_wave("random", k / 1000.0, seed=2) for k in range(5000)]
    assert len({round(lfo_wave("random", k, seed=2), 6) for k in range(20)}) > 15


def test_expression_sources(model):
    text = ("controls:\n"
            "  - {source: aftertouch, neuron: 4, range: [0, 2]}\n"
            "  - {source: poly_aftertouch, neuron: 5, range: [-1, 1]}\n"
            "  - {source: velocity, param: gain, range: [-24, 0]}\n"
            "  - {source: aftertouch, channel: 2, neuron: 6, range: [0, 1]}\n")
    engine, mapper = rig(model, text)
    mapper.handle(mido.Message("aftertouch", value=127, channel=0))
    assert mapper.latents[4] == 2.0 and mapper.latents[6] != 1.0  # channel 2's control not moved
    mapper.handle(mido.Message("aftertouch", value=0, channel=0))
    assert mapper.latents[4] == 0.0  # follows the hand at once (jump), also back down
    mapper.handle(mido.Message("polytouch", note=60, value=127, channel=3))
    assert mapper.latents[5] == 1.0
    mapper.handle(mido.Message("note_on", note=60, velocity=127))
    assert mapper.params["gain_db"] == 0.0
    mapper.handle(mido.Message("note_on", note=61, velocity=1))
    assert mapper.params["gain_db"] == pytest.approx(-24 + 24 / 127)
    mapper.handle(mido.Message("aftertouch", value=127, channel=1))
    assert mapper.latents[6] == 1.0
    engine.render(engine.hop_length)
    assert engine.params["gain_db"] == pytest.approx(-24 + 24 / 127)


def test_unused_aftertouch_and_clock_are_dropped(model):
    engine, mapper = rig(model, "{}\n")
    for m in (mido.Message("aftertouch", value=3), mido.Message("polytouch", note=1, value=3), mido.Message("clock")):
        mapper.handle(m)
    assert mapper.dropped == 3 and mapper.handled == 0


@pytest.mark.parametrize("text, error", [
    ("lfos:\n  - {neuron: 1}\n", r"lfos\[0\]: needs exactly one of rate"),
    ("lfos:\n  - {neuron: 1, rate: 1, beats: 1}\n", r"lfos\[0\]: needs exactly one of rate"),
    ("lfos:\n  - {neuron: 1, rate: 1, shape: square}\n", r"lfos\[0\]\.shape: unknown value"),
    ("lfos:\n  - {neuron: 9, rate: 1}\n", r"lfos\[0\]\.neuron: out of range"),
    ("controls:\n  - {cc: 1, param: lfo1_depth}\n", r"controls\[0\]\.param: no such LFO"),
    ("controls:\n  - {source: aftertouch, cc: 3, neuron: 1}\n", r"controls\[0\]\.cc: a control with 'source: aftertouch' has no CC"),
    ("controls:\n  - {source: pressure, neuron: 1}\n", r"controls\[0\]\.source: unknown value"),
])
def test_errors(model, text, error):
    with pytest.raises(MappingError, match=error):
        load_mapping_text(text, model)
