"""MIDI input adapter: python-rtmidi ports → a bounded queue of raw messages.

The only module of ``daemon`` that imports ``rtmidi``. It keeps

- one persistent *monitor* ``rtmidi.MidiIn`` whose ``get_ports()`` is polled
  (every 1–2 s, by the caller) to notice controllers leaving and coming back.
  ``mido.get_input_names()`` is never called: each call creates a new JACK/ALSA
  client and, under a running JACK stream, stalls the server (see
  ``docs/daemon.md``, *Live audio in Python*);
- one ``rtmidi.MidiIn`` per opened source port, plus one virtual input port
  (named ``CANNe``) where the OS allows it (not on Windows); on JACK, instead, the
  one input every source is connected to (below).

No Python runs on the MIDI backend's thread. With the JACK API that thread is
JACK's process thread: a Python callback there must take the GIL, and while the
audio callback or the control loop holds it, the MIDI client misses its
deadline and the whole JACK graph xruns (measured in a 1 kHz CC flood: 262 of
~700 JACK xruns were the rtmidi client "not finished"). So no callback is set:
rtmidi queues incoming messages in its own C++ ring (``queue_size_limit``),
clock, active sensing and sysex are filtered in C before they are queued, and
the control thread moves them with ``get_message()`` (:meth:`MidiInput.pump`,
called by :meth:`MidiInput.drain`) into a bounded ``collections.deque``.
Parsing (``mido``), validation and coalescing happen in ``drain``.

JACK: no rtmidi client is ever created while the instrument plays. python-rtmidi
opens a JACK client holding the GIL while it waits on the server, and the server
waits for the audio callback, which needs the GIL: a controller plugged back in
mid-show stalled the control loop until the supervisor's watchdog restarted the
instrument. So with the JACK API one input (the *hub*, ``CANNe:in``, the virtual
port) is opened at start-up, before the audio stream, and source ports are
*connected* to it through a JACK-Client client (system libjack via cffi, which
releases the GIL; never activated, no process callback). Other APIs open one
``rtmidi.MidiIn`` per source port, as below.

Overflow policy: the deque has a fixed length; under a flood the oldest raw
messages are dropped (counted in ``dropped``) so that the newest controller
state always wins and memory stays bounded. rtmidi's own ring, emptied every
2 ms by the control loop, only fills if the control thread stalls; then rtmidi
drops the newest messages.
"""

from __future__ import annotations

import collections
import logging
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable

import mido

from daemon.errors import DeviceError

log = logging.getLogger(__name__)

#: Names accepted by ``--midi-api`` (besides ``auto``) → rtmidi API attribute name.
API_NAMES = {
    "jack": "API_UNIX_JACK",
    "alsa": "API_LINUX_ALSA",
    "coremidi": "API_MACOSX_CORE",
    "windows": "API_WINDOWS_MM",
}

#: Capacity of rtmidi's own C++ queue per input (messages).
RTMIDI_QUEUE = 8192

#: Seconds the JACK graph is given to settle before the hub closes (see MidiInput.close).
HUB_SETTLE_S = 0.1

#: Port-name fragments that are never a hardware controller (default selection skips them).
NOT_HARDWARE = ("through", "canne", "rtmidi", "portaudio")


def _rtmidi():
    import rtmidi  # imported here only: the adapter owns the dependency

    return rtmidi


def api_candidates(api: str) -> list[str]:
    """Return the API names to try, in order, for ``--midi-api API``.

    ``auto`` means: JACK if a JACK server is running, else the platform's
    native API (ALSA on Linux, CoreMIDI on macOS, Windows MM on Windows).
    """
    if api != "auto":
        if api not in API_NAMES:
            raise DeviceError(
                f"--midi-api {api!r} is not known; use one of auto, {', '.join(API_NAMES)}"
            )
        return [api]
    if sys.platform.startswith("linux"):
        return ["jack", "alsa"]
    if sys.platform == "darwin":
        return ["coremidi", "jack"]
    if sys.platform.startswith("win"):
        return ["windows"]
    return ["jack", "alsa"]


def open_monitor(api: str, client_name: str = "CANNe-monitor"):
    """Open the persistent port-listing ``MidiIn`` for ``api`` (``auto`` allowed).

    Returns ``(midi_in, api_name)``. Raises :class:`DeviceError` naming every
    API tried and why it failed.
    """
    rtmidi = _rtmidi()
    compiled = set(rtmidi.get_compiled_api())
    reasons = []
    for name in api_candidates(api):
        const = getattr(rtmidi, API_NAMES[name], None)
        if const is None or const not in compiled:
            reasons.append(f"{name}: not compiled into python-rtmidi")
            continue
        try:
            return rtmidi.MidiIn(const, name=client_name), name
        except Exception as exc:  # rtmidi raises its own SystemError subclasses
            reasons.append(f"{name}: {exc}")
    raise DeviceError(
        "no MIDI system could be opened (" + "; ".join(reasons) + "); start the JACK server "
        "or load the ALSA sequencer (modprobe snd-seq), or choose one with --midi-api"
    )


def select_ports(ports: Iterable[str], patterns: Iterable[str]) -> list[str]:
    """Pick the port names to open.

    With ``patterns``, a port is chosen when any pattern is a case-insensitive
    substring of its name (ALSA appends client numbers, Windows appends ids, so
    exact names are fragile). Without patterns, every port that looks like
    hardware is chosen (not ``Midi Through``, not our own or other RtMidi
    clients).
    """
    ports = list(ports)
    pats = [p.lower() for p in patterns if p]
    if pats:
        return [p for p in ports if any(s in p.lower() for s in pats)]
    return [p for p in ports if not any(s in p.lower() for s in NOT_HARDWARE)]


@dataclass
class MidiCounters:
    """Plain integer counters, written by one thread each (no locks needed)."""

    received: int = 0  # raw messages taken from rtmidi
    dropped: int = 0  # raw messages lost to the bounded queue (oldest first)
    invalid: int = 0  # raw messages mido could not parse
    coalesced: int = 0  # CC messages replaced by a newer value of the same CC in one drain
    reconnects: int = 0  # source ports (re)opened after start
    disconnects: int = 0  # source ports that vanished


@dataclass
class _OpenPort:
    name: str
    midi_in: object


class MidiInput:
    """MIDI sources → bounded raw queue → parsed ``mido.Message`` batches.

    Parameters
    ----------
    api : str
        ``auto``, ``jack``, ``alsa``, ``coremidi`` or ``windows``.
    patterns : sequence of str
        Case-insensitive name substrings of the source ports to open; empty =
        all hardware inputs.
    virtual : bool
        Also open a virtual input port named ``virtual_name`` (ignored on
        Windows, which has none).
    maxlen : int
        Capacity of the raw queue (messages).

    Threading: :meth:`poll`, :meth:`pump` and :meth:`drain` are called from one
    control thread; rtmidi's backend thread runs no Python.
    """

    def __init__(
        self,
        *,
        api: str = "auto",
        patterns: Iterable[str] = (),
        virtual: bool = True,
        virtual_name: str = "CANNe",
        maxlen: int = 4096,
    ) -> None:
        self.requested_api = api
        self.patterns = tuple(patterns)
        self.want_virtual = virtual and not sys.platform.startswith("win")
        self.virtual_name = virtual_name
        self.maxlen = int(maxlen)
        self.queue: collections.deque = collections.deque(maxlen=self.maxlen)
        self.counters = MidiCounters()
        self.api: str | None = None
        self._monitor = None
        self._virtual = None
        self._open: dict[str, _OpenPort] = {}
        self._hub = None  # JACK: the one rtmidi input every source is connected to
        self._hub_port: str | None = None
        self._jack = None  # JACK: a JACK-Client client that only connects ports
        self._inputs: list = []  # every armed rtmidi.MidiIn, pumped by the control thread
        self._lock = threading.Lock()  # guards open/close only
        self.on_reconnect: Callable[[str], None] | None = None

    # -- life cycle -------------------------------------------------------
    def start(self) -> None:
        """Open the monitor, the virtual port and every matching source port."""
        self._monitor, self.api = open_monitor(self.requested_api)
        log.info("MIDI API: %s", self.api)
        if self.api == "jack" and self._open_hub():
            self.poll(initial=True)
            return
        if self.want_virtual:
            rtmidi = _rtmidi()
            try:
                vin = rtmidi.MidiIn(self._monitor.get_current_api(), name=self.virtual_name,
                                    queue_size_limit=RTMIDI_QUEUE)
                self._arm(vin)
                vin.open_virtual_port("in" if self.api == "jack" else self.virtual_name)
                self._virtual = vin
                log.info("virtual MIDI input port %r open", self.virtual_name)
            except Exception as exc:
                log.warning("virtual MIDI port %r not available: %s", self.virtual_name, exc)
        self.poll(initial=True)

    def _open_hub(self) -> bool:
        """JACK: the input every source is connected to, and the client that connects.
        False (per-port inputs then) when JACK-Client cannot be loaded or the port fails."""
        try:
            import jack
        except Exception as exc:  # JACK-Client missing or no system libjack
            log.info("MIDI: JACK-Client not available (%s); one MIDI client per port", exc)
            return False
        rtmidi = _rtmidi()
        client = hub = None
        try:
            client = jack.Client(f"{self.virtual_name}-connect", no_start_server=True)
            before = set(p.name for p in client.get_ports(is_midi=True, is_input=True))
            hub = rtmidi.MidiIn(self._monitor.get_current_api(), name=self.virtual_name,
                                queue_size_limit=RTMIDI_QUEUE)
            hub.open_virtual_port("in")
            new = [p.name for p in client.get_ports(is_midi=True, is_input=True)
                   if p.name not in before and p.name.lower().startswith(self.virtual_name.lower())]
            if len(new) != 1:
                raise RuntimeError(f"cannot tell the input port among {new or 'none'}")
        except Exception as exc:
            log.warning("MIDI: one JACK input for every source not available (%s); "
                        "one MIDI client per port", exc)
            for close in (getattr(hub, "delete", None), getattr(client, "close", None)):
                try:
                    if close is not None:
                        close()
                except Exception:
                    pass
            return False
        self._arm(hub)
        self._hub, self._hub_port, self._jack = hub, new[0], client
        if self.want_virtual:
            self._virtual = hub
            log.info("virtual MIDI input port %r open", self._hub_port)
        return True

    def close(self) -> None:
        """Close every port (idempotent).

        JACK: the hub goes first, on a quiet graph. libjack's notification thread walks
        the client's port list to recompute latencies after every graph change (a
        connection, another client closing) while ``jack_port_unregister`` edits that
        list on the calling thread, unlocked (jack2 issue #216): closing the monitor and
        then the hub at once crashed ``canne learn`` with SIGSEGV, about one close in 380
        in a stress test. So every connection into the hub is cut first, the
        notifications that causes are let through, then the hub (the only client of ours
        with a port) closes before anything else of ours changes the graph.
        """
        with self._lock:
            for port in list(self._open.values()):
                self._close_port(port)
            self._open.clear()
            self._inputs = []
            self._quiesce_hub()
            # on JACK the virtual port is the hub: one object, closed once, first
            objs = ([self._hub] if self._hub is not None else []) + [
                o for o in (self._virtual, self._monitor) if o is not None and o is not self._hub]
            for obj in objs:
                try:
                    obj.close_port()
                    obj.delete()
                except Exception:
                    pass
            self._virtual = self._hub = self._monitor = None
            if self._jack is not None:
                try:
                    self._jack.close()
                except Exception:
                    pass
                self._jack = None

    def _quiesce_hub(self) -> None:
        """JACK: cut every connection into the hub, then let the graph settle (see close)."""
        if self._jack is None or self._hub_port is None:
            return
        try:
            sources = [p.name for p in self._jack.get_all_connections(self._hub_port)]
        except Exception:
            sources = []
        for name in sources:
            try:
                self._jack.disconnect(name, self._hub_port)
            except Exception:
                pass  # gone already
        # The server sends the latency notifications of a graph change within a cycle or
        # two (1-42 ms); a loaded machine takes longer. This runs once, at shutdown.
        time.sleep(HUB_SETTLE_S)

    @property
    def open_ports(self) -> list[str]:
        """Names of the source ports currently open (not the virtual port)."""
        return sorted(self._open)

    def available_ports(self) -> list[str]:
        """Source ports the monitor sees now (one cheap call, no new client)."""
        if self._monitor is None:
            return []
        try:
            return list(self._monitor.get_ports())
        except Exception as exc:
            log.warning("listing MIDI ports failed: %s", exc)
            return []

    # -- reconnection ------------------------------------------------------
    def poll(self, *, initial: bool = False) -> tuple[list[str], list[str]]:
        """Compare the monitor's port list with the open ports; open/close.

        Returns ``(opened, closed)`` port names. Call every 1–2 s.
        """
        ports = self.available_ports()
        own = {f"{self.virtual_name}:in".lower(), self.virtual_name.lower()}
        if self._hub_port:
            own.add(self._hub_port.lower())
        ports = [p for p in ports if p.lower() not in own]
        wanted = select_ports(ports, self.patterns)
        opened, closed = [], []
        with self._lock:
            for name in list(self._open):
                if name not in ports:
                    self._close_port(self._open.pop(name))
                    self.counters.disconnects += 1
                    closed.append(name)
                    log.warning("MIDI input %r disappeared; waiting for it to return", name)
            for name in wanted:
                if name in self._open:
                    continue
                port = self._open_port(name, ports.index(name))
                if port is None:
                    continue
                self._open[name] = port
                opened.append(name)
                if not initial:
                    self.counters.reconnects += 1
                    log.warning("MIDI input %r connected", name)
                else:
                    log.info("MIDI input %r open", name)
        if initial and self.patterns and not wanted:
            log.warning(
                "no MIDI input matches %s (available: %s); will connect when one appears",
                ", ".join(repr(p) for p in self.patterns),
                ", ".join(repr(p) for p in ports) or "none",
            )
        if opened and not initial and self.on_reconnect is not None:
            for name in opened:
                self.on_reconnect(name)
        return opened, closed

    def _arm(self, midi_in) -> None:
        midi_in.ignore_types(sysex=True, timing=True, active_sense=True)
        self._inputs = [*self._inputs, midi_in]  # copy-on-write: pump() iterates a snapshot

    def pump(self) -> int:
        """Move every message rtmidi has queued into the bounded deque; return how many."""
        q, c, maxlen = self.queue, self.counters, self.maxlen
        n = 0
        for midi_in in self._inputs:
            while True:
                try:
                    event = midi_in.get_message()
                except Exception:
                    break  # a port closed under us; the next poll() tidies up
                if event is None:
                    break
                if len(q) >= maxlen:
                    c.dropped += 1
                q.append(event[0])
                n += 1
        c.received += n
        return n

    def _open_port(self, name: str, index: int) -> _OpenPort | None:
        if self._jack is not None:  # JACK: connect the source to the hub (no new client)
            try:
                self._jack.connect(name, self._hub_port)
            except Exception as exc:
                try:  # already connected (by us before, or by hand) is fine
                    linked = self._hub_port in [p.name for p in self._jack.get_all_connections(name)]
                except Exception:
                    linked = False
                if not linked:
                    log.warning("cannot connect MIDI input %r: %s", name, exc)
                    return None
            return _OpenPort(name=name, midi_in=None)
        rtmidi = _rtmidi()
        midi_in = None
        try:
            midi_in = rtmidi.MidiIn(self._monitor.get_current_api(), name=self.virtual_name,
                                    queue_size_limit=RTMIDI_QUEUE)
            self._arm(midi_in)
            midi_in.open_port(index, name="in")
            return _OpenPort(name=name, midi_in=midi_in)
        except Exception as exc:
            log.warning("cannot open MIDI input %r: %s", name, exc)
            if midi_in is not None:
                # Disarm and destroy it: python-rtmidi never frees the C++ object on its
                # own, so each failed retry (every poll) would leave one more active
                # JACK/ALSA client behind. RtMidi has already registered our port.
                self._close_port(_OpenPort(name=name, midi_in=midi_in))
            return None

    def _close_port(self, port: _OpenPort) -> None:
        if port.midi_in is None:  # JACK: connected to the hub
            if self._jack is not None:
                try:
                    self._jack.disconnect(port.name, self._hub_port)
                except Exception:
                    pass  # the source is gone, and its connection with it
            return
        self._inputs = [m for m in self._inputs if m is not port.midi_in]
        try:
            port.midi_in.close_port()
            port.midi_in.delete()
        except Exception:
            pass

    # -- parsing -------------------------------------------------------------
    def drain(
        self,
        *,
        max_messages: int = 4096,
        coalesce: Callable[[int, int], bool] | None = None,
    ) -> list[mido.Message]:
        """Pop up to ``max_messages`` raw messages and parse them.

        Invalid bytes are dropped (counted in ``invalid``); messages are passed on as
        sent (a ``note_on`` with velocity 0 is read as a note-off by the Mapper). When ``coalesce(channel, control)`` is
        true for a control change, only the newest value of that controller in
        this batch is kept (absolute knobs under a 1 kHz flood cost one mapping
        call per batch instead of hundreds); relative encoders must return
        false so no increment is lost.
        """
        self.pump()
        q = self.queue
        out: list[mido.Message] = []
        last_cc: dict[tuple[int, int], int] = {}
        n = 0
        while q and n < max_messages:
            data = q.popleft()
            n += 1
            try:
                msg = mido.Message.from_bytes(data)
            except (ValueError, TypeError, IndexError):
                self.counters.invalid += 1
                continue
            if msg.type == "control_change" and coalesce is not None and coalesce(
                msg.channel, msg.control
            ):
                key = (msg.channel, msg.control)
                prev = last_cc.get(key)
                if prev is not None:
                    out[prev] = None  # type: ignore[call-overload]
                    self.counters.coalesced += 1
                last_cc[key] = len(out)
            out.append(msg)
        if last_cc:
            out = [m for m in out if m is not None]
        return out


def list_midi_inputs() -> list[tuple[str, list[str]]]:
    """``[(api_name, [port names])]`` for every compiled-in API that can be opened.

    For ``canne devices``; creates one short-lived client per API.
    """
    rtmidi = _rtmidi()
    result = []
    for name, attr in API_NAMES.items():
        const = getattr(rtmidi, attr, None)
        if const is None or const not in rtmidi.get_compiled_api():
            continue
        try:
            mi = rtmidi.MidiIn(const, name="CANNe-devices")
        except Exception as exc:
            result.append((name, [f"(unavailable: {exc})"]))
            continue
        try:
            result.append((name, list(mi.get_ports())))
        finally:
            mi.delete()
    return result

