"""Supervisor: watchdog kill + restart, restart delay, exit 2, signal forwarding, parent death.

The supervised child is a scripted process that speaks the real channel through
``daemon.app.supervisor.ChildLink`` (heartbeat lines on its stdout, commands and
end-of-file on its stdin) and behaves per start as a plan says, so each
recovery path runs for real (processes, pipes, signals) without audio hardware.

Every test runs twice: on POSIX as shipped, and on a simulated non-POSIX
platform where the supervisor may not use ``select``, ``pass_fds`` or signals
other than a kill (as on Windows): stop goes to the child as a line on its stdin.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from jack_util import wait_for

REPO = Path(__file__).resolve().parent.parent

CHILD = textwrap.dedent(
    """
    import os, signal, sys, time
    from daemon.app.supervisor import ChildLink
    assert sys.argv[1] == "--child", sys.argv
    state = sys.argv[-1]
    plan = sys.argv[-2].split(",")
    after_sound = os.environ.get("CANNE_RESTART_AFTER_SOUND") == "1"
    with open(state, "a") as f:
        f.write("start %d %d\\n" % (os.getpid(), after_sound))
    n = sum(1 for line in open(state) if line.startswith("start")) - 1
    mode = plan[min(n, len(plan) - 1)]
    print("a stray line before the channel is set up", flush=True)  # must be ignored
    link = ChildLink.from_stdio()
    print("a stray print after: goes to stderr", flush=True)
    stop = []
    def note(what):
        with open(state, "a") as f:
            f.write(what + "\\n")
    if mode in ("deaf", "stuck"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        on_stop = lambda: None
    else:
        signal.signal(signal.SIGTERM, lambda *a: stop.append("signal"))
        on_stop = lambda: stop.append("line")
    link.start_watcher(on_stop=on_stop, on_reload=lambda: note("reload"),
                       on_gone=lambda: note("supervisor-gone"), grace_s=0.5)
    if mode == "config":
        sys.exit(2)
    if mode == "device":  # the real instrument: no device is temporary only after sound
        sys.exit(75 if after_sound else 2)
    if mode == "crash0":  # dies before it is ready (a native crash at start-up)
        sys.exit(1)
    link.send(b"R 0 0 0\\n")
    if mode == "stuck":  # main thread blocked in a C call (as in PortAudio), deaf to everything
        time.sleep(600)
    crash_after = float(mode.split("@")[1]) if mode.startswith("crash@") else 0.5
    cb = 0
    t0 = time.monotonic()
    while not stop:
        time.sleep(0.05)
        if mode == "stall" and time.monotonic() - t0 > 0.5:
            continue  # callbacks stopped: no more heartbeats with progress
        if mode.startswith("crash") and time.monotonic() - t0 > crash_after:
            sys.exit(1)
        cb += 10
        link.send(b"H %d 0 0\\n" % cb)
    note("clean-exit " + stop[0])
    sys.exit(0)
    """
)

SUPERVISE = textwrap.dedent(
    """
    import logging, signal, subprocess, sys
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    child, plan, state, platform, max_backoff, healthy_reset = sys.argv[1:7]
    import daemon.app.supervisor as sv
    if platform == "nonposix":
        import select
        def banned(*a, **k):
            raise AssertionError("POSIX-only mechanism used")
        for name in ("select", "poll", "epoll"):
            if hasattr(select, name):
                setattr(select, name, banned)
        popen_init, send_signal = subprocess.Popen.__init__, subprocess.Popen.send_signal
        def init(self, *a, **k):
            if k.get("pass_fds"):
                raise AssertionError("pass_fds used")
            popen_init(self, *a, **k)
        def send(self, sig):  # Windows has no signals to send; kill() (TerminateProcess) stays
            if sig != signal.SIGKILL:
                raise AssertionError("signal %s sent to the child" % sig)
            send_signal(self, sig)
        subprocess.Popen.__init__, subprocess.Popen.send_signal = init, send
        sv.POSIX = False
    sup = sv.Supervisor([plan, state], watchdog_s=0.5, startup_timeout_s=10,
                        max_backoff_s=float(max_backoff), healthy_reset_s=float(healthy_reset),
                        stop_timeout_s=1.0, command=[sys.executable, child])
    sys.exit(sup.run())
    """
)
WATCHDOG_S = 0.5  # the supervisor's watchdog_s in SUPERVISE

PLATFORMS = [pytest.param("posix", id="posix"), pytest.param("nonposix", id="simulated-nonposix")]


def _start(tmp_path: Path, plan: str, platform: str, *, max_backoff: float = 1.0,
           healthy_reset: float = 3.0) -> tuple[subprocess.Popen, Path]:
    child = tmp_path / "child.py"
    child.write_text(CHILD)
    state = tmp_path / "state.txt"
    state.write_text("")
    proc = subprocess.Popen(
        [sys.executable, "-c", SUPERVISE, str(child), plan, str(state), platform, str(max_backoff),
         str(healthy_reset)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
    )
    return proc, state


def _starts(state: Path) -> list[tuple[int, bool]]:
    out = []
    for line in state.read_text().splitlines():
        if line.startswith("start "):
            _, pid, after = line.split()
            out.append((int(pid), after == "1"))
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")  # a zombie (exited, not yet reaped) counts as gone
    return not (stat.exists() and stat.read_text().split(")")[1].split()[0] == "Z")


@pytest.fixture
def run_supervisor(tmp_path):
    procs = []

    def start(*args, **kwargs):
        proc, state = _start(tmp_path, *args, **kwargs)
        procs.append((proc, state))
        return proc, state

    yield start
    for proc, state in procs:  # a failing test leaves no supervisor or child behind
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        for pid, _ in _starts(state):
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def _no_further_start(state: Path, n: int, *, max_backoff: float = 1.0) -> None:
    """Fail as soon as a child start beyond ``n`` appears, watching for as long as a
    wrongful restart of a healthy child would take to show: the watchdog's silence,
    the longest restart delay and a child's start-up (generous: a shared machine)."""
    window = WATCHDOG_S + max_backoff + 3.0
    end = time.monotonic() + window
    while time.monotonic() < end:
        starts = len(_starts(state))
        assert starts == n, f"{starts} child starts, expected {n}: the healthy child was restarted"
        time.sleep(0.05)


def _stop(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=15)
    return out


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize(
    "plan, expected_starts",
    [
        pytest.param("stall,ok", 2, id="stalled-callbacks-killed-and-restarted"),
        pytest.param("crash,device,ok", 3, id="crash-then-device-missing-retried-after-first-sound"),
    ],
)
def test_restarts_until_sound_then_stop_exits_0(run_supervisor, platform, plan, expected_starts):
    proc, state = run_supervisor(plan, platform)
    wait_for(lambda: len(_starts(state)) >= expected_starts, 30, 0.05, f"{expected_starts} child starts")
    _no_further_start(state, expected_starts)  # the last child is healthy: no further restart
    out = _stop(proc)
    assert proc.returncode == 0, out
    how = "signal" if platform == "posix" else "line"
    assert state.read_text().endswith(f"clean-exit {how}\n"), "the stop was not forwarded to the child"
    # Only restarts after sound are told so (a missing device is then temporary).
    assert [after for _, after in _starts(state)] == [False] + [True] * (expected_starts - 1)
    assert "a stray print after" in out and "Traceback" not in out
    if plan.startswith("stall"):
        assert "watchdog" in out


@pytest.mark.parametrize("platform", PLATFORMS)
def test_config_error_on_first_start_exits_2_without_retry(run_supervisor, platform):
    proc, state = run_supervisor("config,ok", platform)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 2, out
    assert len(_starts(state)) == 1
    assert "restart" not in out  # nothing printed after the child's own error line


@pytest.mark.parametrize("platform", PLATFORMS)
def test_config_error_after_sound_is_not_restarted_either(run_supervisor, platform):
    proc, state = run_supervisor("crash,config,ok", platform)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 2, out
    assert len(_starts(state)) == 2
    assert "not restarting" in out


@pytest.mark.parametrize("platform", PLATFORMS)
def test_failing_starts_before_any_sound_give_up(run_supervisor, platform):
    proc, state = run_supervisor("crash0", platform, max_backoff=0.5)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 1, out
    assert len(_starts(state)) == 3
    assert "failed to start 3 times" in out


def _delays(out: str) -> list[float]:
    return [float(x) for x in re.findall(r"restart \d+ in ([\d.]+) s", out)]


@pytest.mark.parametrize("platform", PLATFORMS)
def test_restart_delay_stays_short_when_crashes_are_seconds_apart(run_supervisor, platform):
    """Each child plays 1.5 s (more than healthy_reset_s = 1 s) and crashes: every delay is the minimum."""
    proc, state = run_supervisor("crash@1.5,crash@1.5,crash@1.5,ok", platform, max_backoff=8.0,
                                 healthy_reset=1.0)
    wait_for(lambda: len(_starts(state)) >= 4, 40, 0.05, "4 child starts")
    out = _stop(proc)
    assert proc.returncode == 0, out
    assert _delays(out) == [0.1, 0.1, 0.1], out


@pytest.mark.parametrize("platform", PLATFORMS)
def test_restart_delay_doubles_for_a_crash_loop(run_supervisor, platform):
    proc, state = run_supervisor("crash@0.3,crash@0.3,crash@0.3,ok", platform, max_backoff=8.0,
                                 healthy_reset=1.0)
    wait_for(lambda: len(_starts(state)) >= 4, 40, 0.05, "4 child starts")
    out = _stop(proc)
    assert proc.returncode == 0, out
    assert _delays(out) == [0.1, 0.2, 0.4], out


@pytest.mark.parametrize("platform", PLATFORMS)
def test_lost_audio_server_restarts_at_once_and_does_not_grow_the_delay(run_supervisor, platform):
    """Exit 75 (the audio server went away, or is not back yet) after short runs: the delay
    stays at its minimum, where crashes after short runs double it."""
    proc, state = run_supervisor("crash@0.3,device,device,device,ok", platform, max_backoff=8.0,
                                 healthy_reset=5.0)
    wait_for(lambda: len(_starts(state)) >= 5, 40, 0.05, "5 child starts")
    out = _stop(proc)
    assert proc.returncode == 0, out
    assert _delays(out) == [0.1, 0.1, 0.1, 0.1], out


@pytest.mark.parametrize("platform", PLATFORMS)
def test_child_ignoring_stop_is_killed_and_supervisor_exits_0(run_supervisor, platform):
    proc, state = run_supervisor("deaf", platform)
    wait_for(lambda: len(_starts(state)) >= 1, 20, 0.05, "child start")
    time.sleep(0.3)
    out = _stop(proc)
    assert proc.returncode == 0, out
    assert "did not stop" in out  # the stuck child was killed after stop_timeout_s
    assert not _alive(_starts(state)[0][0])


@pytest.mark.parametrize("platform", PLATFORMS)
def test_child_exits_by_itself_when_the_supervisor_dies(run_supervisor, platform):
    """SIGKILL the supervisor while the child's main thread is stuck in a blocking call and
    deaf to SIGTERM: the child's watcher sees its stdin close and ends the process."""
    proc, state = run_supervisor("stuck", platform)
    wait_for(lambda: _starts(state), 20, 0.05, "child start")
    pid = _starts(state)[0][0]
    time.sleep(0.5)
    assert _alive(pid)
    proc.kill()
    proc.wait(10)
    wait_for(lambda: not _alive(pid), 10, 0.05, "the orphaned child to exit")
    assert "supervisor-gone" in state.read_text()
