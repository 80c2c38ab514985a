"""The relay to the real NEP portal, against a fake portal and a fake DNS server on loopback."""
from __future__ import annotations

import dataclasses
import socket
import threading
import time
from pathlib import Path
from typing import Callable

import dns.message
import dns.rrset
import pytest

from appliance.protocols.nep import build_request
from appliance.settings import RelaySettings, Settings
from appliance.sim import nep_inverters
from appliance.store import Store
from appliance.web.app import create_app
from appliance.web.relay import Relay, parse_resolver
from server import running_web
from vectors import NEP_BDM400, NEP_BDM800, NEP_BDM1200_T

BDM400 = bytes.fromhex(NEP_BDM400["hex"])
BDM800 = bytes.fromhex(NEP_BDM800["hex"])
BDM1200 = bytes.fromhex(NEP_BDM1200_T["hex"])
PORTAL = "www.nepviewer.net"


class FakePortal:
    """A TCP server that records each raw request and answers like the portal (or hangs)."""

    def __init__(self, hang: bool = False, on_request: Callable[[bytes, tuple], None] | None = None):
        self.hang = hang
        self.on_request = on_request
        self.requests: list[bytes] = []
        self.stopping = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, peer = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn, peer), daemon=True).start()

    def _handle(self, conn: socket.socket, peer: tuple) -> None:
        with conn:
            conn.settimeout(10)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            length = int(next(l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")))
            while len(body) < length:
                body += conn.recv(4096)
            self.requests.append(head + b"\r\n\r\n" + body)
            if self.on_request:
                self.on_request(body, peer)
            if self.hang:
                self.stopping.wait(30)
                return
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 14\r\n"
                         b"Connection: close\r\n\r\n20260101120000")

    def close(self) -> None:
        self.stopping.set()
        self.listener.close()


class FakeResolver:
    """A UDP DNS server answering A queries with one address, recording the names asked."""

    def __init__(self, address: str):
        self.address = address
        self.asked: list[str] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                data, peer = self.sock.recvfrom(512)
            except OSError:
                return
            query = dns.message.from_wire(data)
            name = query.question[0].name
            self.asked.append(name.to_text())
            reply = dns.message.make_response(query)
            reply.answer.append(dns.rrset.from_text(name, 300, "IN", "A", self.address))
            self.sock.sendto(reply.to_wire(), peer)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def portal():
    fake = FakePortal()
    yield fake
    fake.close()


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def make_client(tmp_path: Path, **relay):
    settings = Settings()
    settings.data.dir = str(tmp_path / "data")
    settings.mqtt.enabled = False
    settings.relay = dataclasses.replace(settings.relay, **{"enabled": True, "timeout_seconds": 3.0, **relay})
    store = Store(settings.data_dir)
    app = create_app(settings, store)
    return app, app.test_client(), store


def headers_of(request: bytes) -> list[str]:
    head = request.partition(b"\r\n\r\n")[0].decode("ascii").split("\r\n")
    return [line.split(":")[0] for line in head[1:]]


def test_bodies_go_out_byte_exact_with_the_inverters_own_headers(tmp_path, portal):
    app, client, store = make_client(tmp_path, address="127.0.0.1", port=portal.port)
    client.post("/i.php", data=BDM400)
    client.post("/t.php", data=BDM1200)
    wait_for(lambda: store.counters().get(("relay_sent", "nep")) == 2)
    assert sorted(portal.requests) == sorted([build_request(PORTAL, "/i.php", BDM400),
                                              build_request(PORTAL, "/t.php", BDM1200)])
    assert all(headers_of(r) == ["Host", "Connection", "Content-Length"] for r in portal.requests)
    assert set(store.latest()) == {"12345678", "86513ae0"}
    app.extensions["solargw"].close()


def test_garbage_is_not_relayed_but_a_bad_checksum_is(tmp_path, portal):
    app, client, store = make_client(tmp_path, address="127.0.0.1", port=portal.port)
    client.post("/i.php", data=b"\x00garbage")
    bad_checksum = BDM800[:-1] + bytes([BDM800[-1] ^ 0xFF])
    client.post("/i.php", data=bad_checksum)  # the portal does not check; neither do we for it
    wait_for(lambda: store.counters().get(("relay_sent", "nep")) == 1)
    assert portal.requests == [build_request(PORTAL, "/i.php", bad_checksum)]
    app.extensions["solargw"].close()


def test_the_portal_address_comes_from_the_configured_resolver(tmp_path, portal):
    resolver = FakeResolver("127.0.0.1")
    try:
        app, client, store = make_client(tmp_path, address="", resolver=f"127.0.0.1:{resolver.port}",
                                         port=portal.port)
        client.post("/i.php", data=BDM400)
        client.post("/i.php", data=BDM800)
        wait_for(lambda: store.counters().get(("relay_sent", "nep")) == 2)
        assert resolver.asked == ["www.nepviewer.net."]  # asked once, then cached for the TTL
        app.extensions["solargw"].close()
    finally:
        resolver.close()


def test_an_unresolvable_portal_counts_as_failed(tmp_path):
    dead = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dead.bind(("127.0.0.1", 0))  # a resolver that never answers
    try:
        app, client, store = make_client(tmp_path, address="", resolver=f"127.0.0.1:{dead.getsockname()[1]}",
                                         timeout_seconds=0.5)
        started = time.monotonic()
        client.post("/i.php", data=BDM400)
        assert time.monotonic() - started < 0.5
        wait_for(lambda: store.counters().get(("relay_failed", "nep")) == 1)
        assert "12345678" in store.latest()
        app.extensions["solargw"].close()
    finally:
        dead.close()


def test_never_relays_to_our_own_address_and_port(tmp_path):
    # Flask's test client serves "localhost:80": the DNS override would send the portal's name here.
    app, client, store = make_client(tmp_path, address="127.0.0.1", port=80)
    client.post("/i.php", data=BDM400)
    wait_for(lambda: store.counters().get(("relay_failed", "nep")) == 1)
    counters = store.counters()
    assert counters[("relay_looped", "nep")] == 1
    assert ("relay_sent", "nep") not in counters
    assert counters[("readings_recorded", "nep")] == 1
    app.extensions["solargw"].close()


def test_the_relay_recognises_its_own_connections(tmp_path):
    store = Store(tmp_path / "data")
    verdicts: list[tuple[bool, bool]] = []
    relay: Relay | None = None

    def check(body: bytes, peer: tuple) -> None:
        assert relay is not None
        verdicts.append((relay.is_loop(BDM800, peer[0], peer[1]),       # our own connection
                         relay.is_loop(BDM800, peer[0], peer[1] + 1)))  # someone else's
    fake = FakePortal(on_request=check)
    try:
        relay = Relay(RelaySettings(enabled=True, address="127.0.0.1", port=fake.port, timeout_seconds=3),
                      store, own_ports=[80])
        relay.submit("/i.php", BDM400)
        wait_for(lambda: store.counters().get(("relay_sent", "nep")) == 1)
        assert verdicts == [(True, False)]
        assert relay.is_loop(BDM400, "10.42.0.5", 1234)  # the same body coming back soon
        relay.close()
    finally:
        fake.close()


@pytest.mark.parametrize("text, expected", [
    ("1.1.1.1", ("1.1.1.1", 53)), ("127.0.0.1:5353", ("127.0.0.1", 5353)),
    ("::1", ("::1", 53)), ("[::1]:5300", ("::1", 5300)),
])
def test_parse_resolver(text, expected):
    assert parse_resolver(text) == expected


# --- slow: through gunicorn ------------------------------------------------------------------

@pytest.mark.slow
def test_a_hanging_portal_never_slows_the_inverter(tmp_path):
    hanging = FakePortal(hang=True)
    try:
        settings = {"relay": {"enabled": True, "address": "127.0.0.1", "port": hanging.port, "timeout_seconds": 5.0}}
        with running_web(tmp_path, settings) as web:
            durations = []
            for body in (BDM400, BDM800, BDM400[:-3] + b"\x00\x00\x00", BDM1200, BDM800):
                started = time.monotonic()
                reply = nep_inverters.post(web.url, "/i.php" if len(body) == 45 else "/t.php", body)
                durations.append(time.monotonic() - started)
                assert reply.status == 200 and reply.body.isdigit()
            assert max(durations) < 2.0, durations  # well under the relay's 5 s timeout
            store = web.store()
            wait_for(lambda: store.counters().get(("relay_failed", "nep"), 0) >= 1, timeout=15)
            assert set(store.latest()) == {"12345678", "deadbeef", "86513ae0"}
            assert web.alive()
    finally:
        hanging.close()


@pytest.mark.slow
def test_a_body_that_comes_back_around_is_neither_recorded_nor_relayed_again(tmp_path):
    target: dict[str, str] = {}

    def reflect(body: bytes, _peer: tuple) -> None:  # a "portal" that is really a proxy back to us
        nep_inverters.post(target["url"], "/i.php", body)

    reflector = FakePortal(on_request=reflect)
    try:
        settings = {"relay": {"enabled": True, "address": "127.0.0.1", "port": reflector.port}}
        with running_web(tmp_path, settings) as web:
            target["url"] = web.url
            assert nep_inverters.post(web.url, "/i.php", BDM400).status == 200
            store = web.store()
            wait_for(lambda: store.counters().get(("relay_sent", "nep")) == 1)
            counters = store.counters()
            assert counters[("relay_looped", "nep")] == 1
            assert counters[("readings_recorded", "nep")] == 1
            assert len(reflector.requests) == 1
    finally:
        reflector.close()


@pytest.mark.slow
def test_relaying_to_our_own_gunicorn_port_is_refused(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    settings = {"relay": {"enabled": True, "address": "127.0.0.1", "port": port}}
    with running_web(tmp_path, settings, port=port) as web:
        assert nep_inverters.post(web.url, "/i.php", BDM400).status == 200
        store = web.store()
        wait_for(lambda: store.counters().get(("relay_failed", "nep")) == 1)
        counters = store.counters()
        assert counters[("relay_looped", "nep")] == 1
        assert ("relay_sent", "nep") not in counters
        assert counters[("readings_recorded", "nep")] == 1


def test_new_relay_settings_take_effect_without_a_restart(tmp_path, portal):
    app, client, store = make_client(tmp_path, address="127.0.0.1", port=portal.port)
    client.post("/i.php", data=BDM400)
    wait_for(lambda: store.counters().get(("relay_sent", "nep")) == 1)
    services = app.extensions["solargw"]
    services.apply_settings(dataclasses.replace(services.settings,
                                                relay=dataclasses.replace(services.settings.relay, enabled=False)))
    client.post("/i.php", data=BDM800)
    assert "deadbeef" in store.latest()
    time.sleep(0.3)
    assert len(portal.requests) == 1 and store.counters()[("relay_sent", "nep")] == 1
