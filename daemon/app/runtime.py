"""The live instrument: engine + mapping + MIDI input + audio output, in one process.

``canne run`` starts :mod:`daemon.app.supervisor`, which runs this module's
:func:`run_instrument` in a child process and restarts it when the audio
server goes away (see ``docs/daemon.md``, "Recovery design").

Threads in the instrument process
---------------------------------
- **audio** (PortAudio/JACK): :class:`daemon.adapters.audio_output.AudioOutput` pulls
  ``engine.render`` per block (``canne effect``: a duplex stream; the input block is
  copied and ``EffectEngine.process`` turns it into the output block). Nothing else
  happens there.
- **audio-render** (``canne run``; idle until used): renders ``engine.render`` into a
  ring ahead of the audio thread, which then only copies
  (:class:`daemon.adapters.audio_output.AudioOutput`, "Render ahead"): from the start with
  ``--render-ahead N``, or with the default ``auto`` once the audio dropped out
  ``AUTO_AHEAD_XRUNS`` times within a second (then ``AUTO_AHEAD_FRAMES`` ahead).
- **MIDI backend** (rtmidi/JACK): queues raw messages in rtmidi's C++ ring; no
  Python runs there (the control loop pumps them out every 2 ms).
- **OSC** (``daemon.adapters.osc``, when asked): no thread of its own; its UDP socket
  (127.0.0.1 unless another address is asked for) is drained and parsed by the
  control loop every turn, and the state stream is sent from there.
- **main / control**: everything else, in one loop that sleeps 2 ms per turn —
  drain and parse MIDI, coalesce absolute CCs, ``Mapper.handle``; every
  ``RELOAD_POLL_S`` poll the mapping file (hot reload), and the MIDI ports while none
  is open; every second poll the MIDI ports (reconnect), write the heartbeat for the supervisor, print the status line,
  collect garbage. Signals (SIGINT/SIGTERM: fade out and exit 0; SIGHUP: reload the
  mapping) are handled here too, because Python runs signal handlers in the main thread.
- **canne-program** (:class:`ProgramSwitcher`, started in :meth:`Instrument.start`,
  stopped in :meth:`Instrument.shutdown`): program changes load the program's model
  and mapping here, off the MIDI path, then switch engine and Mapper under the
  Mapper's lock. Idle otherwise.
- **supervisor link watcher** (``daemon.app.supervisor.ChildLink.start_watcher``, started in
  :func:`run_instrument` when supervised): reads the supervisor's stop/reload requests
  and only sets the flags the control loop reads.
- short-lived helpers, one job each: **canne-mapping-validate** (the hot reloader,
  ``daemon.control.reload``, reads and validates an edited mapping file; the control loop
  applies the result) and **canne-snapshot-save** (``Mapper.store_snapshot(save=True)``,
  OSC ``/canne/snapshot/save``: writes the snapshot into the mapping file).

The latent target has one owner, the Mapper (``Mapper.latents``; see ``daemon.control.mapper``):
the engine's target is written from it and never read back; the status line shows it.

Start-up follows the measured rules in ``docs/daemon.md`` (*Live audio in Python*): ``sys.setswitchinterval(0.001)``;
the decoder session has one thread and is warmed up; MIDI ports are opened
before the audio stream; after the stream starts, ``gc.freeze(); gc.disable()``
and explicit collections from the control loop.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from daemon import paths
from daemon.errors import CanneError, DeviceError

log = logging.getLogger("canne.run")

#: Exit codes of the instrument process (the supervisor reads them).
EXIT_OK = 0
EXIT_CONFIG = 2  # bad model/mapping/options or no device: a human must act
EXIT_WATCHDOG = 75  # the audio callback stopped (audio server gone): restart me

#: The control loop polls the mapping file this often (hot reload within a second).
RELOAD_POLL_S = 0.25
AUTO_AHEAD_FRAMES = 768  # --render-ahead auto: three 256-frame periods, 16 ms at 48 kHz
AUTO_AHEAD_XRUNS = 3  # ... switched to after this many xruns within one second
AUTO_AHEAD_GRACE_S = 3.0  # ... not counting the first seconds (the stream settling)
DEVICE_WAIT_S = 10.0  # a restarted instrument waits this long for its device (then exit 75)
DEVICE_POLL_S = 0.2

#: The model and mapping played without --model/--mapping: the performer's own copy named
#: ``default`` when there is one, else the shipped one (installed package or checkout);
#: see daemon/paths.py.
DEFAULT_MODEL = paths.default_model()
DEFAULT_MAPPING = paths.default_mapping()


@dataclass
class RunOptions:
    """Everything ``canne run`` was asked for (see ``canne run --help``)."""

    model: str = str(DEFAULT_MODEL)
    mapping: str | None = str(DEFAULT_MAPPING)
    midi_in: list[str] = field(default_factory=list)
    virtual: bool = True
    midi_api: str = "auto"
    device: str | None = None
    sample_rate: float | None = None
    blocksize: int = 0
    latency: str | float = "low"
    polyphony: int | None = None
    # frames rendered ahead of the audio callback by a thread (0: in it); "auto": in it
    # until the audio drops out repeatedly, then AUTO_AHEAD_FRAMES ahead
    render_ahead: int | str = "auto"
    status: bool = False
    watchdog_s: float = 2.0
    fade_s: float = 0.05
    control_period_s: float = 0.002
    osc_port: int | None = None  # --osc-port (else the mapping's 'osc:' section, else no OSC)
    osc_host: str | None = None  # --osc-host (default 127.0.0.1)
    effect: bool = False  # canne effect: the ANNe effect on the audio input, not the synthesizer


def _setup_realtime_python() -> None:
    # One busy thread beside the audio callback starves it with the default 5 ms.
    sys.setswitchinterval(0.001)
    # A crash in a C extension (PortAudio, rtmidi, onnxruntime) leaves the Python stacks
    # of every thread in the log before the supervisor restarts the instrument.
    import faulthandler

    faulthandler.enable(all_threads=True)


class Instrument:
    """Owns the parts and the control loop. Build, :meth:`start`, :meth:`loop`."""

    def __init__(self, opts: RunOptions, *, link=None) -> None:
        self.opts = opts
        self.link = link  # daemon.app.supervisor.ChildLink when supervised
        self.stop_requested = False
        self.reload_requested = False
        self.engine = None
        self.mapper = None
        self.reloader = None
        self.programs = None
        self.midi = None
        self.audio = None
        self._coalesce = None
        self.osc = None
        self._t_start = time.monotonic()

    # -- building ---------------------------------------------------------------
    def build(self) -> None:
        """Load the model and mapping, create engine, MIDI and audio (not started)."""
        from daemon.adapters.audio_output import AudioOutput
        from daemon.core.engine import Engine
        from daemon.adapters.midi_input import MidiInput
        from daemon.core.model import DecoderModel

        opts = self.opts
        model = DecoderModel(opts.model)
        log.info("model %s (%d Hz, %d/%d, latent %d)", model.path, model.sample_rate,
                 model.n_fft, model.hop_length, model.latent_dim)
        # Validate the files before touching hardware, so a typo is reported as such.
        from daemon.control.mapping import load_mapping

        mapping = load_mapping(opts.mapping, model) if opts.mapping else None
        # Then the device: the engine renders at the device's rate.
        self.audio = AudioOutput(
            None,
            device=opts.device,
            samplerate=opts.sample_rate,
            blocksize=opts.blocksize,
            latency=opts.latency,
            fade_s=opts.fade_s,
            input_channels=1 if opts.effect else 0,
            ahead=0 if opts.render_ahead == "auto" else int(opts.render_ahead),
            auto_ahead=AUTO_AHEAD_FRAMES if opts.render_ahead == "auto" else 0,
        )
        if opts.effect:
            self._build_effect(model, mapping)
            self.midi = MidiInput(api=opts.midi_api, patterns=opts.midi_in, virtual=opts.virtual)
            self.midi.on_reconnect = self._on_midi_reconnect
            return
        kwargs = {"sample_rate": int(round(self.audio.samplerate))}
        if opts.polyphony:
            kwargs["polyphony"] = int(opts.polyphony)
            kwargs["max_polyphony"] = max(64, int(opts.polyphony))
        self.engine = Engine(model, **kwargs)
        self._build_mapper(model, mapping)
        if opts.polyphony:  # the command line wins over the mapping's notes.polyphony
            self.engine.set_polyphony(int(opts.polyphony))
        # Warm up the decoder and the render path before the stream opens.
        import numpy as np

        warm = np.zeros(4 * model.hop_length, dtype=np.float32)
        for _ in range(3):
            self.engine.render(len(warm), out=warm)
        self.audio.set_source(self.engine.render)
        self.midi = MidiInput(api=opts.midi_api, patterns=opts.midi_in, virtual=opts.virtual)
        self.osc = _make_osc(opts, mapping, self.mapper, self.engine)
        self.midi.on_reconnect = self._on_midi_reconnect

    def _build_effect(self, model, mapping) -> None:
        """``canne effect``: the ANNe effect engine fed by the audio input, knobs through
        the same Mapper (its 'effect:' section and effect_* knobs)."""
        import numpy as np

        from daemon.core.effect import EffectControls, EffectEngine, EffectSettings
        from daemon.core.model import EncoderModel

        settings = getattr(mapping, "effect", None) or EffectSettings()
        fx = EffectEngine(model, EncoderModel(model), sample_rate=int(round(self.audio.samplerate)),
                          settings=settings)
        self.effect = fx
        self.engine = EffectControls(fx)
        log.info("effect: latency %d samples (%.1f ms at %g Hz), split %s, gains %s",
                 fx.latency_samples, 1e3 * fx.latency_samples / self.audio.samplerate,
                 self.audio.samplerate, settings.split, settings.gains)
        self._build_mapper(model, mapping)
        inp = self.audio.input

        def render(n, out):
            return fx.process(inp[:n], out)

        warm = np.zeros(4 * model.hop_length, dtype=np.float32)
        for _ in range(3):
            fx.process(warm)
        fx.process(np.zeros(fx.latency_samples))  # back to silence before the stream opens
        self.audio.set_source(render)

    def _build_mapper(self, model, mapping) -> None:
        """Mapper + program switcher + hot reloader."""
        from daemon.control.mapper import Mapper

        path = self.opts.mapping
        self.mapper = Mapper(mapping, self.engine)
        self.programs = ProgramSwitcher(self.mapper, self.engine)
        if path:
            log.info("mapping %s", path)
            self.reloader = _make_reloader(path, model, self.mapper)
        self._coalesce = _coalesce_predicate(self.mapper)

    # -- running ------------------------------------------------------------------
    def start(self) -> None:
        """Open MIDI, then the audio stream (muted, fading in); start the program worker."""
        self.programs.start()
        self.midi.start()
        self.audio.start(fade_in=True)
        log.info(
            "audio: %s (%s), %g Hz, block %s, %d ch, output latency %.1f ms; ready in %.2f s",
            self.audio.device["name"], self.audio.device["hostapi"], self.audio.samplerate,
            self.opts.blocksize or "host", self.audio.channels, 1e3 * self.audio.output_latency,
            time.monotonic() - self._t_start,
        )
        self._heartbeat(b"R")
        console = _console()
        if console is not None:  # start-up INFO lines were held back until the sound runs
            console.flush_held()
        gc.collect()
        gc.freeze()
        gc.disable()

    def request_stop(self, *_args) -> None:
        self.stop_requested = True

    def request_reload(self, *_args) -> None:
        self.reload_requested = True

    def _on_midi_reconnect(self, name: str) -> None:
        rearm = getattr(self.mapper, "rearm", None)
        if rearm is not None:
            try:
                rearm()
            except Exception as exc:  # a mapper bug must not stop the instrument
                log.warning("re-arming soft takeover failed: %s", exc)

    def _heartbeat(self, kind: bytes) -> None:
        if self.link is None:
            return
        c = self.audio.counters if self.audio else None
        line = b"%s %d %d %d\n" % (kind, c.callbacks if c else 0, c.xruns if c else 0,
                                   c.underruns if c else 0)
        if not self.link.send(line):
            # The supervisor is gone: an orphan would hold the audio device, so stop.
            log.warning("supervisor gone; stopping")
            self.link = None
            self.stop_requested = True

    def on_supervisor_gone(self) -> None:
        """From the link's watcher thread: the supervisor died (its end of the channel closed)."""
        log.warning("supervisor gone; stopping")
        self.stop_requested = True

    def loop(self) -> int:
        """Control loop until a stop is requested or the audio watchdog fires."""
        period = self.opts.control_period_s
        midi, mapper, audio, osc = self.midi, self.mapper, self.audio, self.osc
        tick = getattr(mapper, "tick", None)  # LFOs (daemon.control.modulation)
        next_tick = time.monotonic() + RELOAD_POLL_S
        last_callbacks, last_advance = audio.counters.callbacks, time.monotonic()
        last_xruns = audio.counters.xruns
        started = time.monotonic()  # dropouts while the stream settles do not count (auto)
        ticks = 0
        while not self.stop_requested:
            time.sleep(period)
            if midi.pump() or midi.queue:
                for msg in midi.drain(coalesce=self._coalesce):
                    try:
                        mapper.handle(msg)
                    except Exception as exc:  # the Mapper never raises by contract; belt and braces
                        log.warning("MIDI %s ignored: %s", msg, exc)
            if osc is not None:
                osc.poll()
                osc.send_state()
            if tick is not None:
                tick()
            if self.reload_requested:
                self.reload_requested = False
                self._reload(forced=True)
            now = time.monotonic()
            if now < next_tick:
                continue
            # Every RELOAD_POLL_S: the stream (a dead audio server is seen here within a
            # quarter second; the callback-count watchdog below is the fallback) and the
            # mapping file (hot reload within a second).
            next_tick = now + RELOAD_POLL_S
            ticks += 1
            if audio.stream_lost:
                log.error("audio stream lost (the audio server went away); exiting for a restart")
                return EXIT_WATCHDOG
            self._reload(forced=False)
            if ticks % 4:
                if not midi.open_ports:  # nothing to play from yet: look for it 4 times a second
                    midi.poll()
                continue
            # Every second: ports, heartbeat, watchdog, status, garbage.
            midi.poll()
            self._heartbeat(b"H")
            cb = audio.counters.callbacks
            xr = audio.counters.xruns
            if (xr - last_xruns >= AUTO_AHEAD_XRUNS and now - started >= AUTO_AHEAD_GRACE_S
                    and audio.request_ahead()):
                log.warning("audio: %d dropouts in the last second; rendering %d frames ahead from "
                            "now on (+%.0f ms latency; --render-ahead 0 keeps the lowest latency)",
                            xr - last_xruns, audio.auto_ahead, 1e3 * audio.auto_ahead / audio.samplerate)
            last_xruns = xr
            if cb != last_callbacks:
                last_callbacks, last_advance = cb, now
            elif now - last_advance > self.opts.watchdog_s:
                log.error("audio callbacks stopped %.1f s ago (audio server gone?); exiting for a restart",
                          now - last_advance)
                return EXIT_WATCHDOG
            if audio.last_error:
                log.error("render failed, played silence: %s", audio.last_error)
                audio.last_error = None
            if self.opts.status:
                self._print_status()
            gc.collect(1)
            if ticks % 120 == 0:
                gc.collect()
        return EXIT_OK

    def _reload(self, *, forced: bool) -> None:
        if self.reloader is None:
            if forced:
                log.info("SIGHUP: no mapping file to reload")
            return
        try:  # the reloader logs what it did, and refuses invalid edits itself
            if forced:
                self.reloader.reload_now()
            else:
                self.reloader.poll()
        except Exception as exc:  # never let a reload bug stop the instrument
            log.warning("mapping reload failed, keeping the old mapping: %s", exc)

    def status_line(self) -> str:
        a = self.audio.counters
        stats = getattr(self.engine, "stats", None)
        voices = _stat(stats, "active_voices", "voices")
        z = getattr(self.mapper, "latents", None)
        zs = " ".join(f"{v:+.2f}" for v in z) if z is not None else "-"
        # CPU: the engine's own render time over the audio time (mean, worst hop; ~1 s)
        load, peak = _stat(stats, "cpu_load"), _stat(stats, "cpu_peak")
        cpu = (f"{100 * load:4.1f}% (hop max {100 * peak:.0f}%)" if load is not None and peak is not None
               else f"{100 * self.audio.cpu_load:4.1f}%")
        return (
            f"voices {voices if voices is not None else '-'} | cpu {cpu} | "
            f"xruns {a.xruns} | underruns {a.underruns + a.late} | midi {self.midi.counters.received} "
            f"(dropped {self.midi.counters.dropped}) | z {zs}"
        )

    def _print_status(self) -> None:
        line = self.status_line()
        console = _console()
        if console is not None:  # never runs into a log record (daemon/app/console.py)
            console.status(line)
            return
        if sys.stderr.isatty():
            sys.stderr.write("\r\x1b[2K" + line)
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def shutdown(self) -> None:
        """Fade out, close audio (bounded time), close MIDI."""
        gc.enable()
        if self.programs is not None:
            self.programs.close()
        if self.audio is not None:
            self.audio.fade_out()
            self.audio.wait_faded_out(max(0.3, 4 * self.opts.fade_s))
            if not self.audio.close(timeout=1.0):
                log.warning("audio stream did not close (audio server gone?)")
        if self.midi is not None:
            self.midi.close()
        if self.osc is not None:
            self.osc.close()
        console = _console()
        if console is not None:
            console.end_status()
        elif self.opts.status and sys.stderr.isatty():
            sys.stderr.write("\n")


def _stat(stats, *names):
    if stats is None:
        return None
    for n in names:
        if isinstance(stats, dict) and n in stats:
            return stats[n]
        if hasattr(stats, n):
            return getattr(stats, n)
    return None


def _coalesce_predicate(mapper):
    """``(channel, control) -> bool``: may CC values be coalesced (absolute CCs only)?"""
    fn = getattr(mapper, "is_absolute_cc", None)
    if fn is None:
        return None  # unknown: keep every message (correct, just slower under a flood)
    return fn


def _make_osc(opts: RunOptions, mapping, mapper, engine):
    """The OSC server the command line or the mapping's 'osc:' section asks for, or None."""
    cfg = getattr(mapping, "osc", None)
    if opts.osc_port is None and cfg is None:
        return None
    from daemon.adapters.osc import DEFAULT_PORT, LOOPBACK, OscServer

    port = opts.osc_port if opts.osc_port is not None else cfg.port
    host = opts.osc_host or (cfg.host if cfg is not None else LOOPBACK)
    try:
        return OscServer(mapper, engine, host=host, port=port or DEFAULT_PORT,
                         feedback=cfg.feedback if cfg is not None else None,
                         feedback_rate=cfg.feedback_rate if cfg is not None else 20.0)
    except OSError as exc:
        raise CanneError(str(exc)) from None


class ProgramSwitcher:
    """Program changes: load the program's model and mapping, then switch engine and Mapper.

    It attaches itself as the Mapper's ``on_program``: the Mapper finds the program in its
    ``programs:`` table and calls :meth:`request` from ``handle`` (the control thread,
    Mapper lock held). Then

    1. the model is loaded (``model_loader``, default ``daemon.core.model.DecoderModel``; a
       model played before is reused) and the mapping re-validated against it
       (``daemon.control.mapping.load_mapping``), with no lock held (the slow part);
    2. under :attr:`daemon.control.mapper.Mapper.lock`: ``engine.set_model`` (the engine
       crossfades at a hop boundary: no audio gap) when the model differs, then
       ``mapper.set_mapping``, which re-sends the Mapper's latent (the one latent target)
       for the new model. No MIDI message is handled between the two.

    Not started, it switches inline inside ``request`` (deterministic, for ``canne
    render``). :meth:`start` starts its worker thread (``canne-program``; the instrument
    does, in :meth:`Instrument.start`): requests then return at once and a newer request
    replaces one not yet started. A failed load or switch is counted (``errors``) and
    logged in one line; the current model and mapping stay.
    """

    def __init__(self, mapper, engine, *, model_loader=None):
        self.mapper = mapper
        self.engine = engine
        self._model_loader = model_loader or _load_decoder
        self._models: dict = {}  # resolved path -> model loaded (or played) before
        self._remember(mapper.model)
        self._cond = threading.Condition()
        self._pending = None
        self._closed = False
        self._thread: threading.Thread | None = None
        self._idle = threading.Event()
        self._idle.set()
        self.switches = 0
        self.errors = 0
        mapper.on_program = self.request

    def start(self) -> "ProgramSwitcher":
        """Start the worker thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="canne-program", daemon=True)
            self._thread.start()
        return self

    def close(self, timeout: float = 1.0) -> None:
        """Stop the worker thread (a switch in progress finishes first, up to ``timeout``)."""
        with self._cond:
            self._closed = True
            self._pending = None
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    def request(self, prog) -> None:
        """Switch to ``prog`` (a ``daemon.control.mapping.Program``): inline, or on the worker."""
        if self._thread is None:
            self._switch(prog)
            return
        with self._cond:
            self._pending = prog  # a newer request replaces one not yet started
            self._idle.clear()
            self._cond.notify()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until requested switches are done (tests, offline use)."""
        return self._idle.wait(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._closed:
                    self._idle.set()
                    self._cond.wait()
                if self._closed:
                    self._idle.set()
                    return
                prog, self._pending = self._pending, None
            self._switch(prog)

    def _remember(self, model) -> None:
        path = getattr(model, "path", None)
        if path is not None:
            p = Path(path)
            self._models[p.resolve()] = model
            if p.name == "decoder.onnx":
                self._models[p.parent.resolve()] = model

    def _switch(self, prog) -> None:
        """Load (no lock held), then switch engine and Mapper under the Mapper's lock."""
        from daemon.control.mapping import load_mapping

        mapper = self.mapper
        current = mapper.mapping
        try:
            model = current.model
            if prog.model is not None:
                model = self._models.get(prog.model) or self._model_loader(prog.model)
            path = prog.mapping or current.path
            if path is None:
                raise CanneError("the current mapping has no file to re-validate against the new model")
            new = load_mapping(path, model)
        except Exception as exc:
            self.errors += 1
            log.warning("program %d (%s) not switched, keeping %r: %s", prog.number, prog.name, current.name, exc)
            return
        with mapper.lock:
            try:
                if model is not mapper.model:
                    self.engine.set_model(model)
                mapper.set_mapping(new)
            except Exception as exc:  # the worker must not die (wait_idle would hang)
                self.errors += 1
                log.warning("program %d (%s): the engine refused the switch: %s", prog.number, prog.name, exc)
                return
            self._remember(model)
            self.switches += 1
        log.info("program %d: %s (mapping %r)", prog.number, prog.name, new.name)


def _load_decoder(path):
    from daemon.core.model import DecoderModel

    return DecoderModel(path)


def _make_reloader(path, model, mapper):
    """The mapping helper's hot reloader (polled from the control loop, no thread of its own)."""
    from daemon.control.reload import MappingReloader

    return MappingReloader(path, model, mapper)


def _console():
    from daemon.app import console

    return console.get()


def startup_failed(exc: BaseException, logger: logging.Logger = log) -> None:
    """One line for an unexpected exception before the first sound (the traceback at DEBUG)."""
    logger.error("start-up failed: %s: %s (run with -v DEBUG for the traceback)",
                 type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
    logger.debug("start-up traceback", exc_info=exc)


def _wait_for_device(device, inst, wait_s: float | None = None) -> bool:
    """A restarted instrument waits here for its audio device (the audio server coming
    back) instead of exiting at once: the check is cheap (PortAudio re-scanned every
    ``DEVICE_POLL_S``), while a new process costs its whole start-up (about a second).
    False after ``wait_s`` (default ``DEVICE_WAIT_S``) without one, or when asked to stop."""
    from daemon.adapters.audio_output import find_output_device, rescan_devices

    deadline = time.monotonic() + (DEVICE_WAIT_S if wait_s is None else wait_s)
    said = False
    while True:
        try:
            find_output_device(device)
            return True
        except DeviceError as exc:
            if not said:
                log.warning("%s; waiting for it (up to %.0f s)", exc, DEVICE_WAIT_S)
                said = True
        if inst.stop_requested or time.monotonic() >= deadline:
            return False
        time.sleep(DEVICE_POLL_S)
        rescan_devices()


def run_instrument(opts: RunOptions, *, link=None, after_sound: bool = False) -> int:
    """Run the instrument until SIGINT/SIGTERM; return the process exit code.

    ``link``: the supervisor channel (``daemon.app.supervisor.ChildLink``), or None.
    ``after_sound``: this process restarts an instrument that has played; a
    missing device then means "the audio server is not back yet" (exit 75, the
    supervisor retries) instead of a configuration error (exit 2, never retried).
    Any other failure before the first sound is one ``ERROR`` line and exit 2.
    """
    _setup_realtime_python()
    inst = Instrument(opts, link=link)
    signal.signal(signal.SIGTERM, inst.request_stop)
    signal.signal(signal.SIGINT, inst.request_stop)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, inst.request_reload)
    if link is not None:
        link.start_watcher(on_stop=inst.request_stop, on_reload=inst.request_reload,
                           on_gone=inst.on_supervisor_gone)
    try:
        try:
            inst.build()
        except DeviceError:
            # A restarted instrument whose audio server is not back (yet): wait for it here.
            # Only now: the model and the imports come first, so that after a crash the
            # audio server has had that time to clear the dead process's clients (JACK
            # answers nothing for about 0.5 s meanwhile) before it is asked anything.
            if not after_sound:
                raise
            if not _wait_for_device(opts.device, inst):
                return EXIT_WATCHDOG
            inst.build()
        if inst.stop_requested:
            return EXIT_OK
        inst.start()
    except DeviceError as exc:
        if after_sound:
            log.warning("%s (retrying)", exc)
            code = EXIT_WATCHDOG
        else:
            log.error("%s", exc)
            code = EXIT_CONFIG
        _shutdown_quietly(inst)
        return code
    except CanneError as exc:
        log.error("%s", exc)
        _shutdown_quietly(inst)
        return EXIT_CONFIG
    except Exception as exc:  # a bug or a broken install: one line, not a traceback loop
        startup_failed(exc)
        _shutdown_quietly(inst)
        return EXIT_CONFIG
    code = EXIT_OK
    try:
        code = inst.loop()
    finally:
        if code == EXIT_WATCHDOG:
            # PortAudio calls would block forever: leave without touching the stream.
            logging.shutdown()
            os._exit(EXIT_WATCHDOG)
        inst.shutdown()
    log.info("stopped")
    return code


def _shutdown_quietly(inst: Instrument) -> None:
    try:
        inst.shutdown()
    except Exception as exc:
        log.debug("shutdown after a failed start: %r", exc)


def learn_from_midi(*, target: str, mapping_path: str, midi_api: str = "auto", patterns=(),
                    virtual: bool = True, timeout_s: float = 60.0, model_path: str | None = None,
                    source: str | None = None) -> int:
    """``canne learn``: open the MIDI inputs, wait for the next CC, write the binding.

    The binding logic and the YAML edit are ``daemon.control.learn``'s; this only wires
    the ports to it. Returns the exit code.
    """
    import collections

    from daemon.control.learn import learn_binding, parse_target
    from daemon.adapters.midi_input import MidiInput

    model = None
    if model_path and Path(model_path).exists():
        from daemon.core.model import DecoderModel

        model = DecoderModel(model_path)
    parse_target(target, getattr(model, "latent_dim", None))  # refuse a bad target before waiting
    midi = MidiInput(api=midi_api, patterns=patterns, virtual=virtual)
    midi.start()
    pending: collections.deque = collections.deque()
    next_poll = [time.monotonic() + 1.0]

    def receive(timeout: float):
        deadline = time.monotonic() + timeout
        while True:
            if not pending:
                pending.extend(midi.drain())
            if pending:
                return pending.popleft()
            now = time.monotonic()
            if now >= next_poll[0]:
                midi.poll()
                next_poll[0] = now + 1.0
            if now >= deadline:
                return None
            time.sleep(0.002)

    ports = ", ".join(midi.open_ports) or "none yet"
    print(f"move the control to bind to {target!r} (listening on: {ports}"
          f"{'; virtual port ' + midi.virtual_name if midi._virtual is not None else ''}) ...",
          file=sys.stderr, flush=True)
    try:
        binding = learn_binding(mapping_path, target, receive, timeout=timeout_s, model=model, source=source)
        # Said before the ports close: the file is written, whatever the teardown does.
        print(f"{binding.describe()} -> written to {mapping_path}", file=sys.stderr)
        if binding.replaced:
            n = len(binding.replaced)
            print(f"replaced {n} control{'s' if n > 1 else ''} that drove {target} before (removed from the file):",
                  file=sys.stderr)
            for item in binding.replaced:
                print(f"  {item}", file=sys.stderr)
    finally:
        midi.close()
    return EXIT_OK
