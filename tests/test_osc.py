"""daemon.adapters.osc: OSC over a real loopback UDP socket into the Mapper and the real Engine.

Deterministic: every test binds its own socket on an ephemeral port and waits for the
datagram with ``poll(timeout=...)`` (loopback delivery is immediate; the timeout is
only a bound, never a sleep).
"""

from __future__ import annotations

import random
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.osc_packet import OscPacket

sys.path.insert(0, str(Path(__file__).parent))


from daemon.core.engine import Engine  # noqa: E402
from daemon.control.mapper import Mapper  # noqa: E402
from daemon.control.mapping import MappingError, load_mapping_text  # noqa: E402
from daemon.adapters.osc import OscServer  # noqa: E402

SR = 44100
WAIT = 2.0  # upper bound for a loopback datagram to be readable


def msg(address, *args):
    b = OscMessageBuilder(address)
    for a in args:
        b.add_arg(a)
    return b.build().dgram


@pytest.fixture()
def rig(model):
    engine = Engine(model, sample_rate=SR, polyphony=4, seed=1)
    mapping = load_mapping_text(
        "params: {smoothing: 0}\n"
        "snapshots:\n"
        "  slots:\n"
        "    0: {name: A, latent: {0: -1.0}}\n"
        "    1: {name: B, latent: {0: 1.0}, params: {gain: -12}}\n", model)
    mapper = Mapper(mapping, engine)
    server = OscServer(mapper, engine, host="127.0.0.1", port=0)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    yield engine, mapper, server, client
    client.close()
    server.close()


def send(client, server, data):
    client.sendto(data, ("127.0.0.1", server.port))


def pump(client, server, datas, chunk=50):
    """Send, polling every ``chunk`` datagrams (the socket buffer never overflows)."""
    start = server.counters.packets
    for k, data in enumerate(datas, 1):
        send(client, server, data)
        if k % chunk == 0 or k == len(datas):
            while server.counters.packets - start < k:
                assert server.poll(timeout=WAIT) >= 0


def hop(engine):
    return engine.render(engine.hop_length)


def test_bound_to_loopback_only(rig):
    _, _, server, _ = rig
    assert server.sock.getsockname()[0] == "127.0.0.1"
    # a datagram to another address of this machine must not arrive
    others = set()
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET):
            others.add(info[4][0])
    except OSError:
        pass
    others = [a for a in others if not a.startswith("127.")]
    for addr in others:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.sendto(msg("/canne/latent/0", 0.5), (addr, server.port))
        except OSError:
            pass
        finally:
            s.close()
    assert server.poll(timeout=0.2 if others else 0.0) == 0
    assert server.counters.packets == 0


def test_other_address_only_when_asked(model, caplog):
    engine = Engine(model, sample_rate=SR)
    mapper = Mapper(None, engine)
    with caplog.at_level("WARNING", logger="canne.osc"):
        server = OscServer(mapper, engine, host="0.0.0.0", port=0)
    try:
        assert server.sock.getsockname()[0] == "0.0.0.0"
        assert "reachable from other machines" in caplog.text
    finally:
        server.close()


def test_latent_reaches_engine_at_next_hop(rig):
    engine, mapper, server, client = rig
    hop(engine)
    send(client, server, msg("/canne/latent/3", 1.25))
    assert server.poll(timeout=WAIT) == 1
    assert mapper.latents[3] == 1.25
    hop(engine)  # the next hop applies it (smoothing 0: the decoder sees it now)
    assert engine.latent[3] == pytest.approx(1.25)


def test_z_note_param_snapshot_morph(rig):
    engine, mapper, server, client = rig
    send(client, server, msg("/canne/z", *[0.1 * i for i in range(8)]))
    send(client, server, msg("/canne/note", 60, 100))
    send(client, server, msg("/canne/param/gain", -6.0))
    assert server.poll(timeout=WAIT) >= 1
    while server.counters.handled < 3:
        assert server.poll(timeout=WAIT) >= 1
    hop(engine)
    assert np.allclose(engine.latent, [0.1 * i for i in range(8)])
    assert engine.stats.active_voices == 1
    assert engine.params["gain_db"] == -6.0
    # Pd sends floats for everything: integral floats are accepted as ints
    send(client, server, msg("/canne/note", 60.0, 0.0))
    send(client, server, msg("/canne/snapshot/store", 5))
    send(client, server, msg("/canne/snapshot/recall", 1))
    send(client, server, msg("/canne/morph", 0, 1, 0.25))
    while server.counters.handled < 7:
        assert server.poll(timeout=WAIT) >= 1
    assert mapper.snapshots[5].latent == pytest.approx(tuple(0.1 * i for i in range(8)))
    assert mapper.latents[0] == pytest.approx(-0.5)  # a quarter of the way from -1 to 1
    assert server.counters.dropped == 0


def test_bundle(rig):
    engine, mapper, server, client = rig
    b = OscBundleBuilder(IMMEDIATELY)
    for i in range(3):
        m = OscMessageBuilder(f"/canne/latent/{i}")
        m.add_arg(0.5 + i)
        b.add_content(m.build())
    send(client, server, b.build().dgram)
    assert server.poll(timeout=WAIT) == 3
    assert mapper.latents[:3] == (0.5, 1.5, 2.5)


def test_malformed_counted_and_dropped(rig, caplog):
    engine, mapper, server, client = rig
    rnd = random.Random(12)
    bad = [bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(1, 200))) for _ in range(200)]
    bad += [b"", b"/canne/latent/0\x00", b"#bundle\x00" + b"\xff" * 12]
    malformed = 0
    for data in bad:
        try:
            OscPacket(data)
        except Exception:
            malformed += 1
    wrong = [
        msg("/canne/latent/0"),                  # no argument
        msg("/canne/latent/0", "loud"),          # a string
        msg("/canne/latent/0", True),            # a bool is not a number
        msg("/canne/latent/0", 1.0, 2.0),        # arity
        msg("/canne/latent/99", 1.0),            # no such neuron
        msg("/canne/z", 1.0, 2.0),               # not latent_dim values
        msg("/canne/note", 60.5, 100),           # not a whole number
        msg("/canne/note", 200, 100),            # out of range
        msg("/canne/param/volume", 1.0),         # unknown parameter
        msg("/canne/param/gain", float("nan")),  # not finite
        msg("/canne/snapshot/recall", 77),       # empty slot
        msg("/canne/morph"),                     # arity
    ]
    unknown = [msg("/other/thing", 1.0), msg("/canne/nope", 1), msg("/canne/latent/x", 1.0)]
    before = mapper.latents
    pump(client, server, bad + wrong + unknown)
    c = server.counters
    assert c.packets == len(bad) + len(wrong) + len(unknown)
    assert c.handled == 0
    assert c.malformed == malformed > 150
    # (random bytes that happen to parse as OSC count as an unknown address or bad arguments)
    assert c.bad_args >= len(wrong) and c.unknown_address >= len(unknown)
    assert c.bad_args + c.unknown_address == len(wrong) + len(unknown) + (len(bad) - malformed)
    assert mapper.latents == before  # nothing bad reached the sound
    assert not [r for r in caplog.records if r.levelno >= 30]  # a flood of junk never floods the log
    hop(engine)
    assert np.all(np.isfinite(engine.latent))


def test_state_stream(rig):
    engine, mapper, server, client = rig
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.settimeout(WAIT)
    try:
        server.feedback = listener.getsockname()
        mapper.set_latent(2, 0.75)
        hop(engine)
        assert server.send_state(now=100.0)
        assert not server.send_state(now=100.0 + 0.5 * server.feedback_period)  # a modest rate
        got = {}
        for _ in range(3):
            m = OscPacket(listener.recv(65536)).messages[0].message
            got[m.address] = list(m.params)
        assert got["/canne/state/latents"][2] == pytest.approx(0.75)
        assert got["/canne/state/voices"] == [0]
        assert got["/canne/state/level"][0] <= 0.0
    finally:
        listener.close()


def test_mapping_osc_section(model):
    m = load_mapping_text("osc: {port: 9100, feedback: '127.0.0.1:9101', feedback_rate: 10}\n", model)
    assert (m.osc.port, m.osc.host, m.osc.feedback, m.osc.feedback_rate) == (9100, "127.0.0.1", ("127.0.0.1", 9101), 10.0)
    assert load_mapping_text("osc: on\n", model).osc.port == 9000
    assert load_mapping_text("{}\n", model).osc is None
    with pytest.raises(MappingError, match=r"<mapping>:1: osc.port: out of range"):
        load_mapping_text("osc: {port: 70000}\n", model)
    with pytest.raises(MappingError, match="osc.feedback: not an address"):
        load_mapping_text("osc: {feedback: 'nowhere'}\n", model)


def test_flood_does_not_block(rig):
    """A burst larger than one poll's budget is drained over several polls, none raising."""
    engine, mapper, server, client = rig
    server.max_packets = 16
    rnd = random.Random(3)
    datas = [msg(f"/canne/latent/{i % 8}", (i % 100) / 100.0) if i % 3 else bytes(rnd.getrandbits(8) for _ in range(24))
             for i in range(500)]
    for k in range(0, 500, 100):
        for data in datas[k:k + 100]:
            send(client, server, data)
        polls = 0
        while server.counters.packets < k + 100:
            server.poll(timeout=WAIT)
            polls += 1
        assert polls >= 100 // 16  # one poll never takes more than its budget
    assert server.counters.packets == 500
    hop(engine)
    assert np.all(np.isfinite(engine.latent))


def test_runtime_builds_osc_from_options_and_mapping(model):
    from daemon.app.runtime import RunOptions, _make_osc

    engine = Engine(model, sample_rate=SR)
    mapper = Mapper(None, engine)
    assert _make_osc(RunOptions(), None, mapper, engine) is None  # off unless asked
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    mapping = load_mapping_text(f"osc: {{port: {port}, feedback: 9\n}}\n".replace("\n}", "}"), model)
    server = _make_osc(RunOptions(), mapping, mapper, engine)
    try:
        assert server.sock.getsockname() == ("127.0.0.1", port) and server.feedback == ("127.0.0.1", 9)
        from daemon.errors import CanneError

        with pytest.raises(CanneError, match="cannot listen"):  # the port is taken: one line, exit 2
            _make_osc(RunOptions(osc_port=port), None, mapper, engine)
    finally:
        server.close()


def test_fast_path_agrees_with_python_osc():
    """The fast parser (plain messages of int/float arguments) gives what python-osc gives,
    declines everything else, and never raises on junk."""
    from daemon.adapters.osc import _fast_parse

    rnd = random.Random(0)
    taken = 0
    for _ in range(2000):
        b = OscMessageBuilder("/canne/" + "".join(rnd.choice("abz/019") for _ in range(rnd.randrange(0, 12))))
        for _ in range(rnd.randrange(0, 5)):
            b.add_arg(rnd.choice([rnd.randrange(-2**31, 2**31), rnd.uniform(-1e6, 1e6), "s", True, b"\x01"]))
        data = b.build().dgram
        ref = OscPacket(data).messages[0].message
        fast = _fast_parse(data)
        if fast is None:
            assert any(not isinstance(p, (int, float)) or isinstance(p, bool) for p in ref.params)
            continue
        taken += 1
        assert fast[0] == ref.address and fast[1] == list(ref.params)
    assert taken > 300
    for _ in range(20000):
        _fast_parse(bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(0, 48))))
        _fast_parse(b"/canne/latent/0\x00,f" + bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(0, 12))))
