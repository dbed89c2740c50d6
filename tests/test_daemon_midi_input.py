"""MIDI input adapter: parsing, flood handling, port selection, reconnection on JACK MIDI."""

from __future__ import annotations

import time

import pytest

from daemon.errors import DeviceError
from daemon.adapters.midi_input import MidiInput, api_candidates, select_ports
from jack_util import MidiSender, jack_server_env, wait_for


def _fed(raw: list[list[int]], maxlen: int = 4096) -> MidiInput:
    """A MidiInput whose queue is filled as the rtmidi callback would fill it."""
    m = MidiInput(maxlen=maxlen)
    for data in raw:
        m.queue.append(data)
    return m


def test_drain_parses_messages_as_sent():
    m = _fed([[0x90, 60, 100], [0x90, 60, 0], [0xB3, 21, 64], [0xE0, 0, 64]])
    msgs = m.drain()
    assert [x.type for x in msgs] == ["note_on", "note_on", "control_change", "pitchwheel"]
    assert msgs[1].note == 60 and msgs[1].velocity == 0  # a note-off to the Mapper, not here
    assert msgs[2].channel == 3 and msgs[2].value == 64
    assert not m.queue


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param([0x90, 200, 100], id="data-byte-over-127"),
        pytest.param([0x90, 60], id="truncated-note-on"),
        pytest.param([0x45], id="no-status-byte"),
        pytest.param([], id="empty"),
    ],
)
def test_malformed_bytes_are_dropped_and_counted(raw):
    m = _fed([raw, [0x90, 64, 90]])
    msgs = m.drain()
    assert [x.type for x in msgs] == ["note_on"]
    assert m.counters.invalid == 1


def test_cc_flood_is_coalesced_to_the_newest_value_per_absolute_cc():
    raw = []
    for i in range(1000):  # one second of two knobs at 1 kHz, interleaved with a relative encoder
        raw.append([0xB0, 21, i % 128])
        raw.append([0xB0, 22, (3 * i) % 128])
        if i % 100 == 0:
            raw.append([0xB0, 30, 1])
    raw.append([0x90, 60, 100])
    m = _fed(raw)
    msgs = m.drain(coalesce=lambda ch, cc: cc != 30)
    ccs = [(x.control, x.value) for x in msgs if x.type == "control_change"]
    assert (21, 999 % 128) in ccs and (22, (3 * 999) % 128) in ccs
    assert sum(1 for c, _ in ccs if c == 21) == 1 and sum(1 for c, _ in ccs if c == 22) == 1
    assert sum(1 for c, _ in ccs if c == 30) == 10, "relative encoder ticks must all survive"
    assert msgs[-1].type == "note_on"
    assert m.counters.coalesced == 2 * 999


class QueuedPort:
    """Stands in for an rtmidi.MidiIn whose C++ queue holds ``messages`` (no MIDI system needed)."""

    def __init__(self, messages):
        self.messages = list(messages)

    def ignore_types(self, **kw):
        self.ignored = kw

    def get_message(self):
        return (self.messages.pop(0), 0.0) if self.messages else None


def test_pump_filters_in_rtmidi_and_bounds_the_queue_dropping_oldest():
    m = MidiInput(maxlen=64)
    port = QueuedPort([[0xB0, 21, i % 128] for i in range(1000)])
    m._arm(port)
    assert port.ignored == {"sysex": True, "timing": True, "active_sense": True}
    assert m.pump() == 1000
    assert len(m.queue) == 64
    assert m.counters.dropped == 1000 - 64 and m.counters.received == 1000
    msgs = m.drain()
    assert msgs[-1].value == 999 % 128  # the newest state survives


@pytest.mark.parametrize(
    "patterns, expected",
    [
        pytest.param([], ["nanoKONTROL2:nanoKONTROL2 MIDI 1 20:0", "system:midi_capture_1"], id="all-hardware"),
        pytest.param(["NANO"], ["nanoKONTROL2:nanoKONTROL2 MIDI 1 20:0"], id="case-insensitive-substring"),
        pytest.param(["capture", "nano"], ["nanoKONTROL2:nanoKONTROL2 MIDI 1 20:0", "system:midi_capture_1"],
                     id="several-patterns"),
        pytest.param(["launch"], [], id="no-match"),
    ],
)
def test_select_ports(patterns, expected):
    ports = ["Midi Through:Midi Through Port-0 14:0", "nanoKONTROL2:nanoKONTROL2 MIDI 1 20:0",
             "system:midi_capture_1", "CANNe:in", "RtMidi Output Client:out 130:0"]
    assert select_ports(ports, patterns) == expected


def test_unknown_api_is_refused_with_the_choices():
    with pytest.raises(DeviceError, match="--midi-api 'beos'.*auto"):
        api_candidates("beos")


# -- on a JACK dummy server ------------------------------------------------------------------
@pytest.fixture(scope="module")
def jack_env(tmp_path_factory):
    with jack_server_env("canne-test-midi", tmp_path_factory.mktemp("jack")) as server:
        yield server


@pytest.mark.jack
def test_jack_port_is_received_lost_and_reconnected(jack_env):
    sender = MidiSender("canne-test-ctl")
    m = MidiInput(api="jack", patterns=["canne-test-ctl"], virtual=True)
    reconnected = []
    m.on_reconnect = reconnected.append
    try:
        m.start()
        assert m.api == "jack" and m.open_ports == ["canne-test-ctl:out"]
        sender.note_on(60, 100)
        sender.send(0xF8)  # clock: filtered before the callback
        sender.cc(21, 5)
        got = []
        wait_for(lambda: got.extend(m.drain()) or len(got) >= 2, 5, 0.02, "two messages")
        assert [x.type for x in got] == ["note_on", "control_change"]

        sender.close()  # the controller is unplugged
        wait_for(lambda: m.poll()[1] or not m.open_ports, 10, 0.2, "the port to vanish")
        assert m.open_ports == [] and m.counters.disconnects == 1

        sender = MidiSender("canne-test-ctl")  # ... and plugged back
        wait_for(lambda: m.poll()[0] or m.open_ports, 10, 0.2, "the port to return")
        assert m.open_ports == ["canne-test-ctl:out"] and reconnected == ["canne-test-ctl:out"]
        sender.cc(22, 99)
        got = wait_for(lambda: m.drain(), 5, 0.02, "a message after reconnection")
        assert got[0].control == 22 and got[0].value == 99

        # The virtual port 'CANNe' takes input too (another program connects to it).
        import jack

        c = jack.Client("wiring", no_start_server=True, servername=jack_env.name)
        virtual = [p.name for p in c.get_ports("CANNe", is_midi=True, is_input=True)]
        assert "CANNe:in" in virtual
        other = MidiSender("other-app")  # not matched by the patterns
        try:
            c.connect("other-app:out", "CANNe:in")
            other.note_on(64, 90)
            got = wait_for(lambda: m.drain(), 5, 0.02, "a message on the virtual port")
            assert any(x.type == "note_on" and x.note == 64 for x in got)
        finally:
            other.close()
            c.close()
    finally:
        m.close()
        sender.close()


@pytest.mark.jack
def test_failed_port_open_leaves_no_armed_input_or_jack_client_behind(jack_env):
    """A source that cannot be opened (here: a stale index) is retried on every poll;
    each failed try must destroy its rtmidi client, not keep it armed and active."""
    import jack

    m = MidiInput(api="jack", patterns=["nothing-matches"], virtual=True)
    c = jack.Client("canne-test-watch", no_start_server=True, servername=jack_env.name)
    try:
        m.start()
        armed = list(m._inputs)
        before = sorted(p.name for p in c.get_ports(is_midi=True, is_input=True))
        for _ in range(3):
            assert m._open_port("canne-test-gone:out", 9999) is None
        assert m._inputs == armed
        after = sorted(p.name for p in c.get_ports(is_midi=True, is_input=True))
        assert after == before, f"failed opens left JACK ports behind: {sorted(set(after) - set(before))}"
    finally:
        c.close()
        m.close()


class _Spy:
    """Forwards every call to the wrapped object and logs ``(who, method, time)``."""

    def __init__(self, obj, who: str, log: list):
        self._obj, self._who, self._log = obj, who, log

    def __getattr__(self, attr):
        value = getattr(self._obj, attr)
        if not callable(value):
            return value

        def call(*args, **kwargs):
            self._log.append((self._who, attr, time.monotonic()))
            return value(*args, **kwargs)

        return call


@pytest.mark.jack
def test_close_quiets_the_hub_and_closes_it_before_anything_else_changes_the_graph(jack_env):
    """libjack edits a client's port list in jack_port_unregister while its notification
    thread may walk it after a graph change (jack2 #216): closing the monitor, then the hub
    at once, crashed ``canne learn`` (SIGSEGV, ~1 close in 380 under stress). close() must
    cut every connection into the hub, wait HUB_SETTLE_S, and unregister the hub first."""
    import jack

    from daemon.adapters import midi_input as mi

    sender = MidiSender("canne-test-quiet")
    other = MidiSender("canne-test-byhand")
    m = MidiInput(api="jack", patterns=["canne-test-quiet"], virtual=True)
    c = jack.Client("canne-test-wire", no_start_server=True, servername=jack_env.name)
    try:
        m.start()
        assert m._hub is not None and m._hub is m._virtual
        c.connect("canne-test-byhand:out", m._hub_port)  # a connection the adapter did not make
        wait_for(lambda: len(c.get_all_connections(m._hub_port)) == 2, 5, 0.02, "two sources on the hub")
        log: list = []
        hub = _Spy(m._hub, "hub", log)
        m._hub = m._virtual = hub
        m._monitor = _Spy(m._monitor, "monitor", log)
        m._jack = _Spy(m._jack, "jack", log)
        m.close()
        calls = [(who, what) for who, what, _ in log]
        disconnects = [i for i, (who, what) in enumerate(calls) if (who, what) == ("jack", "disconnect")]
        hub_close = calls.index(("hub", "close_port"))
        assert len(disconnects) >= 2, calls  # the pattern's source and the hand-made one
        assert max(disconnects) < hub_close < calls.index(("monitor", "close_port")), calls
        assert hub_close < calls.index(("jack", "close")), calls
        assert log[hub_close][2] - log[max(disconnects)][2] >= mi.HUB_SETTLE_S * 0.9
        assert calls.count(("hub", "close_port")) == 1 and calls.count(("hub", "delete")) == 1
        wait_for(lambda: not c.get_ports("CANNe", is_midi=True, is_input=True), 5, 0.02, "the hub port to go")
    finally:
        c.close()
        other.close()
        sender.close()
