"""Supervisor: watchdog kill + restart, backoff, config errors, signal forwarding.

The supervised child is a scripted process that speaks the heartbeat protocol
(``R``/``H <callbacks> ...`` lines on the inherited pipe) and behaves per start
as a plan says, so each recovery path runs for real (processes, pipes,
signals) without audio hardware.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from jack_util import wait_for

CHILD = textwrap.dedent(
    """
    import os, signal, sys, time
    fd = int(sys.argv[sys.argv.index("--child-heartbeat-fd") + 1])
    state = sys.argv[-1]
    plan = sys.argv[-2].split(",")
    with open(state, "a") as f:
        f.write("start\\n")
    n = sum(1 for _ in open(state)) - 1
    mode = plan[min(n, len(plan) - 1)]
    stop = []
    if mode != "deaf":
        signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    else:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if mode == "config":
        sys.exit(2)
    os.write(fd, b"R 0 0 0\\n")
    cb = 0
    t0 = time.monotonic()
    while not stop:
        time.sleep(0.1)
        if mode == "stall" and time.monotonic() - t0 > 0.5:
            continue  # callbacks stopped: no more heartbeats with progress
        if mode == "crash" and time.monotonic() - t0 > 0.5:
            sys.exit(1)
        cb += 10
        os.write(fd, b"H %d 0 0\\n" % cb)
    with open(state, "a") as f:
        f.write("clean-exit\\n")
    sys.exit(0)
    """
)

SUPERVISE = textwrap.dedent(
    """
    import logging, sys
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    from daemon.supervisor import Supervisor
    child, plan, state = sys.argv[1:4]
    sup = Supervisor([plan, state], watchdog_s=0.5, startup_timeout_s=10, max_backoff_s=1.0,
                     stop_timeout_s=1.0, command=[sys.executable, child])
    sys.exit(sup.run())
    """
)


def _start(tmp_path: Path, plan: str) -> tuple[subprocess.Popen, Path]:
    child = tmp_path / "child.py"
    child.write_text(CHILD)
    state = tmp_path / "state.txt"
    state.write_text("")
    proc = subprocess.Popen(
        [sys.executable, "-c", SUPERVISE, str(child), plan, str(state)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    return proc, state


def _starts(state: Path) -> int:
    return state.read_text().count("start\n")


@pytest.mark.parametrize(
    "plan, expected_starts",
    [
        pytest.param("stall,ok", 2, id="stalled-callbacks-killed-and-restarted"),
        pytest.param("crash,config,ok", 3, id="crash-then-device-missing-retried-after-first-sound"),
    ],
)
def test_restarts_until_sound_then_sigterm_exits_0(tmp_path, plan, expected_starts):
    proc, state = _start(tmp_path, plan)
    try:
        wait_for(lambda: _starts(state) >= expected_starts, 30, 0.05, f"{expected_starts} child starts")
        time.sleep(0.5)  # the last child is healthy: no further restart
        assert _starts(state) == expected_starts
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert state.read_text().endswith("clean-exit\n"), "SIGTERM was not forwarded to the child"
    if plan.startswith("stall"):
        assert "watchdog" in out


def test_config_error_on_first_start_exits_2_without_retry(tmp_path):
    proc, state = _start(tmp_path, "config,ok")
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 2, out
    assert _starts(state) == 1


def test_child_ignoring_sigterm_is_killed_and_supervisor_exits_0(tmp_path):
    proc, state = _start(tmp_path, "deaf")
    try:
        wait_for(lambda: _starts(state) >= 1, 20, 0.05, "child start")
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert "did not stop" in out  # the stuck child was SIGKILLed after stop_timeout_s
