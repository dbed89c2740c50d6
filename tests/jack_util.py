"""Real-parts helpers for daemon tests: a named JACK dummy server, a recorder, a MIDI sender.

Recipes (``docs/daemon.md``, *Live audio in Python*): one named server per session
(``jackd -n NAME --no-realtime -d dummy -r 48000 -p 256``), the environment
variables ``JACK_DEFAULT_SERVER=NAME`` and ``JACK_NO_START_SERVER=1``; the
test's MIDI port and recorder are opened before the stream under test; clients
are created one at a time; every wait polls with a generous deadline.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

RATE = 48000
PERIOD = 256
#: The instrument's JACK audio client (daemon.adapters.audio_output.JACK_CLIENT_NAME).
INSTRUMENT_CLIENT = "CANNe-audio"


# -- processes the helpers start: never left behind ------------------------------------------
_LIVE: list[subprocess.Popen] = []


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    """Linux: the child gets SIGKILL when the test process dies, even by a crash or SIGKILL."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def spawn(args, **kwargs) -> subprocess.Popen:
    """``subprocess.Popen`` for a helper process (jackd, the daemon): registered so that
    :func:`kill_all` (run at exit and at the end of the test session) ends it, and on
    Linux killed by the kernel if this process dies first."""
    if sys.platform.startswith("linux"):
        kwargs.setdefault("preexec_fn", _die_with_parent)
    proc = subprocess.Popen(args, **kwargs)
    _LIVE.append(proc)
    return proc


def kill_all() -> list[int]:
    """SIGKILL every helper process still running; returns their pids."""
    killed = []
    while _LIVE:
        proc = _LIVE.pop()
        if proc.poll() is None:
            try:
                proc.kill()
                proc.wait(5)
            except Exception:
                pass
            killed.append(proc.pid)
    return killed


atexit.register(kill_all)


def jackd_path() -> str | None:
    return shutil.which("jackd")


def wait_for(predicate, timeout: float, interval: float = 0.05, what: str = "condition"):
    """Poll ``predicate`` until it returns a truthy value; raise on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.1f} s waiting for {what}")
        time.sleep(interval)


class JackServer:
    """A named ``jackd`` dummy server (48 kHz, 256-frame periods, no realtime)."""

    def __init__(self, name: str, *, rate: int = RATE, period: int = PERIOD, log_dir: Path | None = None):
        self.name = name
        self.rate = rate
        self.period = period
        self.log_path = (log_dir or Path("/tmp")) / f"jackd-{name}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def env(self) -> dict:
        env = dict(os.environ)
        env["JACK_DEFAULT_SERVER"] = self.name
        env["JACK_NO_START_SERVER"] = "1"
        return env

    def start(self, timeout: float = 15.0) -> None:
        if self._probe():
            raise RuntimeError(f"a JACK server named {self.name!r} is already running; stop it first")
        log = open(self.log_path, "ab")
        self.proc = spawn(
            [jackd_path() or "jackd", "-n", self.name, "--no-realtime", "-d", "dummy",
             "-r", str(self.rate), "-p", str(self.period)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        log.close()

        def ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"jackd exited with {self.proc.returncode}; see {self.log_path}")
            return self._probe()

        try:
            wait_for(ready, timeout, 0.1, f"jackd server {self.name!r}")
            time.sleep(0.2)
            if self.proc.poll() is not None:
                raise RuntimeError(f"jackd exited with {self.proc.returncode}; see {self.log_path}")
        except BaseException:
            self.stop()  # a server that did not come up is not left running
            raise

    def _probe(self) -> bool:
        # A short-lived client in a subprocess, so that a failed connect leaves no state here.
        code = ("import jack,sys\n"
                "try:\n c=jack.Client('probe',no_start_server=True,servername=sys.argv[1]); c.close()\n"
                "except Exception: sys.exit(1)\n")
        r = subprocess.run([sys.executable, "-c", code, self.name], env=self.env,
                           capture_output=True, timeout=10)
        return r.returncode == 0

    def kill(self) -> None:
        """SIGKILL the server (as if it crashed) and wait for it."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@contextlib.contextmanager
def jack_server_env(prefix: str, log_dir: Path):
    """Start a named dummy JACK server and point JACK_DEFAULT_SERVER at it while in use.

    Skips the calling test only when ``jackd`` is not installed at all.
    """
    if jackd_path() is None:
        pytest.skip("jackd is not installed (tests/run.sh installs jackd2)")
    srv = JackServer(f"{prefix}-{os.getpid()}", log_dir=log_dir)
    mp = pytest.MonkeyPatch()
    try:
        srv.start()
        for key in ("JACK_DEFAULT_SERVER", "JACK_NO_START_SERVER"):
            mp.setenv(key, srv.env[key])
        yield srv
    finally:
        mp.undo()
        srv.stop()


def benchmark_rig(prefix: str) -> tuple["JackServer", Path]:
    """For the benchmarks that drive ``canne run``: a dummy JACK server named
    ``PREFIX-PID``, started, with this process's ``JACK_`` variables pointing at it, and a
    copy of the shipped default mapping with ``takeover: jump`` (knobs act at once)."""
    import tempfile

    server = JackServer(f"{prefix}-{os.getpid()}", period=PERIOD)
    server.start()
    os.environ.update({k: v for k, v in server.env.items() if k.startswith("JACK_")})
    mapping = Path(tempfile.mkdtemp(prefix=f"{prefix}-")) / "map.yaml"
    default = Path(__file__).resolve().parent.parent / "mappings" / "default.yaml"
    mapping.write_text(default.read_text().replace("takeover: pickup", "takeover: jump"))
    return server, mapping


class MidiOutRecorder:
    """A JACK client with one MIDI output and one audio input, recorded into a
    preallocated buffer (``data``, ``frames`` so far); counts JACK xruns. Subclasses write
    their MIDI in :meth:`send`, called from the process callback after the input block was
    recorded and the MIDI buffer cleared; they call :meth:`activate` when ready."""

    def __init__(self, server: "JackServer", name: str, seconds: float):
        import jack

        self.client = jack.Client(name, no_start_server=True, servername=server.name)
        self.midi = self.client.midi_outports.register("out")
        self.inp = self.client.inports.register("in")
        self.data = np.zeros(int(seconds * RATE), dtype=np.float32)
        self.frames = 0  # frames recorded (= processed periods x period)
        self.xruns = 0

    def activate(self) -> None:
        self.client.set_process_callback(self._process)
        self.client.set_xrun_callback(self._xrun)
        self.client.activate()

    def _xrun(self, _delay):
        self.xruns += 1

    def _process(self, frames):
        f = self.frames
        if f + frames <= len(self.data):
            self.data[f:f + frames] = self.inp.get_array()
        self.frames = f + frames
        self.midi.clear_buffer()
        self.send(frames)

    def send(self, frames: int) -> None:  # noqa: ARG002
        """Write this period's MIDI (``self.midi.write_midi_event``)."""


class Recorder:
    """A JACK client that records its two inputs into a preallocated buffer.

    ``mark()`` returns the current write position (frames); ``since(mark)``
    returns a copy of what was recorded after it, ``[frames, 2]``. The process
    callback only copies (no allocation). Also counts JACK xruns.
    """

    def __init__(self, server: JackServer, *, name: str = "canne-rec", seconds: float = 240.0):
        import jack

        self.client = jack.Client(name, no_start_server=True, servername=server.name)
        self.n = int(seconds * self.client.samplerate)
        self.data = np.zeros((self.n, 2), dtype=np.float32)
        self.pos = 0
        self.xruns = 0
        self.ports = [self.client.inports.register(f"in_{i + 1}") for i in range(2)]
        self.client.set_process_callback(self._process)
        self.client.set_xrun_callback(self._xrun)
        self.client.activate()

    def _xrun(self, _delay):
        self.xruns += 1

    def _process(self, frames):
        p = self.pos
        if p + frames <= self.n:
            self.data[p:p + frames, 0] = self.ports[0].get_array()
            self.data[p:p + frames, 1] = self.ports[1].get_array()
            self.pos = p + frames

    @property
    def samplerate(self) -> int:
        return self.client.samplerate

    def mark(self) -> int:
        return self.pos

    def since(self, mark: int, end: int | None = None) -> np.ndarray:
        end = self.pos if end is None else end
        return self.data[mark:end].copy()

    def wait_frames(self, frames: int, timeout: float = 10.0) -> int:
        """Wait until ``frames`` more frames were recorded; return the new position."""
        target = self.pos + frames
        wait_for(lambda: self.pos >= target, timeout, 0.01, f"{frames} recorded frames")
        return self.pos

    def source_ports(self, client_prefix: str = INSTRUMENT_CLIENT) -> list[str]:
        if client_prefix == "PortAudio":  # the instrument's client before it had its own name
            client_prefix = INSTRUMENT_CLIENT
        return [p.name for p in self.client.get_ports(name_pattern=f"^{client_prefix}", is_audio=True,
                                                      is_output=True)]

    def connect_from(self, client_prefix: str = INSTRUMENT_CLIENT, timeout: float = 20.0) -> list[str]:
        """Wait for the output ports of ``client_prefix`` and connect them to our inputs."""
        ports = wait_for(lambda: self.source_ports(client_prefix), timeout, 0.1,
                         f"JACK output ports of {client_prefix!r}")
        ports = sorted(ports)
        for i, src in enumerate(ports[:2]):
            try:
                self.client.connect(src, self.ports[i].name)
            except Exception:
                pass  # already connected
        if len(ports) == 1:
            try:
                self.client.connect(ports[0], self.ports[1].name)
            except Exception:
                pass
        return ports

    def close(self, timeout: float = 5.0) -> None:
        """Deactivate and close the client; safe to call twice, never hangs.

        The process callback stops recording first; ``deactivate`` then runs on a helper
        thread: on a loaded machine it once waited forever for a server cycle (the suite
        hung in the JACK-restart test), so after ``timeout`` s the client is abandoned
        (its server is killed or stopped by the caller anyway)."""
        client, self.client = self.client, None
        if client is None:
            return
        self.n = self.pos  # the callback now records nothing (p + frames > n)

        def _close():
            try:
                client.deactivate()
                client.close()
            except Exception:
                pass

        t = threading.Thread(target=_close, name="recorder-close", daemon=True)
        t.start()
        t.join(timeout)


class MidiSender:
    """A JACK MIDI output port (python-rtmidi's JACK API) named ``<client>:out``."""

    def __init__(self, client: str = "canne-test"):
        import rtmidi

        self.client = client
        self.out = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, name=client)
        self.out.open_virtual_port("out")

    @property
    def port_name(self) -> str:
        return f"{self.client}:out"

    def send(self, *data: int) -> None:
        self.out.send_message(list(data))

    def note_on(self, note: int, velocity: int = 100, channel: int = 0) -> None:
        self.send(0x90 | channel, note, velocity)

    def note_off(self, note: int, channel: int = 0) -> None:
        self.send(0x80 | channel, note, 0)

    def cc(self, control: int, value: int, channel: int = 0) -> None:
        self.send(0xB0 | channel, control, value)

    @property
    def closed(self) -> bool:
        return self.out is None

    def close(self) -> None:
        """Close the port and free the rtmidi object; safe to call twice.

        (``delete()`` frees the C++ object: calling ``close_port()`` on it again — a
        failing test closing its sender, then the fixture teardown — segfaulted.)
        """
        out, self.out = self.out, None
        if out is None:
            return
        # libjack may still be walking this client's ports after the last graph change
        # (a daemon that just exited, a connection): unregistering now can crash the test
        # process (jack2 #216; see MidiInput.close). Let the notifications through first.
        time.sleep(0.1)
        try:
            out.close_port()
        except Exception:
            pass
        try:
            out.delete()
        except Exception:
            pass


class Daemon:
    """``canne run`` as a subprocess, with its stderr collected on a thread."""

    def __init__(self, args: list[str], *, env: dict, cwd: Path | None = None):
        self.args = args
        self.lines: list[str] = []
        self.proc = spawn(
            [sys.executable, "-m", "daemon.app.cli", *args], env=env, cwd=cwd,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
        )
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def wait_log(self, text: str, timeout: float = 20.0, start: int = 0) -> int:
        """Wait for a log line containing ``text`` (from line ``start``); return its index."""
        def find():
            for i in range(start, len(self.lines)):
                if text in self.lines[i]:
                    return i + 1
            if self.proc.poll() is not None:
                raise RuntimeError(f"canne run exited ({self.proc.returncode}) before {text!r}:\n{self.log}")
            return 0

        return wait_for(find, timeout, 0.05, f"log line {text!r}") - 1

    def terminate(self, timeout: float = 10.0) -> tuple[int, float]:
        """SIGTERM; return (exit code, seconds until exit)."""
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(5)
            return code, float("inf")
        return code, time.monotonic() - t0

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


# -- signal measures ---------------------------------------------------------------------
def dbfs(x: np.ndarray) -> float:
    """RMS level in dB relative to full scale (a full-scale sine is −3 dBFS)."""
    x = np.asarray(x, dtype=np.float64)
    return float(10 * np.log10(np.mean(x**2) + 1e-20))


def fundamental_hz(x: np.ndarray, rate: int, lo: float = 50.0, hi: float = 2000.0) -> float:
    """Strongest spectral peak in [lo, hi] Hz, refined by parabolic interpolation of log magnitude."""
    x = np.asarray(x, dtype=np.float64)
    x = x - x.mean()
    n = len(x)
    nfft = 1 << int(np.ceil(np.log2(n)) + 2)
    spec = np.abs(np.fft.rfft(x * np.hanning(n), nfft)) + 1e-12
    freqs = np.fft.rfftfreq(nfft, 1 / rate)
    band = (freqs >= lo) & (freqs <= hi)
    k = int(np.flatnonzero(band)[np.argmax(spec[band])])
    a, b, c = np.log(spec[k - 1:k + 2])
    delta = 0.5 * (a - c) / (a - 2 * b + c)
    return float((k + delta) * rate / nfft)


def fundamental_hz_median(x: np.ndarray, rate: int, lo: float = 50.0, hi: float = 2000.0,
                          block: int = 8192) -> float:
    """:func:`fundamental_hz` of each ``block``-sample piece, median: a cycle the JACK
    server skipped on a loaded machine (a phase jump in the recording) spoils one piece,
    not the measurement."""
    x = np.asarray(x, dtype=np.float64)
    est = [fundamental_hz(x[i:i + block], rate, lo, hi) for i in range(0, len(x) - block + 1, block)]
    return float(np.median(est)) if est else fundamental_hz(x, rate, lo, hi)


def cents(f: float, ref: float) -> float:
    return float(1200 * np.log2(f / ref))


def spectrum_db(x: np.ndarray, n_fft: int = 4096) -> np.ndarray:
    """Average log-magnitude spectrum (dB) over Hann frames of ``n_fft``, hop n_fft/2."""
    x = np.asarray(x, dtype=np.float64)
    w = np.hanning(n_fft)
    frames = [x[i:i + n_fft] * w for i in range(0, len(x) - n_fft + 1, n_fft // 2)]
    mag = np.mean([np.abs(np.fft.rfft(f)) for f in frames], axis=0)
    return 20 * np.log10(mag / (mag.max() + 1e-20) + 1e-6)
