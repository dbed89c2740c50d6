"""Supervisor: runs the instrument in a child process and restarts it when audio dies.

Why a child process: when the audio server (JACK) dies under a running
stream, PortAudio stops calling back and its ``stop()``/``close()`` block
forever; PortAudio also enumerates devices only once per process. The only
reliable recovery is a fresh process. So ``canne run`` is this small
supervisor (no numpy, no onnxruntime, no audio, no MIDI) and the instrument
runs in a child (``python -m daemon.app.cli run --child ...``).

The channel (portable: plain pipes on the child's stdin and stdout, read by
blocking reads on threads; no ``pass_fds``, no ``select`` — both unavailable
for pipes on Windows):

- child → supervisor, on the child's stdout: one line per second,
  ``H <callbacks> <xruns> <underruns>``, and ``R ...`` once its stream has
  started (the child moves its own stdout to stderr first, so a stray print
  cannot corrupt the channel; lines that do not parse are ignored);
- supervisor → child, on the child's stdin: ``S`` (stop: fade out, exit 0)
  and ``L`` (reload the mapping) where there are no POSIX signals to send;
  end-of-file means the supervisor is gone, and the child exits by itself
  (:class:`ChildLink`: a watcher thread, so this works even while the child's
  main thread is stuck in the audio library).

The supervisor

- SIGKILLs the child when the callback count has not advanced for
  ``watchdog_s`` + 1 s after it was ready, or when it is not ready within
  ``startup_timeout_s`` (a PortAudio call hung on a dead server);
- restarts it after any exit but a clean one or a configuration error. The rule
  for the delay: 0.1 s, doubled for each crash that follows a short run (up to
  ``max_backoff_s``), back to 0.1 s once a child has played for
  ``healthy_reset_s`` (3 s), so crashes separated by seconds of good audio never
  wait long; an exit for a lost audio server (status 75) always restarts after
  0.1 s and does not grow the delay (the new child waits in-process, up to 10 s,
  for the server to come back, which is cheaper than a new process);
- never restarts exit status 2 (a configuration or environment error: bad
  model or mapping, no audio device, PortAudio missing): it exits 2, and the
  child's one error line stays the last thing printed. A child restarted
  after the instrument has played is told so (``CANNE_RESTART_AFTER_SOUND=1``)
  and reports a missing device as temporary (status 75: the server is not
  back yet), which is retried;
- gives up (status 1) when the instrument never started and its first
  ``max_failed_starts`` starts all failed (a crash in a native library at
  start-up would otherwise loop);
- forwards SIGTERM/SIGINT (then waits at most ``stop_timeout_s`` and kills)
  and SIGHUP (mapping reload) to the child — as signals on POSIX, as ``S``/``L``
  lines elsewhere — and exits 0 on stop.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time

log = logging.getLogger("canne.supervisor")

EXIT_CONFIG = 2
EXIT_RETRY = 75  # EX_TEMPFAIL: the audio server went away / is not back yet
#: Set in a child's environment when it is a restart after the instrument has played.
ENV_AFTER_SOUND = "CANNE_RESTART_AFTER_SOUND"
#: POSIX: forward stop/reload as signals (as before). Elsewhere: as lines on the child's stdin.
POSIX = os.name == "posix"


class Supervisor:
    """Start, watch and restart the instrument process.

    Parameters
    ----------
    child_args : list of str
        Arguments for ``canne run`` in the child (without ``--child``).
    command : list of str
        The child's command before ``--child`` and ``child_args``
        (default ``python -m daemon.app.cli run``; tests substitute a scripted child).
    healthy_reset_s : float
        A child that played this long (ready, callbacks advancing) resets the
        restart delay to its minimum.
    max_failed_starts : int
        Before the instrument has ever played: give up after this many failed
        starts in a row.
    """

    def __init__(
        self,
        child_args: list[str],
        *,
        watchdog_s: float = 2.0,
        startup_timeout_s: float = 20.0,
        min_backoff_s: float = 0.1,
        max_backoff_s: float = 8.0,
        healthy_reset_s: float = 3.0,
        max_failed_starts: int = 3,
        stop_timeout_s: float = 2.5,
        env: dict | None = None,
        command: list[str] | None = None,
    ) -> None:
        self.child_args = list(child_args)
        self.command = list(command or [sys.executable, "-m", "daemon.app.cli", "run"])
        self.watchdog_s = watchdog_s
        self.startup_timeout_s = startup_timeout_s
        self.min_backoff_s = min_backoff_s
        self.max_backoff_s = max_backoff_s
        self.healthy_reset_s = healthy_reset_s
        self.max_failed_starts = max_failed_starts
        self.stop_timeout_s = stop_timeout_s
        self.env = env
        self.stopping = False
        self.restarts = 0
        self.ever_ready = False
        self._child: subprocess.Popen | None = None
        self._send_lock = threading.Lock()

    # -- signals -----------------------------------------------------------------
    def _tell_child(self, sig: int, line: bytes) -> None:
        """Stop/reload the child: a signal on POSIX, a line on its stdin elsewhere."""
        child = self._child
        if child is None or child.poll() is not None:
            return
        if POSIX:
            try:
                child.send_signal(sig)
            except OSError:
                pass
            return
        with self._send_lock:
            try:
                child.stdin.write(line)
                child.stdin.flush()
            except (OSError, ValueError):
                pass

    def _on_stop(self, _signum, _frame) -> None:
        self.stopping = True
        self._tell_child(signal.SIGTERM, b"S\n")

    def _on_hup(self, _signum, _frame) -> None:
        self._tell_child(getattr(signal, "SIGHUP", signal.SIGTERM), b"L\n")

    def install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        if hasattr(signal, "SIGHUP"):
            signal.signal(signal.SIGHUP, self._on_hup)
        if hasattr(signal, "SIGBREAK"):  # Windows: Ctrl-Break
            signal.signal(signal.SIGBREAK, self._on_stop)

    # -- one child ---------------------------------------------------------------
    def _spawn(self) -> tuple[subprocess.Popen, queue.Queue]:
        cmd = [*self.command, "--child", *self.child_args]
        env = dict(os.environ if self.env is None else self.env)
        if self.ever_ready:
            env[ENV_AFTER_SOUND] = "1"
        else:
            env.pop(ENV_AFTER_SOUND, None)
        child = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=_pump_lines, args=(child.stdout, lines), name="supervisor-heartbeat",
                         daemon=True).start()
        return child, lines

    def _watch(self, child: subprocess.Popen, lines: queue.Queue) -> tuple[int, bool, float]:
        """Follow one child until it exits (or is killed).

        Returns ``(code, was_ready, healthy_s)``: ``healthy_s`` is how long it
        played (from ready to the last callback advance).
        """
        started = time.monotonic()
        ready = False
        ready_at = None
        last_cb, last_advance = -1, started
        stop_deadline = None

        def healthy() -> float:
            return max(0.0, last_advance - ready_at) if ready_at is not None else 0.0

        while True:
            if self.stopping and stop_deadline is None:
                stop_deadline = time.monotonic() + self.stop_timeout_s
            try:
                line = lines.get(timeout=0.2)
            except queue.Empty:
                line = b""
            now = time.monotonic()
            if line is None:  # the child closed its stdout: it is exiting
                code = self._wait(child, self.stop_timeout_s + 1.0)
                return code, ready, healthy()
            parts = line.split()
            if parts and parts[0] in (b"R", b"H"):
                if parts[0] == b"R" and not ready:
                    ready, ready_at = True, now
                    last_advance = now
                try:
                    cb = int(parts[1]) if len(parts) > 1 else 0
                except ValueError:
                    cb = last_cb
                if cb != last_cb:
                    last_cb, last_advance = cb, now
            if child.poll() is not None:
                return child.returncode, ready, healthy()
            if stop_deadline is not None:
                if now > stop_deadline:
                    log.warning("instrument did not stop within %.1f s; killing it", self.stop_timeout_s)
                    child.kill()
                    return self._wait(child, 5.0), ready, healthy()
                continue
            if ready and now - last_advance > self.watchdog_s + 1.0:
                log.error("watchdog: no audio callback for %.1f s (audio server gone?); "
                          "killing the audio process", now - last_advance)
                child.kill()
                return self._wait(child, 5.0), ready, healthy()
            if not ready and now - started > self.startup_timeout_s:
                log.error("watchdog: instrument not ready after %.0f s; killing it", self.startup_timeout_s)
                child.kill()
                return self._wait(child, 5.0), ready, healthy()

    @staticmethod
    def _wait(child: subprocess.Popen, timeout: float) -> int:
        try:
            return child.wait(timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            return child.wait()

    @staticmethod
    def _close(child: subprocess.Popen) -> None:
        for f in (child.stdin, child.stdout):
            try:
                if f is not None:
                    f.close()
            except OSError:
                pass

    # -- the loop ------------------------------------------------------------------
    def run(self) -> int:
        """Run until stopped; returns the exit code for ``canne run``."""
        self.install_signals()
        backoff = self.min_backoff_s
        failed_starts = 0
        while True:
            child, lines = self._spawn()
            self._child = child
            if self.stopping:  # a signal arrived while spawning
                self._on_stop(signal.SIGTERM, None)
            try:
                code, ready, healthy_s = self._watch(child, lines)
            finally:
                self._child = None
                self._close(child)
            self.ever_ready = self.ever_ready or ready
            if self.stopping or code == 0:
                return 0
            if code == EXIT_CONFIG:
                # A human must act (the child said why in one line): never restarted.
                if self.ever_ready:
                    log.error("instrument exited with status 2 (configuration); not restarting")
                return EXIT_CONFIG
            if not self.ever_ready:
                failed_starts += 1
                if failed_starts >= self.max_failed_starts:
                    log.error("instrument failed to start %d times (last exit status %s); giving up",
                              failed_starts, code)
                    return 1
            # The audio server went away (75): not a crash of ours; the next child waits
            # for the server itself, so it starts at once and the delay does not grow.
            if healthy_s >= self.healthy_reset_s or code == EXIT_RETRY:
                backoff = self.min_backoff_s
            self.restarts += 1
            log.warning("instrument exited with code %s after %.1f s of sound; restart %d in %.1f s",
                        code, healthy_s, self.restarts, backoff)
            deadline = time.monotonic() + backoff
            while time.monotonic() < deadline and not self.stopping:
                time.sleep(0.05)
            if self.stopping:
                return 0
            if code != EXIT_RETRY:
                backoff = min(self.max_backoff_s, backoff * 2.0)


def _pump_lines(stream, out: queue.Queue) -> None:
    """Supervisor thread: the child's stdout, line by line, into ``out``; ``None`` at EOF."""
    try:
        for line in iter(stream.readline, b""):
            out.put(line)
    except (OSError, ValueError):
        pass
    out.put(None)


# -- the child's end --------------------------------------------------------------------
class ChildLink:
    """The instrument's end of the channel: heartbeats out, commands in, parent death.

    :meth:`from_stdio` takes the process's stdout for heartbeats (and points file
    descriptor 1 at stderr, so prints cannot corrupt the channel) and its stdin
    for commands. :meth:`start_watcher` starts a daemon thread that blocks
    reading stdin: ``S`` calls ``on_stop``, ``L`` ``on_reload``; end-of-file or
    a read error means the supervisor is gone: ``on_gone`` is called, and if
    the process is still there ``grace_s`` later (its main thread stuck, e.g.
    in PortAudio) the thread ends it with ``os._exit``. No orphan keeps the
    audio device.
    """

    def __init__(self, out_fd: int, in_fd: int | None) -> None:
        self.out_fd = out_fd
        self.in_fd = in_fd
        self.gone = False

    @classmethod
    def from_stdio(cls) -> "ChildLink":
        try:
            sys.stdout.flush()
        except (OSError, ValueError):
            pass
        out = os.dup(1)
        os.dup2(2, 1)
        return cls(out, 0)

    def send(self, line: bytes) -> bool:
        """Write one heartbeat line; False once the supervisor is gone."""
        if self.gone:
            return False
        try:
            os.write(self.out_fd, line)
            return True
        except BrokenPipeError:
            self.gone = True
            return False
        except OSError:
            return True  # a transient error: the next heartbeat tries again

    def start_watcher(self, *, on_stop, on_reload, on_gone, grace_s: float = 2.0,
                      exit_code: int = 0) -> threading.Thread | None:
        if self.in_fd is None:
            return None

        def watch():
            buf = b""
            while True:
                try:
                    data = os.read(self.in_fd, 256)
                except OSError:
                    data = b""
                if not data:
                    break
                buf += data
                *cmds, buf = buf.split(b"\n")
                for cmd in cmds:
                    cmd = cmd.strip()
                    if cmd == b"S":
                        on_stop()
                    elif cmd == b"L":
                        on_reload()
            self.gone = True
            try:
                on_gone()
            except Exception:
                pass
            time.sleep(grace_s)
            os._exit(exit_code)

        t = threading.Thread(target=watch, name="supervisor-watch", daemon=True)
        t.start()
        return t
