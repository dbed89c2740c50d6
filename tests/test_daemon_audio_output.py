"""Audio output adapter: the callback contract, driven directly and through a JACK dummy server."""

from __future__ import annotations

import numpy as np
import pytest
import sounddevice as sd

from daemon.adapters.audio_output import AudioOutput, find_output_device
from daemon.errors import DeviceError
from jack_util import Recorder, cents, dbfs, fundamental_hz_median, jack_server_env

RATE = 48000


class Sine:
    """A render source: a sine of ``freq`` at ``amp``, phase-continuous across calls."""

    def __init__(self, freq=440.0, amp=0.5, rate=RATE):
        self.w = 2 * np.pi * freq / rate
        self.amp = amp
        self.n = 0

    def __call__(self, n, out):
        out[:] = self.amp * np.sin(self.w * (self.n + np.arange(n)))
        self.n += n
        return out


@pytest.fixture
def offline(offline_audio):
    """Build AudioOutput without a device (conftest's ``offline_audio``)."""
    return offline_audio


def _pull(out: AudioOutput, frames: int, blocks: int, channels: int = 2) -> np.ndarray:
    got = []
    for _ in range(blocks):
        buf = np.full((frames, channels), 7.0, dtype=np.float32)
        out._callback(buf, frames, None, sd.CallbackFlags())
        got.append(buf)
    return np.concatenate(got)


def test_starts_muted_and_fades_in_without_a_step(offline):
    out = offline(Sine(amp=0.5), fade_s=0.01)
    muted = _pull(out, 256, 2)
    assert np.all(muted == 0.0), "before fade_in the output must be silent"
    out.fade_in()
    y = _pull(out, 256, 8)[:, 0]
    ramp_len = int(0.01 * RATE)
    # The envelope grows from 0 to 1 over fade_s: first samples quiet, later at full level.
    assert np.max(np.abs(y[:32])) < 0.5 * 32 / ramp_len + 1e-6
    assert np.max(np.abs(y[ramp_len:])) == pytest.approx(0.5, abs=1e-3)
    assert np.max(np.abs(np.diff(y))) <= 2 * np.pi * 440 / RATE * 0.5 + 1e-4  # no click


def test_fade_out_reaches_exact_silence(offline):
    out = offline(Sine(amp=0.8), fade_s=0.01)
    out.fade_in()
    _pull(out, 512, 4)
    out.fade_out()
    y = _pull(out, 512, 4)[:, 0]
    assert out.gain == 0.0
    assert np.all(y[int(0.01 * RATE) + 1:] == 0.0)
    assert out.wait_faded_out(0.01)


@pytest.mark.parametrize(
    "source, counter",
    [
        pytest.param(lambda n, out: out.fill(np.nan), "nonfinite", id="nan-block"),
        pytest.param(lambda n, out: out.fill(np.inf), "nonfinite", id="inf-block"),
        pytest.param(lambda n, out: 1 / 0, "underruns", id="render-raises"),
        pytest.param(None, "underruns", id="no-source"),
    ],
)
def test_bad_source_plays_silence_and_counts(offline, source, counter):
    out = offline(source, fade_s=0.001)
    out.fade_in()
    y = _pull(out, 128, 5)
    assert np.all(y == 0.0)
    assert getattr(out.counters, counter) == 5
    assert out.counters.callbacks == 5


def test_output_is_clamped_and_copied_to_every_channel(offline):
    out = offline(Sine(amp=4.0), fade_s=0.0001)
    out.fade_in()
    y = _pull(out, 300, 6)
    assert np.max(np.abs(y)) == pytest.approx(1.0)
    np.testing.assert_array_equal(y[:, 0], y[:, 1])


@pytest.mark.parametrize("spec", ["no-such-device-xyz", "999"], ids=["name", "index"])
def test_unknown_device_is_a_one_line_error_naming_it(spec):
    try:
        find_output_device(spec)
    except DeviceError as exc:
        msg = str(exc)
        assert spec in msg and "\n" not in msg
        assert "canne devices" in msg or "available" in msg or "no audio output device" in msg
    else:
        pytest.fail("an unknown device was accepted")


# -- through a real JACK dummy server ------------------------------------------------------


@pytest.fixture(scope="module")
def jack_server(tmp_path_factory):
    with jack_server_env("canne-test-audio", tmp_path_factory.mktemp("jack")) as server:
        yield server


@pytest.mark.jack
def test_stream_through_jack_plays_the_source_at_pitch(jack_server):
    import subprocess
    import sys
    import textwrap

    # The stream runs in a subprocess: PortAudio picks the JACK server from the
    # environment at initialisation, which this test process has already done.
    rec = Recorder(jack_server, name="rec-audio")
    try:
        code = textwrap.dedent(
            """
            import sys, time, numpy as np
            from daemon.adapters.audio_output import AudioOutput
            w = 2 * np.pi * 440.0 / 48000
            state = [0]
            def sine(n, out):
                out[:] = 0.5 * np.sin(w * (state[0] + np.arange(n)))
                state[0] += n
                return out
            out = AudioOutput(sine, fade_s=0.01)
            out.start()
            print("started", out.device["hostapi"], flush=True)
            sys.stdin.readline()
            out.fade_out(); out.wait_faded_out(1.0)
            print("closed", out.close(2.0), out.counters.callbacks, out.counters.nonfinite, flush=True)
            """
        )
        proc = subprocess.Popen([sys.executable, "-c", code], env=jack_server.env, text=True,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert proc.stdout.readline().startswith("started JACK")
        ports = rec.connect_from("CANNe-audio")  # named after the instrument, not "PortAudio"
        assert ports == ["CANNe-audio:out_0", "CANNe-audio:out_1"]
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
    assert words[0] == "closed" and words[1] == "True" and int(words[2]) > 10 and words[3] == "0"
    assert np.all(np.isfinite(y)) and np.max(np.abs(y)) <= 1.0
    seg = y[RATE // 4: RATE // 4 + RATE // 2, 0]
    assert abs(cents(fundamental_hz_median(seg, RATE, 300, 600), 440.0)) < 5
    assert dbfs(seg) == pytest.approx(dbfs(0.5 * np.sin(np.arange(RATE) * 0.1)), abs=0.5)
