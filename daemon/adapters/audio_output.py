"""Audio output adapter: a sounddevice ``OutputStream`` that pulls from the engine.

The only module of ``daemon`` that imports ``sounddevice``.

The callback contract
---------------------
:meth:`AudioOutput._callback` runs on PortAudio's audio thread (inside JACK's
process callback on JACK). It

- only *pulls*: it calls ``render(n, out=view)`` of the installed source for
  exactly the frames asked for, into a buffer preallocated at construction,
  and copies it to every output channel;
- allocates no arrays (``out=`` everywhere, views of preallocated buffers),
  does no I/O, takes no locks, never logs or prints, never raises: an
  exception from ``render`` (or no source installed) plays silence and counts
  an *underrun*; a block that is not finite is replaced by silence and
  counted in ``nonfinite``; the result is clamped to ±1;
- applies the master fade (start muted and fade in; fade out before stop);
- updates plain integer counters (``callbacks``, ``xruns``, ``underruns``,
  ``nonfinite``) that a control thread reads for the status line and the
  watchdog (the watchdog notices ``callbacks`` stop advancing when the audio
  server dies, because PortAudio then neither calls back nor returns from
  ``stop()``/``close()``).

Rendering inside the callback gives the lowest latency the engine allows
(MIDI event → next hop boundary → this block): the engine computes one hop
(decode + phase + overlap-add) only every ``hop`` samples, and that hop must be
done within the one block (period) that asks for it.

Render ahead (``ahead`` > 0 frames): a producer thread (``audio-render``) keeps a
ring of up to ``ahead`` rendered frames in front of the callback, rendering in
``chunk``-frame calls; the callback then only copies. A hop may take as long as
``ahead - chunk`` frames instead of one period, at the price of ``ahead`` frames
of added latency. The callback never waits for the producer: frames that are not
there yet play as silence and count in ``late``. Not with the duplex stream (the
effect renders from the input block it is given).

``auto_ahead`` > 0: start rendering in the callback (lowest latency) and switch to
rendering ``auto_ahead`` frames ahead once the control side calls
:meth:`AudioOutput.request_ahead` (the instrument does after repeated xruns). The
callback makes the switch itself, between two blocks, so the source is never
rendered by two threads; the first blocks after it play silence while the ring
fills (one gap of about ``auto_ahead`` frames), then the latency stays higher.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from daemon.errors import DeviceError

log = logging.getLogger(__name__)

JACK_HOSTAPI = "JACK Audio Connection Kit"
MAX_FRAMES = 16384


#: The JACK client name of the audio output (PortAudio's own default is "PortAudio").
#: JACK makes it unique ("CANNe-audio-01") when another instance runs.
JACK_CLIENT_NAME = "CANNe-audio"

_jack_name_buf = None  # PortAudio keeps the pointer, not a copy: the buffer must stay alive


def _set_jack_client_name(name: str) -> bool:
    """Ask PortAudio's JACK host API to register as ``name`` (before PortAudio initialises).

    sounddevice does not expose ``PaJack_SetClientName`` and initialises PortAudio
    when imported, so the call goes to the same shared library through ctypes
    first (the dynamic loader hands both the same library instance). Builds
    without JACK (the Windows and macOS wheels' bundled PortAudio) lack the symbol:
    nothing to do. Never raises.
    """
    global _jack_name_buf
    if "sounddevice" in sys.modules:
        return False  # too late: PortAudio is initialised
    try:
        import ctypes
        import ctypes.util

        libname = ctypes.util.find_library("portaudio")
        if libname is None:
            return False
        lib = ctypes.CDLL(libname)
        fn = getattr(lib, "PaJack_SetClientName", None)
        if fn is None:
            return False
        fn.argtypes = [ctypes.c_char_p]
        fn.restype = ctypes.c_int
        _jack_name_buf = ctypes.create_string_buffer(name.encode("utf-8"))
        return fn(_jack_name_buf) == 0
    except Exception:
        return False


def _sd():
    """sounddevice (imported here only: the adapter owns the dependency).

    Raises :class:`DeviceError` (one line, with the fix) when the PortAudio
    library cannot be found or loaded.
    """
    if "sounddevice" not in sys.modules:
        _set_jack_client_name(JACK_CLIENT_NAME)
    try:
        import sounddevice as sd
    except (OSError, ImportError) as exc:
        raise DeviceError(
            f"the PortAudio library cannot be loaded ({exc}): install it — Debian/Ubuntu: "
            "sudo apt-get install libportaudio2; Fedora: sudo dnf install portaudio; "
            "macOS and Windows: pip install --force-reinstall sounddevice (its wheel bundles "
            "PortAudio); see docs/install.md"
        ) from None
    return sd


def rescan_devices() -> None:
    """Make PortAudio enumerate the devices again (it does so only when initialised):
    an audio server started after this process first looked is then found. Only for a
    process with no open stream. Never raises."""
    try:
        sd = _sd()
        sd._terminate()
        sd._initialize()
    except Exception:
        pass


def _hostapi_name(sd, dev: dict) -> str:
    return sd.query_hostapis(dev["hostapi"])["name"]


def list_audio_devices() -> list[dict]:
    """Every PortAudio device as ``{index, name, hostapi, outputs, inputs, default_samplerate}``."""
    sd = _sd()
    out = []
    for i, dev in enumerate(sd.query_devices()):
        out.append(
            {
                "index": i,
                "name": dev["name"],
                "hostapi": _hostapi_name(sd, dev),
                "outputs": dev["max_output_channels"],
                "inputs": dev["max_input_channels"],
                "default_samplerate": dev["default_samplerate"],
            }
        )
    return out


def find_output_device(spec: str | int | None) -> dict:
    """Resolve ``--device`` to one output device.

    ``spec`` is an index, a case-insensitive name substring (matched against
    ``"name"`` and ``"name (host API)"``), or ``None``: then a running JACK
    server's output is preferred, else PortAudio's default output.

    Raises :class:`DeviceError` with a one-line message that names the
    device and the fix.
    """
    sd = _sd()
    devices = list_audio_devices()
    outputs = [d for d in devices if d["outputs"] > 0]
    if not outputs:
        asked = f"--device {spec}: " if spec not in (None, "") else ""
        raise DeviceError(
            f"{asked}no audio output device found: start the JACK server (or plug in a sound card) "
            "and run `canne devices` to check"
        )
    if spec is None or spec == "":
        jack = [d for d in outputs if d["hostapi"] == JACK_HOSTAPI]
        if jack:
            return jack[0]
        try:
            idx = sd.default.device[1]
        except Exception:
            idx = -1
        if idx is not None and idx >= 0 and devices[idx]["outputs"] > 0:
            return devices[idx]
        return outputs[0]
    text = str(spec).strip()
    if text.lstrip("-").isdigit():
        idx = int(text)
        if 0 <= idx < len(devices) and devices[idx]["outputs"] > 0:
            return devices[idx]
        raise DeviceError(
            f"--device {idx}: no output device with that index; `canne devices` lists them"
        )
    low = text.lower()
    hits = [
        d for d in outputs if low in d["name"].lower() or low in f"{d['name']} ({d['hostapi']})".lower()
    ]
    if not hits:
        names = ", ".join(f"{d['index']}: {d['name']} ({d['hostapi']})" for d in outputs)
        raise DeviceError(f"--device {text!r}: no output device matches; available: {names}")
    return hits[0]


@dataclass
class AudioCounters:
    """Plain integers updated by the audio callback only."""

    callbacks: int = 0
    xruns: int = 0  # PortAudio reported output underflow (the server missed us)
    underruns: int = 0  # nothing to play: no source or render failed → silence
    nonfinite: int = 0  # blocks that were not finite → silence
    late: int = 0  # render ahead: blocks the producer had not filled in time (silence)


class AudioOutput:
    """sounddevice output stream around a ``render(n, out=...)`` source.

    Parameters
    ----------
    render : callable or None
        ``render(n: int, out: float32[n]) -> float32[n]``; ``None`` plays silence.
    device : str, int or None
        See :func:`find_output_device`.
    samplerate : float or None
        ``None`` = the device's default rate (JACK's rate under JACK).
    blocksize : int
        Frames per callback; 0 lets the host choose (best under JACK).
    latency : str or float
        ``'low'``, ``'high'`` or seconds, passed to PortAudio.
    fade_s : float
        Length of the fade in at start and the fade out before stop.
    """

    def __init__(
        self,
        render: Callable | None,
        *,
        device: str | int | None = None,
        samplerate: float | None = None,
        blocksize: int = 0,
        latency: str | float = "low",
        channels: int = 2,
        fade_s: float = 0.05,
        input_channels: int = 0,
        ahead: int = 0,
        chunk: int = 256,
        auto_ahead: int = 0,
    ) -> None:
        self.device = find_output_device(device)
        # duplex (the ANNe effect): one input channel read beside the output, same callback
        self.input_channels = 1 if input_channels else 0
        if self.input_channels and int(self.device.get("inputs", 0)) < 1:
            raise DeviceError(f"audio device {self.device['name']!r} ({self.device['hostapi']}) has no "
                              "input; the effect needs one (see `canne devices`, --device)")
        self.input = np.zeros(MAX_FRAMES, dtype=np.float32)  # the last input block (duplex)
        self.samplerate = float(samplerate or self.device["default_samplerate"])
        self.blocksize = int(blocksize)
        self.latency = latency
        self.channels = max(1, min(int(channels), int(self.device["outputs"])))
        self.counters = AudioCounters()
        self.last_error: str | None = None  # repr of the last render exception (read outside)
        self._render = render
        self._buf = np.zeros(MAX_FRAMES, dtype=np.float32)
        self._ramp = np.zeros(MAX_FRAMES, dtype=np.float32)
        self._fade = np.zeros(MAX_FRAMES, dtype=np.float32)
        self._idx = np.arange(1, MAX_FRAMES + 1, dtype=np.float32)
        self._step = 1.0 / max(1.0, fade_s * self.samplerate)
        self._gain = 0.0  # start muted
        self._target = 0.0
        self._stream = None
        # render ahead (not for the duplex stream): a ring the producer fills, the callback reads
        self.ahead = 0 if self.input_channels else max(0, int(ahead))
        self.auto_ahead = 0 if self.input_channels or self.ahead else max(0, int(auto_ahead))
        self._switch_to = 0  # set by request_ahead, taken up by the callback
        self.chunk = max(1, min(int(chunk), MAX_FRAMES))
        if self.ahead or self.auto_ahead:
            cap = 1 << (max(self.ahead, self.auto_ahead) + self.chunk + MAX_FRAMES).bit_length()
            self._ring = np.zeros(cap, dtype=np.float32)
            self._chunk_buf = np.zeros(self.chunk, dtype=np.float32)
        self._written = 0  # frames the producer has put in the ring (it alone writes this)
        self._read = 0  # frames the callback has taken (it alone writes this)
        self._wake = threading.Event()
        self._producer = None
        self._producing = False

    # -- control side ---------------------------------------------------------
    def set_source(self, render: Callable | None) -> None:
        """Install another render callable (atomic attribute swap)."""
        self._render = render

    @property
    def gain(self) -> float:
        return self._gain

    def fade_in(self) -> None:
        self._target = 1.0

    def fade_out(self) -> None:
        self._target = 0.0

    def wait_faded_out(self, timeout: float) -> bool:
        """Wait until the fade out has reached silence (or ``timeout`` s)."""
        deadline = time.monotonic() + timeout
        while self._gain > 0.0 and time.monotonic() < deadline:
            time.sleep(0.005)
        return self._gain <= 0.0

    @property
    def cpu_load(self) -> float:
        s = self._stream
        try:
            return float(s.cpu_load) if s is not None else 0.0
        except Exception:
            return 0.0

    @property
    def stream_lost(self) -> bool:
        """True when the started stream stopped without being asked to: the audio server
        went away. PortAudio's JACK host API marks the stream inactive within about
        0.1 s of the server's death (its shutdown callback), long before a watchdog on
        the callback count could tell; the stream must then not be touched again."""
        s = self._stream
        try:
            return bool(s is not None and not s.active and not s.stopped)
        except Exception:
            return True

    @property
    def output_latency(self) -> float:
        s = self._stream
        try:
            return float(s.latency) if s is not None else 0.0
        except Exception:
            return 0.0

    # -- render ahead: the producer thread --------------------------------------------
    def request_ahead(self) -> bool:
        """Switch to rendering ``auto_ahead`` frames ahead (control side; the callback
        switches between two blocks). False when there is nothing to switch to."""
        if not self.auto_ahead or self.ahead or self._switch_to:
            return False
        self._switch_to = self.auto_ahead
        return True

    def _render_into(self, render, buf: np.ndarray) -> None:
        """``render(len(buf), out=buf)``; an exception plays silence, counts an underrun and
        is kept in ``last_error`` for the control loop (never raised into PortAudio)."""
        try:
            render(len(buf), out=buf)
        except Exception as exc:
            buf.fill(0)
            self.counters.underruns += 1
            self.last_error = repr(exc)

    def _fill_once(self) -> bool:
        """Render one chunk into the ring if it holds less than ``ahead`` frames."""
        if not self.ahead or self._written - self._read >= self.ahead:
            return False
        buf = self._chunk_buf
        render = self._render
        if render is None:
            buf.fill(0)
        else:
            self._render_into(render, buf)
        ring, cap = self._ring, len(self._ring)
        i = self._written % cap
        k = min(self.chunk, cap - i)
        ring[i:i + k] = buf[:k]
        if k < self.chunk:
            ring[:self.chunk - k] = buf[k:]
        self._written += self.chunk  # published after the samples are in place
        return True

    def _produce(self) -> None:
        period = max(0.0005, 0.25 * self.chunk / self.samplerate)
        while self._producing:
            if not self._fill_once():
                self._wake.wait(period)
                self._wake.clear()

    def _start_producer(self) -> None:
        self._producing = True
        while self._fill_once():  # prefill: the first blocks are there before the stream runs
            pass
        self._producer = threading.Thread(target=self._produce, name="audio-render", daemon=True)
        self._producer.start()

    def _stop_producer(self) -> None:
        self._producing = False
        self._wake.set()
        t, self._producer = self._producer, None
        if t is not None:
            t.join(1.0)

    def start(self, *, fade_in: bool = True) -> None:
        """Open and start the stream (muted), then fade in."""
        sd = _sd()
        if self.ahead or self.auto_ahead:
            self._start_producer()
        try:
            if self.input_channels:
                self._stream = sd.Stream(
                    device=(self.device["index"], self.device["index"]),
                    samplerate=self.samplerate,
                    blocksize=self.blocksize,
                    latency=self.latency,
                    channels=(1, self.channels),
                    dtype="float32",
                    callback=self._callback_duplex,
                )
            else:
                self._stream = sd.OutputStream(
                    device=self.device["index"],
                    samplerate=self.samplerate,
                    blocksize=self.blocksize,
                    latency=self.latency,
                    channels=self.channels,
                    dtype="float32",
                    callback=self._callback,
                )
            self._stream.start()
        except Exception as exc:
            raise DeviceError(
                f"cannot open audio output {self.device['name']!r} ({self.device['hostapi']}) at "
                f"{self.samplerate:g} Hz: {exc}; check --device/--sample-rate with `canne devices`"
            ) from exc
        if fade_in:
            self.fade_in()

    def close(self, timeout: float = 1.0) -> bool:
        """Stop and close the stream without hanging.

        PortAudio's ``stop()``/``close()`` block forever when the audio server
        has died, so they run on a helper thread; returns False if they did not
        finish within ``timeout`` s (the caller should then exit the process).
        """
        stream, self._stream = self._stream, None
        self._stop_producer()
        if stream is None:
            return True
        done = threading.Event()

        def _stop():
            try:
                stream.stop()
                stream.close()
            except Exception:
                pass
            done.set()

        threading.Thread(target=_stop, name="audio-close", daemon=True).start()
        return done.wait(timeout)

    # -- audio side -------------------------------------------------------------
    def _callback_duplex(self, indata, outdata, frames, time_info, status) -> None:
        """Duplex: copy the input block into :attr:`input`, then render as usual (the
        source reads ``input[:frames]``)."""
        if status and status.input_overflow:
            self.counters.xruns += 1
        if frames <= MAX_FRAMES:
            self.input[:frames] = indata[:, 0]
        self._callback(outdata, frames, time_info, status)

    def _fade_to_zero(self, x: np.ndarray, gain: float) -> None:
        """Ramp ``x`` from ``gain`` down to silence over its length (declick a cut)."""
        n = len(x)
        if n:
            ramp = self._fade[:n]
            np.multiply(self._idx[:n], -gain / n, out=ramp)
            ramp += gain
            x *= ramp

    def _take(self, buf: np.ndarray, frames: int) -> bool:
        """Render ahead: copy ``frames`` from the ring; False (and the frames that are
        there faded out, silence after them) when the producer is late: nothing is lost,
        the next block goes on from where this one stopped."""
        ring, cap = self._ring, len(self._ring)
        have = min(frames, self._written - self._read)
        i = self._read % cap
        k = min(have, cap - i)
        buf[:k] = ring[i:i + k]
        if k < have:
            buf[k:have] = ring[:have - k]
        self._read += have
        self._wake.set()
        if have == frames:
            return True
        self._fade_to_zero(buf[:have], 1.0)
        buf[have:].fill(0)
        self.counters.late += 1
        return False

    def _callback(self, outdata, frames, time_info, status) -> None:  # noqa: ARG002
        c = self.counters
        c.callbacks += 1
        if status and status.output_underflow:
            c.xruns += 1
        if frames > MAX_FRAMES:  # hosts never ask this much; stay safe, play silence
            outdata.fill(0)
            c.underruns += 1
            return
        buf = self._buf[:frames]
        gain, target = self._gain, self._target
        if gain <= 0.0 and target <= 0.0:
            outdata.fill(0)
            return
        cut = False  # this block ends in a gap: fade it out, fade back in after the gap
        if self.ahead:
            cut = not self._take(buf, frames)
        else:
            render = self._render
            if render is None:
                buf.fill(0)
                c.underruns += 1
            else:
                self._render_into(render, buf)
            if self._switch_to:  # render ahead from now on (request_ahead): after this
                self.ahead = self._switch_to  # block's own render, so never two renderers
                self._wake.set()
                self._fade_to_zero(buf, 1.0)  # the ring fills meanwhile: a declicked gap
                cut = True
        if not np.isfinite(np.dot(buf, buf)):
            buf.fill(0)
            c.nonfinite += 1
        if cut:
            buf *= gain
            self._gain = 0.0  # the fade back in (to target) starts with the next sound
        elif gain != target:
            ramp = self._ramp[:frames]
            step = self._step if target > gain else -self._step
            np.multiply(self._idx[:frames], step, out=ramp)
            ramp += gain
            np.clip(ramp, 0.0, 1.0, out=ramp)
            buf *= ramp
            self._gain = float(ramp[-1])
        np.clip(buf, -1.0, 1.0, out=buf)
        outdata[:] = buf[:, None]
