"""OSC in and out (docs/osc.md), with python-osc's parser.

``OscServer(mapper, engine, host=..., port=...)`` binds one UDP socket (127.0.0.1 by
default; any other address only when asked, and logged as reachable from elsewhere)
and has **no thread of its own**: the instrument's control loop calls ``poll()`` every
turn, which drains the datagrams waiting in the socket (at most ``max_packets`` per
call, so a flood cannot hold the loop), parses them and calls the Mapper, exactly as a
MIDI message would. The engine's control API only queues events, so nothing runs on
the audio thread. ``send_state()`` (also from the control loop) sends the state stream
to the feedback address at ``feedback_rate`` per second.

Namespace (numbers may be int or float — Pd sends floats — but not true/false):

====================================  ==========================================
``/canne/latent/<i> f``               neuron *i* to *f* (latent units)
``/canne/latent i f``                 the same, neuron as an argument
``/canne/z f f ...``                  all neurons at once (exactly latent_dim values)
``/canne/note i i``                   note, velocity (0 = note off)
``/canne/param/<name> f``             gain (dB), shift (bins), attack, decay, release,
                                      smoothing (ms), sustain_level (0..1)
``/canne/snapshot/store i``           store the current sound in slot *i*
``/canne/snapshot/save i``            store it and write it into the user's mapping copy
``/canne/snapshot/recall i``          glide to slot *i*
``/canne/morph f``                    0..1 between the two morph slots
``/canne/morph i i f``                ... choosing the two slots
``/canne/all_notes_off``              release every note
====================================  ==========================================

State out (to ``feedback``): ``/canne/state/latents f...`` (the smoothed latent the
decoder plays), ``/canne/state/voices i``, ``/canne/state/level f`` (peak of the last
hop, dBFS). Anything else — bytes that are not OSC, wrong types or argument counts,
unknown addresses, values out of range — is dropped and counted (``counters``),
never raised.
"""

from __future__ import annotations

import errno
import logging
import math
import socket
import struct
import time

from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.osc_packet import OscPacket

__all__ = ["OscServer", "OscCounters", "DEFAULT_PORT", "LOOPBACK"]

log = logging.getLogger("canne.osc")

DEFAULT_PORT = 9000
LOOPBACK = "127.0.0.1"
_MAX_DGRAM = 65536
_PREFIX = "/canne/"
_MAX_ROUTES = 512  # addresses whose handler is cached (only valid ones are)
_F32 = struct.Struct(">f")
_I32 = struct.Struct(">i")


def _fast_parse(data: bytes):
    """(address, args) of a plain message whose arguments are all int32/float32 — what
    controllers send — in a few microseconds; None for anything else (a bundle, other
    types, any irregularity), which then goes through python-osc's full parser."""
    n = len(data)
    if n < 8 or data[0] != 0x2F:  # '/'
        return None
    end = data.find(b"\0")
    if end < 0:
        return None
    tpos = (end // 4 + 1) * 4
    if tpos >= n or data[tpos] != 0x2C:  # ','
        return None
    tend = data.find(b"\0", tpos)
    if tend < 0:
        return None
    pos = (tend // 4 + 1) * 4
    tags = data[tpos + 1:tend]
    if n != pos + 4 * len(tags):
        return None
    args = []
    for t in tags:
        if t == 0x66:  # 'f'
            args.append(_F32.unpack_from(data, pos)[0])
        elif t == 0x69:  # 'i'
            args.append(_I32.unpack_from(data, pos)[0])
        else:
            return None
        pos += 4
    try:
        return data[:end].decode("ascii"), args
    except UnicodeDecodeError:
        return None


class OscCounters:
    """Packets received; messages handled; drops by reason."""

    __slots__ = ("packets", "handled", "malformed", "unknown_address", "bad_args", "sent", "send_errors")

    def __init__(self):
        for k in self.__slots__:
            setattr(self, k, 0)

    @property
    def dropped(self) -> int:
        return self.malformed + self.unknown_address + self.bad_args

    def as_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self.__slots__}
        d["dropped"] = self.dropped
        return d


class _QuietPythonOsc(logging.Filter):
    """python-osc logs a root WARNING per odd bundle element; we count them instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.name == "root" and record.module in ("osc_bundle", "osc_message", "osc_packet"))


_QUIET = _QuietPythonOsc()


class _BadArgs(Exception):
    pass


def _number(v) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _BadArgs(f"expected a number, got {type(v).__name__}")
    f = float(v)
    if not math.isfinite(f):
        raise _BadArgs("not a finite number")
    return f


def _integer(v, lo: int, hi: int) -> int:
    f = _number(v)
    if f != int(f) or not lo <= f <= hi:
        raise _BadArgs(f"expected a whole number {lo}..{hi}")
    return int(f)


def _arity(args, n: int) -> None:
    if len(args) != n:
        raise _BadArgs(f"expected {n} argument(s), got {len(args)}")


class OscServer:
    """One UDP socket polled by the control loop; see the module docstring."""

    def __init__(self, mapper, engine=None, *, host: str = LOOPBACK, port: int = DEFAULT_PORT,
                 feedback: tuple | None = None, feedback_rate: float = 20.0, max_packets: int = 256):
        self.mapper = mapper
        self.engine = engine
        self.counters = OscCounters()
        self.max_packets = int(max_packets)
        self.feedback = tuple(feedback) if feedback else None
        self.feedback_period = 1.0 / max(0.1, float(feedback_rate))
        self._next_state = 0.0
        self.last_error: str | None = None
        self._routes: dict = {}  # address -> handler
        root = logging.getLogger()
        if _QUIET not in root.filters:
            root.addFilter(_QUIET)
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        except (socket.gaierror, UnicodeError, OSError) as exc:
            raise OSError(f"OSC: cannot use address {host!r}: {exc}") from None
        family, _, _, _, addr = infos[0]
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind(addr)
        except OSError as exc:
            sock.close()
            raise OSError(f"OSC: cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        sock.setblocking(False)
        self.sock = sock
        self.host, self.port = sock.getsockname()[:2]
        if self.host not in (LOOPBACK, "::1"):
            log.warning("OSC listening on %s:%d: reachable from other machines on the network", self.host, self.port)
        else:
            log.info("OSC listening on %s:%d", self.host, self.port)
        if self.feedback:
            log.info("OSC state stream to %s:%d, %g/s", self.feedback[0], self.feedback[1], 1.0 / self.feedback_period)

    # ------------------------------------------------------------------ in
    def poll(self, timeout: float = 0.0) -> int:
        """Handle the datagrams waiting (waiting up to ``timeout`` s for the first one).

        Returns the number of OSC messages handled. Never raises."""
        handled = 0
        if timeout > 0.0:
            import select

            try:
                ready, _, _ = select.select([self.sock], [], [], timeout)
            except (OSError, ValueError):
                return 0
            if not ready:
                return 0
        for _ in range(self.max_packets):
            try:
                data = self.sock.recv(_MAX_DGRAM)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:  # e.g. ECONNREFUSED from an earlier send: not ours to raise
                if exc.errno in (errno.ECONNREFUSED, errno.EAGAIN):
                    continue
                self.last_error = str(exc)
                break
            self.counters.packets += 1
            handled += self.handle_packet(data)
        return handled

    def handle_packet(self, data: bytes) -> int:
        """Parse one datagram (a message or a bundle) and apply it; returns messages handled."""
        fast = _fast_parse(data)
        if fast is not None:
            return 1 if self.handle_message(fast[0], fast[1]) else 0
        try:
            packet = OscPacket(data)
            messages = [tm.message for tm in packet.messages]
        except Exception:  # ParseError, and anything else a hostile packet might trigger
            self.counters.malformed += 1
            return 0
        n = 0
        for msg in messages:
            if self.handle_message(msg.address, list(msg.params)):
                n += 1
        return n

    def handle_message(self, address, args: list) -> bool:
        """Apply one message; False (and counted) when it is dropped."""
        c = self.counters
        try:
            if not isinstance(address, str) or not address.startswith(_PREFIX):
                c.unknown_address += 1
                return False
            fn = self._routes.get(address)
            if fn is None:
                fn = self._route(address[len(_PREFIX):])
                if fn is None:
                    c.unknown_address += 1
                    return False
                if len(self._routes) < _MAX_ROUTES:
                    self._routes[address] = fn
            fn(args)
        except (_BadArgs, ValueError, TypeError, IndexError, OverflowError):
            c.bad_args += 1
            return False
        except Exception as exc:  # a bug downstream must not reach the control loop
            c.bad_args += 1
            self.last_error = f"{address}: {type(exc).__name__}: {exc}"
            return False
        c.handled += 1
        return True

    def _route(self, rest: str):
        parts = rest.split("/")
        head = parts[0]
        m = self.mapper
        if head == "latent" and len(parts) == 2:
            i = parts[1]
            if not i.isdigit() or len(i) > 4:
                return None
            return lambda a: (_arity(a, 1), m.set_latent(int(i), _number(a[0])))
        if rest == "latent":
            return lambda a: (_arity(a, 2), m.set_latent(_integer(a[0], 0, 9999), _number(a[1])))
        if rest == "z":
            return lambda a: m.set_latents([_number(v) for v in a])
        if rest == "note":
            return lambda a: (_arity(a, 2), m.note(_integer(a[0], 0, 127), _integer(a[1], 0, 127)))
        if head == "param" and len(parts) == 2 and parts[1]:
            name = parts[1]
            return lambda a: (_arity(a, 1), m.set_param(name, _number(a[0])))
        if head == "snapshot" and len(parts) == 2:
            what = parts[1]
            if what == "store":
                return lambda a: (_arity(a, 1), m.store_snapshot(_integer(a[0], 0, 127)))
            if what == "save":
                return lambda a: (_arity(a, 1), m.store_snapshot(_integer(a[0], 0, 127), save=True))
            if what == "recall":
                return lambda a: (_arity(a, 1), self._check(m.recall_snapshot(_integer(a[0], 0, 127))))
            return None
        if rest == "morph":
            return self._morph
        if rest == "all_notes_off":
            return lambda a: (_arity(a, 0), m.all_notes_off())
        return None

    @staticmethod
    def _check(ok) -> None:
        if ok is False:
            raise _BadArgs("empty snapshot slot")

    def _morph(self, a: list) -> None:
        if len(a) == 3:
            x = _number(a[2])
            self.mapper.set_morph_pair(_integer(a[0], 0, 127), _integer(a[1], 0, 127))
        else:
            _arity(a, 1)
            x = _number(a[0])
        self._check(self.mapper.morph(x))

    # ------------------------------------------------------------------ out
    def _send(self, address: str, args) -> None:
        b = OscMessageBuilder(address)
        for v in args:
            b.add_arg(v)
        try:
            self.sock.sendto(b.build().dgram, self.feedback)
            self.counters.sent += 1
        except OSError:  # nobody listening, unreachable: the stream is best-effort
            self.counters.send_errors += 1

    def send_state(self, now: float | None = None, *, force: bool = False) -> bool:
        """Send the state stream if it is due (or ``force``); True when sent."""
        if not self.feedback:
            return False
        now = time.monotonic() if now is None else now
        if not force and now < self._next_state:
            return False
        self._next_state = now + self.feedback_period
        eng = self.engine
        try:
            z = eng.latent if eng is not None else self.mapper.latents
            self._send("/canne/state/latents", [float(v) for v in z])
            stats = getattr(eng, "stats", None)
            self._send("/canne/state/voices", [int(getattr(stats, "active_voices", 0))])
            self._send("/canne/state/level", [_level_db(eng)])
        except Exception as exc:  # never raise into the control loop
            self.last_error = f"state: {exc}"
            return False
        return True

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def _level_db(engine) -> float:
    """Peak of the hop the engine rendered last, in dBFS (-120 for silence)."""
    block = getattr(engine, "_block", None)
    if block is None:
        return -120.0
    try:
        peak = float(abs(block).max())
    except (ValueError, TypeError):
        return -120.0
    return 20.0 * math.log10(peak) if peak > 1e-6 else -120.0
