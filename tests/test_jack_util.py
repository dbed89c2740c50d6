"""The test helpers themselves: safe to close twice, and no process left behind."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import jack_util
from jack_util import MidiSender, jack_server_env, wait_for

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with jack_server_env("canne-util", tmp_path_factory.mktemp("jack")) as srv:
        yield srv


@pytest.mark.jack
def test_midi_sender_and_recorder_close_twice(server):
    """A failing test closes its sender and the fixture closes it again: no crash."""
    code = textwrap.dedent(
        """
        import sys
        sys.path.insert(0, sys.argv[1])
        from jack_util import JackServer, MidiSender, Recorder
        s = MidiSender("canne-twice")
        s.cc(1, 2)
        s.close()
        s.close()
        assert s.closed
        r = Recorder(JackServer(sys.argv[2]), name="rec-twice")
        r.close()
        r.close()
        print("ok")
        """
    )
    r = subprocess.run([sys.executable, "-c", code, str(HERE), server.name], env=server.env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "ok", (r.returncode, r.stderr[-2000:])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")")[1].split()[0] == "Z")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_helper_processes_die_with_a_crashed_test_process(tmp_path):
    """A test process that segfaults mid-run (no teardown, no atexit) leaves no helper behind."""
    code = textwrap.dedent(
        """
        import ctypes, sys
        sys.path.insert(0, sys.argv[1])
        import jack_util
        p = jack_util.spawn([sys.executable, "-c", "import time; time.sleep(600)"])
        print(p.pid, flush=True)
        ctypes.string_at(0)  # segfault
        """
    )
    r = subprocess.run([sys.executable, "-c", code, str(HERE)], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    pid = int(r.stdout.split()[0])
    wait_for(lambda: not _alive(pid), 10, 0.05, "the helper to die with its parent")


def test_kill_all_ends_registered_processes():
    """In a process of its own: kill_all() SIGKILLs *every* registered helper, and in this
    process that would include the module's JACK server (a SIGKILLed jackd leaves its entry
    in JACK's server registry, and after a few such runs new servers are refused)."""
    code = textwrap.dedent(
        """
        import sys, time
        sys.path.insert(0, sys.argv[1])
        import jack_util
        p = jack_util.spawn([sys.executable, "-c", "import time; time.sleep(600)"])
        assert p.poll() is None
        assert p.pid in jack_util.kill_all()
        assert p.poll() is not None
        time.sleep(0.05)
        assert jack_util.kill_all() == []
        print("ok")
        """
    )
    r = subprocess.run([sys.executable, "-c", code, str(HERE)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]
