"""A MIDI controller unplugged and plugged back while a note plays (JACK dummy server).

python-rtmidi opens a JACK client holding the GIL while the server waits for the audio
callback, which needs the GIL: opening a client for the returning controller used to stall
the control loop until the supervisor killed the instrument (silence, state lost). With the
JACK API sources are now connected to one input opened at start-up."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from jack_util import Daemon, MidiSender, Recorder, dbfs, jack_server_env

REPO = Path(__file__).resolve().parent.parent
RATE = 48000
pytestmark = pytest.mark.jack


class _Plugged:
    """The controller that comes and goes: an rtmidi JACK port 'plug-src:out' owned by a
    process of its own, as a device is. (Created in this process, its rtmidi client would
    be opened holding the GIL while this process's recorder, a Python JACK callback, is
    active: the rig itself would stall the JACK graph.)"""

    def __init__(self):
        code = ("import sys, rtmidi; m = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, name='plug-src'); "
                "m.open_virtual_port('out'); print('up', flush=True); sys.stdin.read()")
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "up"

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def test_held_note_keeps_sounding_while_another_controller_is_replugged(tmp_path):
    model_dir = REPO / "models" / "default"  # the shipped instrument (the tiny test decoder
    # renders too little per callback to meet the stall)
    with jack_server_env("canne-replug", tmp_path) as server:
        held = MidiSender("held-src")  # rtmidi port before this process's recorder
        plug = _Plugged()
        rec = Recorder(server, name="replug-rec")
        daemon = Daemon(["run", "--model", str(model_dir), "--mapping", "", "--midi-in", "held-src",
                         "--midi-in", "plug-src", "--no-virtual", "--render-ahead", "0"],
                        env=server.env, cwd=REPO)
        try:
            daemon.wait_log("audio:", timeout=60)
            rec.connect_from(timeout=20)
            time.sleep(1.0)
            held.note_on(60, 100)
            time.sleep(1.0)
            mark = rec.mark()
            n_lines = len(daemon.lines)
            for _ in range(4):  # unplugged for 1.5 s, back for 1.5 s
                plug.close()
                time.sleep(1.5)
                plug = _Plugged()
                time.sleep(1.5)
            time.sleep(0.5)
            y = rec.since(mark)[:, 0]
            log = "\n".join(daemon.lines[n_lines:])
            assert "exited with code" not in log, log  # never restarted
            assert log.count("'plug-src:out' connected") >= 2, log  # and it did come back
            n = len(daemon.lines)
            plug.close()  # and the port watcher still follows the ports after all that
            daemon.wait_log("disappeared", timeout=10, start=n)
        finally:
            daemon.kill()
            rec.close()
            held.close()
            plug.close()
    assert len(y) > 2 * RATE
    win = RATE // 20
    levels = [dbfs(y[k:k + win]) for k in range(0, len(y) - win, win)]
    # the held note all along: no 50 ms window drops 6 dB below the median level
    assert min(levels) > float(np.median(levels)) - 6.0, (min(levels), float(np.median(levels)))
