"""End-to-end: `canne effect` on a JACK dummy server: a signal played into its input port,
its output recorded; level, latency, and a CC moving a gain.

Real parts: ``jackd -d dummy`` (48 kHz, 256-frame periods), the daemon as a subprocess
(supervisor + effect child, PortAudio's JACK client ``CANNe-audio`` with an input), a
JACK-Client player and recorder, python-rtmidi's JACK MIDI for the knob, and the
identity-like ANNe model of ``test_effect.py`` (its latent is the frame itself, so the
output is the input, delayed, with each knob group's bins scaled by its gain).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from jack_util import Daemon, MidiSender, Recorder, dbfs, jack_server_env, wait_for
from test_effect import N_FFT, HOP, build_identity_model

pytestmark = pytest.mark.jack

RATE = 48000
PERIOD = 256
REPO = Path(__file__).resolve().parent.parent
CTL = "canne-fx-ctl"
CLIENT = "CANNe-audio"

MAPPING = """\
version: 1
name: effect e2e
takeover: jump
effect:
  split: even
  gains: [1, 1, 1, 1, 1]
controls:
  - {cc: 21, param: effect_gain_3, range: [0.5, 5.5]}
"""


class Player:
    """A JACK client that loops a signal out of its port ``out`` (one copy per cycle)."""

    def __init__(self, server, signal: np.ndarray):
        import jack

        self.client = jack.Client("fx-player", no_start_server=True, servername=server.name)
        self.port = self.client.outports.register("out")
        self.signal = signal.astype(np.float32)
        self.pos = 0
        self.client.set_process_callback(self._process)
        self.client.activate()

    def _process(self, frames):
        buf = self.port.get_array()
        n = len(self.signal)
        i = self.pos % n
        k = min(frames, n - i)
        buf[:k] = self.signal[i:i + k]
        if k < frames:
            buf[k:] = self.signal[:frames - k]
        self.pos += frames

    def close(self):
        client, self.client = self.client, None
        if client is not None:
            try:
                client.deactivate()
                client.close()
            except Exception:
                pass


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fx")
    model = build_identity_model(tmp / "model")
    mapping = tmp / "fx.yaml"
    mapping.write_text(MAPPING)
    t = np.arange(RATE) / RATE  # one second, looped: 1 kHz (gain group 1) + 12 kHz (group 3)
    sig = 0.1 * np.sin(2 * np.pi * 1000 * t) + 0.05 * np.sin(2 * np.pi * 12000 * t)
    sig[RATE // 2] += 0.45  # a one-sample spike once a second: latency
    with jack_server_env("canne-fx", tmp_path_factory.mktemp("jack")) as server:
        rec = Recorder(server, name="fx-rec")
        player = Player(server, sig)
        sender = MidiSender(CTL)
        daemon = Daemon(["effect", "--model", str(model), "--mapping", str(mapping), "--midi-in", CTL,
                         "--no-virtual"], env=server.env, cwd=REPO)
        try:
            daemon.wait_log("audio:", timeout=60)
            wait_for(lambda: rec.client.get_ports(name_pattern=f"^{CLIENT}.*in", is_input=True,
                                                  is_audio=True), 30, 0.1, "the effect's input port")
            dst = rec.client.get_ports(name_pattern=f"^{CLIENT}.*in", is_input=True, is_audio=True)[0]
            rec.client.connect(player.port.name, dst.name)
            src = rec.client.get_ports(name_pattern=f"^{CLIENT}", is_output=True, is_audio=True)[0]
            rec.client.connect(src.name, rec.ports[0].name)
            rec.client.connect(player.port.name, rec.ports[1].name)  # the dry signal beside it
            rec.wait_frames(RATE, timeout=20)  # settle: fade-in, analysis window filled
            yield {"rec": rec, "sender": sender, "daemon": daemon, "sig": sig}
        finally:
            daemon.kill()
            sender.close()
            player.close()
            rec.close()


def _record(rig, seconds):
    rec = rig["rec"]
    mark = rec.mark()
    rec.wait_frames(int(seconds * RATE), timeout=10 + 4 * seconds)
    y = rec.since(mark)
    assert np.all(np.isfinite(y)) and np.max(np.abs(y)) <= 1.0
    return y[:, 0].astype(np.float64), y[:, 1].astype(np.float64)


def _band_db(y, f):
    """Energy within +-300 Hz of ``f`` (dB): robust to a phase jump from a late cycle."""
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y)))) ** 2
    hz = np.fft.rfftfreq(len(y), 1 / RATE)
    return 10 * np.log10(spec[np.abs(hz - f) < 300].sum())


def test_effect_output_level_and_latency(rig):
    wet, dry = _record(rig, 2.0)
    # identity model at unity gains: the output is the input (same level within 1 dB)
    assert abs(dbfs(wet) - dbfs(dry)) < 1.0
    # latency: the spike's position in the output against the input (a one-sample spike,
    # told apart from a step, e.g. a late cycle on a loaded machine)
    def spikes(y):
        s = y[1:-1] - 0.5 * (y[:-2] + y[2:])
        return np.nonzero(s > 0.3)[0] + 1

    ins = spikes(dry)
    assert len(ins)
    i = int(ins[0])
    outs = [j for j in spikes(wet) if i <= j < i + RATE // 2]
    assert outs, "the spike did not come through"
    lag = outs[0] - i
    # the analysis window (n_fft at the stream rate) plus at most a block and a hop
    assert N_FFT - 2 <= lag <= N_FFT + PERIOD + HOP, lag


def test_a_cc_moving_a_gain_changes_its_band_only(rig):
    wet0, _ = _record(rig, 0.5)
    rig["sender"].cc(21, 127)  # gain of group 3 (the 12 kHz tone's bins): 5.5
    rig["rec"].wait_frames(RATE // 2, timeout=20)
    wet1, _ = _record(rig, 0.5)
    rig["sender"].cc(21, 12)   # back near 1
    up = _band_db(wet1, 12000) - _band_db(wet0, 12000)
    assert 12.0 < up < 17.0, up  # x5.5 = +14.8 dB
    assert abs(_band_db(wet1, 1000) - _band_db(wet0, 1000)) < 1.0
