"""End-to-end: `canne run` on a JACK dummy server, played through a JACK MIDI port, recorded.

Real parts only: ``jackd -d dummy`` (48 kHz, 256-frame periods), the daemon as a
subprocess (supervisor + instrument child, PortAudio's JACK client), python-rtmidi's
JACK API for the controller, a JACK-Client recorder, the harmonic test decoder
(44.1 kHz model played at 48 kHz: harmonics of the reference note C4 whose levels
the latent sets) and a YAML mapping written per test session.

The tests run in file order on one server and one daemon (module fixtures); the
server-restart test comes last but one, SIGTERM last. Every wait polls with a
generous deadline; assertions are on the recorded audio in physical units.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from jack_util import (
    Daemon, MidiSender, Recorder, cents, dbfs, fundamental_hz, jack_server_env, wait_for,
)

pytestmark = pytest.mark.jack

RATE = 48000
REPO = Path(__file__).resolve().parent.parent
CTL = "canne-e2e-ctl"

MAPPING = """\
version: 1
name: e2e test mapping
channel: all
takeover: jump
initial_latent: default
notes:
  pitch_mode: transpose
  reference_note: model
  polyphony: 8
controls:
  - {{cc: 21, neuron: 1, range: [-4, 4]}}
  - {{cc: 7, param: gain, range: [-60, 0]}}
{extra}"""


def _midi_hz(note: float) -> float:
    return 440.0 * 2.0 ** ((note - 69) / 12)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with jack_server_env("canne-e2e", tmp_path_factory.mktemp("jack")) as srv:
        yield srv


class Rig:
    """Server + recorder + MIDI port + daemon, re-creatable after a server restart."""

    def __init__(self, server, model_dir: Path, mapping: Path):
        self.server = server
        self.mapping = mapping
        self.recorder = Recorder(server, name="e2e-rec")  # before the stream under test
        self.sender = MidiSender(CTL)
        self.daemon = Daemon(
            # --render-ahead 0: `auto` switches once when this machine's load says so, a
            # one-time declicked gap that pitch and dropout checks must not depend on (the
            # switch itself: tests/test_audio_render_ahead.py)
            ["run", "--model", str(model_dir), "--mapping", str(mapping), "--midi-in", CTL, "--status",
             "--render-ahead", "0"],
            env=server.env, cwd=REPO,
        )
        self.daemon.wait_log("audio:", timeout=60)
        self.recorder.connect_from("PortAudio", timeout=30)

    def reopen_clients(self):
        """After a server restart: new MIDI port and recorder on the new server. The rtmidi
        port first: python-rtmidi opens its JACK client holding the GIL, and with this
        process's recorder (a Python JACK callback) already active the server would wait
        seconds for that callback."""
        self.sender = MidiSender(CTL)
        self.recorder = Recorder(self.server, name="e2e-rec")

    def record(self, seconds: float) -> np.ndarray:
        mark = self.recorder.mark()
        self.recorder.wait_frames(int(seconds * RATE), timeout=10 + 4 * seconds)
        y = self.recorder.since(mark)[:, 0]
        assert np.all(np.isfinite(y)), "recorded NaN/Inf"
        assert np.max(np.abs(y)) <= 1.0
        return y

    def settle(self, seconds: float) -> None:
        self.recorder.wait_frames(int(seconds * RATE), timeout=10 + 4 * seconds)

    def assert_a4_sounds(self, settle: float) -> None:
        """Play A4 for ``settle`` + 0.4 s: it must be audible (> −40 dBFS) within ±10 cents."""
        f = _midi_hz(69)
        self.sender.note_on(69, 100)
        self.settle(settle)
        y = self.record(0.4)
        self.sender.note_off(69)
        self.settle(1.0)
        assert dbfs(y) > -40
        assert abs(cents(fundamental_hz(y, RATE, f / 1.3, f * 1.3), f)) < 10


@pytest.fixture(scope="module")
def rig(server, model_dir, tmp_path_factory):
    mapping = tmp_path_factory.mktemp("mapping") / "e2e.yaml"
    mapping.write_text(MAPPING.format(extra=""))
    r = Rig(server, model_dir, mapping)
    yield r
    r.daemon.kill()
    r.recorder.close()
    r.sender.close()


def _harmonic_levels(y: np.ndarray, f0: float, n: int = 6) -> np.ndarray:
    """Level (dB) of harmonics 1..n of f0, from a Hann-windowed FFT of the whole segment."""
    y = y - y.mean()
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    freqs = np.fft.rfftfreq(len(y), 1 / RATE)
    out = []
    for h in range(1, n + 1):
        band = np.abs(freqs - h * f0) < 0.03 * f0
        out.append(20 * np.log10(spec[band].max() + 1e-12))
    return np.array(out)


# -- tests, in playing order ------------------------------------------------------------------
def test_silent_until_played(rig):
    y = rig.record(0.3)
    assert dbfs(y) < -90


@pytest.mark.parametrize("note", [pytest.param(57, id="A3"), pytest.param(69, id="A4"),
                                  pytest.param(76, id="E5")])
def test_note_on_sounds_at_pitch_and_note_off_returns_to_silence(rig, note):
    f = _midi_hz(note)
    rig.sender.note_on(note, 100)
    rig.settle(0.4)
    held = rig.record(0.5)
    rig.sender.note_off(note)
    rig.settle(1.0)  # release
    after = rig.record(0.3)
    assert dbfs(held) > -40, f"note {note} too quiet: {dbfs(held):.1f} dBFS"
    assert abs(cents(fundamental_hz(held, RATE, f / 1.3, f * 1.3), f)) < 10
    assert dbfs(after) < -70, f"not silent after note-off: {dbfs(after):.1f} dBFS"


def test_cc_sweep_changes_the_spectrum(rig):
    f0 = _midi_hz(60)
    rig.sender.cc(21, 0)
    rig.sender.note_on(60, 100)
    rig.settle(0.5)
    low = rig.record(0.5)
    for v in range(0, 128):  # a sweep at ~1 kHz: the control path must keep up
        rig.sender.cc(21, v)
        time.sleep(0.001)
    rig.settle(0.5)
    high = rig.record(0.5)
    rig.sender.note_off(60)
    rig.settle(1.0)
    lv_low, lv_high = _harmonic_levels(low, f0), _harmonic_levels(high, f0)
    # CC 21 drives neuron 1 = harmonic 3 (relative to the fundamental, which it does not drive).
    rise = (lv_high[2] - lv_high[0]) - (lv_low[2] - lv_low[0])
    assert rise > 20, f"harmonic 3 rose only {rise:.1f} dB"
    assert abs(cents(fundamental_hz(high, RATE, f0 / 1.3, f0 * 1.3), f0)) < 10


def test_mapping_edit_applies_live(rig):
    f0 = _midi_hz(60)
    rig.sender.note_on(60, 100)
    rig.settle(0.5)
    before = rig.record(0.4)
    n_lines = len(rig.daemon.lines)
    # Neuron 2 drives harmonic 4: start it high from the file alone, no MIDI.
    rig.mapping.write_text(MAPPING.format(extra="").replace("initial_latent: default",
                                                            "initial_latent: {2: 5.0}"))
    rig.daemon.wait_log("mapping reloaded", timeout=10, start=n_lines)
    rig.settle(0.3)
    after = rig.record(0.4)
    # An invalid edit is refused and the sound stays.
    n_lines = len(rig.daemon.lines)
    rig.mapping.write_text(MAPPING.format(extra="  - {cc: 22, neuron: 99}\n"))
    rig.daemon.wait_log("refused", timeout=10, start=n_lines)
    rig.settle(0.3)
    still = rig.record(0.4)
    rig.sender.note_off(60)
    rig.settle(1.0)
    h_before, h_after, h_still = (_harmonic_levels(x, f0) for x in (before, after, still))
    rise = (h_after[3] - h_after[0]) - (h_before[3] - h_before[0])
    assert rise > 10, f"harmonic 4 rose only {rise:.1f} dB after the edit"
    assert abs((h_still[3] - h_still[0]) - (h_after[3] - h_after[0])) < 3
    assert dbfs(still) > -40
    rig.mapping.write_text(MAPPING.format(extra=""))
    rig.daemon.wait_log("mapping reloaded", timeout=10, start=n_lines)


def test_midi_flood_does_not_stall_audio(rig):
    rig.sender.note_on(64, 100)
    rig.settle(0.5)
    steady = dbfs(rig.record(0.3))
    mark = rig.recorder.mark()
    t_end = time.monotonic() + 1.5
    i = 0
    while time.monotonic() < t_end:
        rig.sender.cc(1, i % 128)  # mod wheel (unmapped here) at ~1 kHz
        rig.sender.send(0xF8)  # clock
        rig.sender.send(0xFE)  # active sensing
        if i % 50 == 0:
            rig.sender.send(0xF0, 0x7E, 0x7F, 0x06, 0x01, 0xF7)  # sysex identity request
            rig.sender.send(0x90, 200 & 0x7F, 0)  # note-off of a note never played
        i += 1
        time.sleep(0.001)
    y = rig.recorder.since(mark)[:, 0]
    rig.sender.note_off(64)
    rig.settle(1.0)
    assert np.all(np.isfinite(y)) and np.max(np.abs(y)) <= 1.0
    win = RATE // 20
    levels = [dbfs(y[k:k + win]) for k in range(0, len(y) - win, win)]
    assert min(levels) > steady - 3, f"audio dropped under the flood: {min(levels):.1f} vs {steady:.1f} dBFS"


def test_midi_port_unplugged_and_back_is_reconnected(rig):
    n_lines = len(rig.daemon.lines)  # before the close: the log line may come at once
    rig.sender.close()
    rig.daemon.wait_log("disappeared", timeout=10, start=n_lines)
    rig.sender = MidiSender(CTL)
    rig.daemon.wait_log("connected", timeout=10, start=n_lines)
    rig.assert_a4_sounds(settle=0.4)


def test_sighup_reloads_the_mapping(rig):
    import signal

    n_lines = len(rig.daemon.lines)
    rig.daemon.proc.send_signal(signal.SIGHUP)  # the supervisor forwards it to the instrument
    rig.daemon.wait_log("mapping reloaded", timeout=10, start=n_lines)
    assert rig.daemon.proc.poll() is None


def test_status_line_reports_voices_xruns_and_latents(rig):
    lines = [ln for ln in rig.daemon.lines if ln.startswith("voices ")]
    assert lines, "no status line printed with --status"
    last = lines[-1]
    for field in ("cpu", "xruns", "underruns", "z "):
        assert field in last


def test_jack_server_killed_and_restarted_gets_sound_back(rig):
    rig.recorder.close()
    rig.sender.close()
    n_lines = len(rig.daemon.lines)
    rig.server.kill()
    # seen by the stream's state (PortAudio's shutdown callback), not the slower watchdog
    rig.daemon.wait_log("audio stream lost", timeout=20, start=n_lines)
    rig.daemon.wait_log("exited with code 75", timeout=20, start=n_lines)
    # the new child waits in-process for the server instead of exiting again
    rig.daemon.wait_log("waiting for it", timeout=20, start=n_lines)
    time.sleep(1.0)  # the server is away for a while
    rig.server.start()
    rig.reopen_clients()
    rig.daemon.wait_log("audio:", timeout=60, start=n_lines)
    exits = [ln for ln in rig.daemon.lines[n_lines:] if "exited with code" in ln]
    assert len(exits) == 1 and "code 75" in exits[0], rig.daemon.log  # one restart, no retries
    rig.recorder.connect_from("PortAudio", timeout=30)
    wait_for(lambda: any(CTL in ln and ("open" in ln or "connected" in ln)
                         for ln in rig.daemon.lines[n_lines:]), 10, 0.1,
             "the MIDI port to be opened by the new instrument")
    rig.assert_a4_sounds(settle=0.5)
    assert rig.daemon.proc.poll() is None, "the supervisor must survive the server's death"


def test_sigterm_fades_out_and_exits_0_within_3_s(rig):
    rig.sender.note_on(69, 100)
    rig.settle(0.5)
    mark = rig.recorder.mark()
    code, seconds = rig.daemon.terminate(timeout=3.0)
    rig.settle(0.2)
    tail = rig.recorder.since(mark)[:, 0]
    assert code == 0, rig.daemon.log[-2000:]
    assert seconds < 3.0  # the bound; terminate() waited at most 3 s
    assert np.all(np.isfinite(tail)) and np.max(np.abs(tail)) <= 1.0
    # Faded, not cut: no sample-to-sample step larger than the tone's own slope allows.
    steps = np.abs(np.diff(tail))
    assert steps.max() < 2 * np.pi * 4 * 440 / RATE + 0.05
