"""Supervisor: runs the instrument in a child process and restarts it when audio dies.

Why a child process: when the audio server (JACK) dies under a running
stream, PortAudio stops calling back and its ``stop()``/``close()`` block
forever; PortAudio also enumerates devices only once per process. The only
reliable recovery is a fresh process. So ``canne run`` is this small
supervisor (no numpy, no onnxruntime, no audio, no MIDI) and the instrument
runs in a child (``python -m daemon.cli run --child-heartbeat-fd FD ...``).

Protocol: the child writes one line per second to a pipe,
``H <callbacks> <xruns> <underruns>``, and ``R ...`` once its stream has
started. The supervisor

- SIGKILLs the child when the callback count has not advanced for
  ``watchdog_s`` after it was ready, or when it is not ready within
  ``startup_timeout_s`` (a PortAudio call hung on a dead server);
- restarts it after any exit but a clean one, with exponential backoff
  (0.5 s doubling to ``max_backoff_s``; reset after a minute of sound);
- exits with the child's code 2 when the very first start fails for a reason
  a human must fix (no device, bad model or mapping): retrying would only
  hide the one-line error. Once the instrument has made sound, a failing
  start means the server is away: keep retrying until it is back;
- forwards SIGTERM/SIGINT (then waits at most ``stop_timeout_s`` and
  SIGKILLs) and SIGHUP (mapping reload) to the child, and exits 0 on stop.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import subprocess
import sys
import time

log = logging.getLogger("canne.supervisor")

EXIT_CONFIG = 2


class Supervisor:
    """Start, watch and restart the instrument process.

    Parameters
    ----------
    child_args : list of str
        Arguments for ``canne run`` in the child (without the heartbeat option).
    command : list of str
        The child's command before ``--child-heartbeat-fd FD`` and ``child_args``
        (default ``python -m daemon.cli run``; tests substitute a scripted child).
    """

    def __init__(
        self,
        child_args: list[str],
        *,
        watchdog_s: float = 2.0,
        startup_timeout_s: float = 20.0,
        max_backoff_s: float = 8.0,
        stop_timeout_s: float = 2.5,
        env: dict | None = None,
        command: list[str] | None = None,
    ) -> None:
        self.child_args = list(child_args)
        self.command = list(command or [sys.executable, "-m", "daemon.cli", "run"])
        self.watchdog_s = watchdog_s
        self.startup_timeout_s = startup_timeout_s
        self.max_backoff_s = max_backoff_s
        self.stop_timeout_s = stop_timeout_s
        self.env = env
        self.stopping = False
        self.restarts = 0
        self.ever_ready = False
        self._child: subprocess.Popen | None = None

    # -- signals -----------------------------------------------------------------
    def _signal_child(self, sig: int) -> None:
        child = self._child
        if child is not None and child.poll() is None:
            try:
                child.send_signal(sig)
            except OSError:
                pass

    def _on_stop(self, signum, _frame) -> None:
        self.stopping = True
        self._signal_child(signal.SIGTERM)

    def _on_hup(self, _signum, _frame) -> None:
        self._signal_child(signal.SIGHUP)

    def install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        if hasattr(signal, "SIGHUP"):
            signal.signal(signal.SIGHUP, self._on_hup)

    # -- one child ---------------------------------------------------------------
    def _spawn(self) -> tuple[subprocess.Popen, int]:
        r, w = os.pipe()
        cmd = [*self.command, "--child-heartbeat-fd", str(w), *self.child_args]
        child = subprocess.Popen(cmd, pass_fds=(w,), env=self.env)
        os.close(w)
        return child, r

    def _watch(self, child: subprocess.Popen, fd: int) -> tuple[int, bool]:
        """Follow one child until it exits (or is killed). Returns (code, was_ready)."""
        started = time.monotonic()
        ready = False
        last_cb, last_advance = -1, started
        buf = b""
        stop_deadline = None
        while True:
            if self.stopping and stop_deadline is None:
                stop_deadline = time.monotonic() + self.stop_timeout_s
            try:
                readable, _, _ = select.select([fd], [], [], 0.2)
            except InterruptedError:
                readable = []
            now = time.monotonic()
            if readable:
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    data = b""
                if not data:  # child closed its end: it is exiting
                    code = self._wait(child, self.stop_timeout_s + 1.0)
                    return code, ready
                buf += data
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    parts = line.split()
                    if not parts:
                        continue
                    if parts[0] == b"R":
                        ready = True
                        last_advance = now
                    cb = int(parts[1]) if len(parts) > 1 else 0
                    if cb != last_cb:
                        last_cb, last_advance = cb, now
            if child.poll() is not None:
                return child.returncode, ready
            if stop_deadline is not None:
                if now > stop_deadline:
                    log.warning("instrument did not stop within %.1f s; killing it", self.stop_timeout_s)
                    child.kill()
                    return self._wait(child, 5.0), ready
                continue
            if ready and now - last_advance > self.watchdog_s + 1.0:
                log.error("watchdog: no audio callback for %.1f s (audio server gone?); "
                          "killing the audio process", now - last_advance)
                child.kill()
                return self._wait(child, 5.0), ready
            if not ready and now - started > self.startup_timeout_s:
                log.error("watchdog: instrument not ready after %.0f s; killing it", self.startup_timeout_s)
                child.kill()
                return self._wait(child, 5.0), ready

    @staticmethod
    def _wait(child: subprocess.Popen, timeout: float) -> int:
        try:
            return child.wait(timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            return child.wait()

    # -- the loop ------------------------------------------------------------------
    def run(self) -> int:
        """Run until stopped; returns the exit code for ``canne run``."""
        self.install_signals()
        backoff = 0.5
        while True:
            t0 = time.monotonic()
            child, fd = self._spawn()
            self._child = child
            if self.stopping:  # a signal arrived while spawning
                self._on_stop(signal.SIGTERM, None)
            try:
                code, ready = self._watch(child, fd)
            finally:
                os.close(fd)
                self._child = None
            self.ever_ready = self.ever_ready or ready
            if self.stopping:
                return 0
            if code == 0:
                return 0
            if code == EXIT_CONFIG and not self.ever_ready:
                return EXIT_CONFIG
            if ready and time.monotonic() - t0 > 60.0:
                backoff = 0.5
            self.restarts += 1
            log.warning("instrument exited with code %s; restart %d in %.1f s",
                        code, self.restarts, backoff)
            deadline = time.monotonic() + backoff
            while time.monotonic() < deadline and not self.stopping:
                time.sleep(0.05)
            if self.stopping:
                return 0
            backoff = min(self.max_backoff_s, backoff * 2.0)
