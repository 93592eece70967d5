"""The connection gate's pure parts: client keys, per-offender logging, counting."""

from __future__ import annotations

import ipaddress
import logging

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bastion.gateway.edge import ConnectionGate, EdgeLimits, OffenderLog, client_key


def test_client_keys():
    assert client_key("192.0.2.7") == "192.0.2.7"
    assert client_key("::ffff:192.0.2.7") == "192.0.2.7"  # a dual-stack listener sees IPv4 like this
    assert client_key("2001:db8:1:2:aaaa::1") == "2001:db8:1:2::/64"
    assert client_key("fe80::1%eth0") == "fe80::/64"
    assert client_key(None) == "" and client_key("") == ""
    assert client_key("not-an-ip") == "not-an-ip"  # e.g. a unix socket's name: one bucket


@given(st.ip_addresses(v=6), st.integers(0, 2**64 - 1))
def test_an_ipv6_subscriber_cannot_escape_the_cap_by_changing_its_interface_id(ip, low):
    if ip.ipv4_mapped is not None:
        return
    sibling = ipaddress.IPv6Address((int(ip) >> 64 << 64) | low)
    assert client_key(str(ip)) == client_key(str(sibling))
    other = ipaddress.IPv6Address(int(ip) ^ (1 << 64))
    assert client_key(str(ip)) != client_key(str(other))


def test_offenders_are_logged_once_per_interval_with_a_count(caplog):
    now = [0.0]
    offenders = OffenderLog(logging.getLogger("test.edge"), interval=60, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="test.edge"):
        for _ in range(1000):
            offenders.note("cap", "192.0.2.7", "refused %s", "192.0.2.7")
        offenders.note("cap", "192.0.2.8", "refused %s", "192.0.2.8")
        offenders.note("timeout", "192.0.2.7", "timed out %s", "192.0.2.7")
        assert len(caplog.records) == 3
        now[0] = 61
        offenders.note("cap", "192.0.2.7", "refused %s", "192.0.2.7")
    assert len(caplog.records) == 4
    assert "999 more" in caplog.records[-1].getMessage()


def test_offender_memory_is_bounded():
    offenders = OffenderLog(logging.getLogger("test.edge.bounded"), max_keys=10)
    for i in range(1000):
        offenders.note("cap", f"10.0.{i // 256}.{i % 256}", "refused")
    assert len(offenders._seen) == 10


@settings(max_examples=100)
@given(
    st.integers(1, 5),
    st.one_of(st.none(), st.integers(1, 3)),
    st.lists(st.tuples(st.booleans(), st.sampled_from(["a", "b", "c"])), max_size=60),
)
def test_gate_never_exceeds_its_caps_and_counts_back_to_zero(total, per, ops):
    gate = ConnectionGate(EdgeLimits(max_connections=total, max_per_client=per))
    held: list[str] = []
    for opening, key in ops:
        if opening:
            why = gate.admit(key)
            if why is None:
                held.append(key)
            else:
                assert why == ("total" if len(held) >= total else "client")
        elif key in held:
            held.remove(key)
            gate.release(key)
        assert gate.total == len(held) <= total
        assert all(n == held.count(k) and (per is None or n <= per) for k, n in gate.per_client.items())
        assert 0 not in gate.per_client.values()
    for key in held:
        gate.release(key)
    assert gate.total == 0 and gate.per_client == {}


def test_listener_limits_are_validated_and_linted():
    from bastion.config.lint import lint
    from bastion.config.loader import ConfigError, load_config_text

    for bad in (
        "client_header_timeout: 0",
        "keepalive_timeout: -1",
        "max_connections: 0",
        "max_connections_per_ip: 0",
        "max_header_count: 0",
        "max_header_bytes: 100",
    ):
        with pytest.raises(ConfigError) as exc:
            load_config_text(f"listeners: [{{host: 127.0.0.1, {bad}}}]\n")
        assert bad.split(":")[0] in str(exc.value)
    cfg = load_config_text("listeners: [{host: 127.0.0.1, max_connections_per_ip: null}]\n")
    assert cfg.listeners[0].max_connections_per_ip is None
    behind = load_config_text("listeners: [{host: 127.0.0.1}]\ntrusted_proxies: ['10.0.0.0/8']\n")
    assert ("warning", "listeners[0].max_connections_per_ip") in {(f.severity, f.key) for f in lint(behind)}
    off = load_config_text(
        "listeners: [{host: 127.0.0.1, max_connections_per_ip: null}]\ntrusted_proxies: ['10.0.0.0/8']\n"
    )
    assert not [f for f in lint(off) if "max_connections_per_ip" in f.key]


# --- the head deadline under any trickle schedule, on virtual time --------------------------


class _Timer:
    def __init__(self, when, callback, args):
        self.when, self.callback, self.args, self.cancelled = when, callback, args, False

    def cancel(self):
        self.cancelled = True


class _Task:
    def add_done_callback(self, _):
        pass


class _VirtualLoop:
    """Just what the protocol asks of its loop, with a clock the test moves."""

    def __init__(self):
        self.now = 0.0
        self.timers: list[_Timer] = []

    def time(self):
        return self.now

    def call_later(self, delay, callback, *args):
        timer = _Timer(self.now + delay, callback, args)
        self.timers.append(timer)
        return timer

    def create_task(self, coro, **_):
        coro.close()  # the app is not what is tested here
        return _Task()

    def advance(self, to):
        while True:
            due = [t for t in self.timers if not t.cancelled and t.when <= to]
            if not due:
                break
            timer = min(due, key=lambda t: t.when)
            self.timers.remove(timer)
            self.now = timer.when
            timer.callback(*timer.args)
        self.now = to


class _Transport:
    def __init__(self, loop):
        self.loop, self.written, self.closed_at = loop, b"", None

    def get_extra_info(self, name, default=None):
        return {"peername": ("192.0.2.1", 40000), "sockname": ("127.0.0.1", 8080)}.get(name, default)

    def write(self, data):
        self.written += data

    def close(self):
        if self.closed_at is None:
            self.closed_at = self.loop.now

    abort = close

    def is_closing(self):
        return self.closed_at is not None and not self.lingering

    def can_write_eof(self):
        return True

    def write_eof(self):  # a lingering close: the client sees the end here
        self.close()
        self.lingering = True

    lingering = False

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass


def _connection(header_timeout, keepalive_timeout, server="native"):
    import uvicorn
    from uvicorn.server import ServerState

    from bastion.gateway.edge import protocol_for

    async def app(scope, receive, send):  # pragma: no cover - never run
        pass

    config = uvicorn.Config(app, lifespan="off", log_config=None, timeout_keep_alive=keepalive_timeout)
    config.load()
    loop = _VirtualLoop()
    proto = protocol_for(EdgeLimits(header_timeout=header_timeout, keepalive_timeout=keepalive_timeout), server=server)(
        config=config, server_state=ServerState(), app_state={}, _loop=loop
    )
    transport = _Transport(loop)
    proto.connection_made(transport)
    return proto, loop, transport


_HEAD = b"GET /a HTTP/1.1\r\nHost: gw\r\nX-Pad: " + b"p" * 40 + b"\r\n\r\n"
_seconds = st.integers(0, 96).map(lambda n: n / 64)  # binary fractions: sums are exact, no rounding
_schedule = st.lists(_seconds, min_size=1, max_size=12)


def _deliver(proto, loop, transport, start, gaps, data=_HEAD):
    """Send `data` in len(gaps) pieces, piece i after gaps[i] seconds; when the last one went."""
    cuts = sorted({round(len(data) * (i + 1) / len(gaps)) for i in range(len(gaps))})
    pieces, prev, t = [], 0, start
    for cut in cuts:
        pieces.append(data[prev:cut])
        prev = cut
    for piece, gap in zip(pieces, gaps, strict=False):
        t += gap
        loop.advance(t)
        if transport.closed_at is not None:
            return None
        proto.data_received(piece)
    return t


@settings(max_examples=100, deadline=None)
@given(first=_schedule, wait=_seconds, second=_schedule)
def test_no_trickle_schedule_outlives_the_head_deadline(first, wait, second):
    _check_trickle_schedule(first, wait, second)


@settings(max_examples=100, deadline=None)
@given(first=_schedule, wait=_seconds, second=_schedule)
def test_no_trickle_schedule_outlives_the_head_deadline_uvicorn_protocol(first, wait, second):
    """The same on `server: uvicorn` (EdgeProtocol, kept as the fallback)."""
    _check_trickle_schedule(first, wait, second, "uvicorn")


@settings(max_examples=100, deadline=None)
@given(first=_schedule, wait=_seconds, second=_schedule)
# the first head's deadline passes during the keep-alive wait, then a head starts whose deadline
# (2.25 + 2) comes before the wait's end (1.5 + 3)
@example(first=[1.5], wait=0.75, second=[0.0, 1.0, 1.0, 1.0])
def test_no_trickle_schedule_outlives_a_head_deadline_shorter_than_the_keepalive(first, wait, second):
    """The defaults' order (10 s head, 15 s keep-alive): a head that starts during the keep-alive
    wait has a deadline earlier than the wait's (NativeProtocol's one timer must move up)."""
    _check_trickle_schedule(first, wait, second, T=2.0, K=3.0)


@pytest.mark.slow
@settings(max_examples=3000, deadline=None)
@given(first=_schedule, wait=_seconds, second=_schedule)
def test_no_trickle_schedule_outlives_the_head_deadline_long(first, wait, second):
    _check_trickle_schedule(first, wait, second)


def _check_trickle_schedule(first, wait, second, server="native", T=3.0, K=2.0):
    """Invariant: a head is accepted iff all of it arrived within T of the connection (first
    request) or of its first byte (after a keep-alive wait, itself at most K); otherwise the
    connection is closed exactly at that deadline, with a 408 iff part of a head was sent."""
    proto, loop, transport = _connection(T, K, server)
    done = _deliver(proto, loop, transport, 0.0, first)
    if sum(first) >= T:  # a timer due at T fires before a byte that arrives at T
        assert done is None and transport.closed_at == T and proto.cycle is None
        assert b" 408 " in transport.written
        return
    assert proto.cycle is not None and transport.closed_at is None  # the head reached the app
    # the response is sent: uvicorn arms its keep-alive wait
    proto.cycle.response_complete = True
    proto.on_response_complete()
    before = len(transport.written)
    start = done + wait
    begun = start + second[0]  # the next request's first byte
    last = _deliver(proto, loop, transport, start, second)
    if begun - done >= K:
        assert transport.closed_at == done + K and len(transport.written) == before  # quietly
    elif begun + sum(second[1:]) - begun >= T:
        assert last is None and transport.closed_at == begun + T and b" 408 " in transport.written[before:]
    else:
        assert transport.closed_at is None and last is not None


@pytest.mark.parametrize("server", ["native", "uvicorn"])
def test_a_body_trickled_behind_an_early_answer_is_held_to_the_head_deadline(server):
    """The app answered before the body was read; the client then sends the rest of the body a
    byte at a time. Nothing else bounds the connection then (no request is being answered, no
    keep-alive wait: bytes arrive): the head deadline, started by the first such byte, does."""
    T, K = 3.0, 2.0
    proto, loop, transport = _connection(T, K, server)
    proto.data_received(b"POST /a HTTP/1.1\r\nHost: gw\r\nContent-Length: 100\r\n\r\nabc")
    assert proto.cycle is not None and transport.closed_at is None
    proto.cycle.response_complete = True  # answered early
    proto.on_response_complete()
    t = 0.0
    while transport.closed_at is None and t < 20:
        t += 0.5
        loop.advance(t)
        if transport.closed_at is None:
            proto.data_received(b"x")
    assert transport.closed_at == 0.5 + T and b" 408 " in transport.written
