"""Render ahead (``AudioOutput(ahead=...)``): a producer thread fills a ring that the audio
callback only copies from. Offline (the ring, driven step by step) and through JACK."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import sounddevice as sd

from jack_util import Recorder, cents, dbfs, fundamental_hz_median, jack_server_env

RATE = 48000


class Ramp:
    """A render source whose every sample is its own index: any lost, repeated or
    reordered sample shows."""

    def __init__(self):
        self.n = 0

    def __call__(self, n, out):
        out[:] = (self.n + np.arange(n)) * 1e-6
        self.n += n
        return out


@pytest.fixture
def offline(offline_audio):
    def make(render, **kw):
        out = offline_audio(render, **kw)
        out._gain = out._target = 1.0  # no fade: the samples pass unchanged
        return out

    return make


def _pull(out, frames: int) -> np.ndarray:
    buf = np.full((frames, 2), 7.0, dtype=np.float32)
    out._callback(buf, frames, None, sd.CallbackFlags())
    return buf[:, 0].copy()


def _fill(out) -> None:
    while out._fill_once():
        pass


def test_callback_plays_every_rendered_sample_once_in_order_across_the_ring(offline):
    out = offline(Ramp(), ahead=768, chunk=256)
    got = []
    rng = np.random.default_rng(1)
    for _ in range(400):  # many laps of the ring, odd block sizes
        _fill(out)
        got.append(_pull(out, int(rng.integers(1, 769))))
    y = np.concatenate(got)
    assert np.array_equal(y, ((np.arange(len(y)) * 1e-6).astype(np.float32)))
    assert out.counters.late == 0 and out.counters.underruns == 0
    assert out._written - out._read <= out.ahead + out.chunk


def test_a_late_producer_plays_a_declicked_gap_and_loses_nothing(offline):
    out = offline(Ramp(), ahead=512, chunk=256, fade_s=0.01)
    _fill(out)  # 512 frames there
    y = _pull(out, 700)  # asks for more than is rendered
    ramp = (np.arange(512) * 1e-6).astype(np.float32)
    assert out.counters.late == 1 and np.all(y[512:] == 0.0)
    assert y[511] == 0.0 and np.all(np.diff(y[:512] / np.maximum(ramp, 1e-12))[1:] < 0)  # faded out
    _fill(out)
    z = _pull(out, 100)  # goes on with sample 512 (nothing skipped), fading back in
    gain = z / ((512 + np.arange(100)) * 1e-6)
    step = 1.0 / (0.01 * RATE)
    assert np.allclose(gain, step * np.arange(1, 101), rtol=1e-4)


def test_auto_switches_between_two_blocks_without_losing_a_sample(offline):
    src = Ramp()
    out = offline(src, auto_ahead=768, chunk=256, fade_s=0.01)
    assert out.ahead == 0
    _fill(out)
    assert out._written == 0  # rendering in the callback: the producer does nothing
    a = _pull(out, 300)
    assert np.array_equal(a, (np.arange(300) * 1e-6).astype(np.float32))
    assert out.request_ahead() and not out.request_ahead()  # once
    b = _pull(out, 300)  # rendered in the callback one last time, faded out
    assert src.n == 600 and out.ahead == 768 and b[-1] == 0.0
    _fill(out)
    assert out._written == 768
    c = _pull(out, 300)  # from the ring: sample 600 on, fading in
    gain = c / ((600 + np.arange(300)) * 1e-6)
    assert np.allclose(gain, np.clip((1.0 / (0.01 * RATE)) * np.arange(1, 301), 0, 1), rtol=1e-4)


def test_render_errors_in_the_producer_play_silence_and_are_reported(offline):
    def bad(n, out):
        raise RuntimeError("boom")

    out = offline(bad, ahead=512, chunk=256)
    _fill(out)
    assert np.all(_pull(out, 256) == 0.0)
    assert out.counters.underruns >= 1 and "boom" in out.last_error


def test_the_duplex_stream_never_renders_ahead(offline_audio):
    out = offline_audio(Ramp(), inputs=1, ahead=768, input_channels=1)
    assert out.ahead == 0  # the effect renders from the input block it is given


@pytest.fixture(scope="module")
def jack_server(tmp_path_factory):
    with jack_server_env("canne-test-ahead", tmp_path_factory.mktemp("jack")) as server:
        yield server


@pytest.mark.jack
def test_through_jack_a_source_slower_than_a_period_plays_continuously(jack_server):
    """Every 4th render call takes 8 ms, longer than a 256-frame period (5.3 ms), as a
    1024-sample hop does under load: rendered 768 frames ahead it still plays a clean sine."""
    rec = Recorder(jack_server, name="rec-ahead")
    try:
        code = textwrap.dedent(
            """
            import sys, time, numpy as np
            from daemon.adapters.audio_output import AudioOutput
            w = 2 * np.pi * 440.0 / 48000
            state = [0, 0]
            def sine(n, out):
                out[:] = 0.5 * np.sin(w * (state[0] + np.arange(n)))
                state[0] += n
                state[1] += 1
                if state[1] % 4 == 0:
                    time.sleep(0.008)
                return out
            out = AudioOutput(sine, fade_s=0.01, ahead=768, chunk=256)
            out.start()
            print("started", out.device["hostapi"], flush=True)
            sys.stdin.readline()
            out.fade_out(); out.wait_faded_out(1.0)
            c = out.counters
            print("closed", out.close(2.0), c.callbacks, c.nonfinite, c.underruns, flush=True)
            """
        )
        proc = subprocess.Popen([sys.executable, "-c", code], env=jack_server.env, text=True,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert proc.stdout.readline().startswith("started JACK")
        rec.connect_from("CANNe-audio")
        mark = rec.mark()
        rec.wait_frames(RATE)
        proc.stdin.write("\n")
        proc.stdin.flush()
        out, _ = proc.communicate(timeout=20)
        y = rec.since(mark)
    finally:
        rec.close()
    assert proc.returncode == 0
    words = out.split()
    assert words[0] == "closed" and words[1] == "True" and int(words[2]) > 10
    assert words[3] == "0" and words[4] == "0"  # nothing non-finite, no render failure
    assert np.all(np.isfinite(y)) and np.max(np.abs(y)) <= 1.0
    seg = y[RATE // 4: RATE // 4 + RATE // 2, 0]
    assert abs(cents(fundamental_hz_median(seg, RATE, 300, 600), 440.0)) < 5
    assert dbfs(seg) == pytest.approx(dbfs(0.5 * np.sin(np.arange(RATE) * 0.1)), abs=0.5)
