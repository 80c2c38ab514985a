"""The genuine Enecsys gateway's stream: line framing, the keepalive answer, and the TCP listener
(real sockets on loopback, a real store) against a simulated gateway, stalled and garbage clients."""
from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from appliance.gateway import GatewayListener
from appliance.pipeline import Pipeline
from appliance.protocols import enecsys, enecsys_gateway as protocol
from appliance.protocols.enecsys_gateway import KeepalivePolicy, LineKind
from appliance.reading import FrameError
from appliance.sim.enecsys_gateway import SimulatedGateway
from appliance.sim.sun import SimClock
from appliance.store import Store
from vectors import ENECSYS_GATEWAY_KEEPALIVE, ENECSYS_GATEWAY_LINES, ENECSYS_WS_LINE

# --- the lines ----------------------------------------------------------------------------------


def test_every_captured_line_is_framed_length_and_crc8():
    for text in ENECSYS_GATEWAY_LINES + [ENECSYS_GATEWAY_KEEPALIVE]:
        line = protocol.parse_line(text + "\r")
        assert line.crc_ok, text
        assert protocol.frame_line(text[2:-2]) == text
    assert protocol.KEEPALIVE == ENECSYS_GATEWAY_KEEPALIVE


def test_captured_lines_are_told_apart():
    kinds = [protocol.parse_line(text).kind for text in ENECSYS_GATEWAY_LINES]
    assert kinds == [LineKind.PING, LineKind.GATEWAY, LineKind.PING, LineKind.PING, LineKind.GATEWAY,
                     LineKind.PING, LineKind.GATEWAY]
    wz = protocol.parse_line(ENECSYS_GATEWAY_LINES[1])
    assert (wz.gateway_id, wz.line_type, wz.time_text) == ("7735A88A", "01", "180743")
    assert wz.payload.startswith("WZ=i6g1")
    assert protocol.parse_line(ENECSYS_GATEWAY_KEEPALIVE).kind == LineKind.ANSWER  # never answered


def test_the_simulator_sends_pings_byte_for_byte_like_the_captured_gateway():
    assert protocol.ping_line("7735A88A", 0x5F) == ENECSYS_GATEWAY_LINES[0]
    assert protocol.ping_line("7735A88A", 0x62) == ENECSYS_GATEWAY_LINES[5]


def test_a_ws_line_carries_the_protocol_vector():
    v = ENECSYS_WS_LINE
    text = protocol.report_line("7735A88A", "120102", v["line"])
    assert text.startswith("49") and len(text) == 77  # the "49" lines one public receiver reads at 21
    line = protocol.parse_line(text + "\r\n")
    assert line.kind == LineKind.INVERTER and line.crc_ok and text[21:-2] == v["line"][3:]
    reading = protocol.decode_inverter_line(line, received_at=1.0)
    assert reading.checksum_ok and reading.family == "enecsys" and reading.serial == v["serial"]
    f = reading.fields
    assert (f["dc_power_w"], f["ac_voltage_v"], f["temperature_c"], f["lifetime_wh"]) == (
        v["dc_power_w"], v["ac_voltage_v"], v["temperature_c"], v["kwh"] * 1000 + v["wh"])
    assert f["efficiency_ratio"] == pytest.approx(v["efficiency_ratio"])
    assert f["dc_current_a"] == pytest.approx(v["dc_current_a"])


def test_a_failed_crc_decodes_but_is_not_recorded(tmp_path):
    text = protocol.report_line("7735A88A", "120102", ENECSYS_WS_LINE["line"])
    broken = text[:-2] + ("00" if text[-2:] != "00" else "01")
    line = protocol.parse_line(broken)
    assert not line.crc_ok
    reading = protocol.decode_inverter_line(line, received_at=1.0)
    assert not reading.checksum_ok and "CRC-8" in reading.notes[-1]
    store = Store(tmp_path)
    assert Pipeline(store).handle(reading, source="gateway:test") is None
    assert store.latest() == {} and store.rejected()[0].reason == "checksum mismatch"


@pytest.mark.parametrize("text, message", [
    ("", "not a gateway line"),
    ("WS=" + ENECSYS_WS_LINE["line"], "not a gateway line"),
    ("167735A88A00IQAAAABfAlIB0", "says 22 characters between its length and its check, it has 21"),
    ("167735A88A00IQAAAABfAlIBxx", "not a gateway line"),
    ("177735A88A00IQAAAABfAlIB0E", "says 23 characters"),
    ("0C7735A88Z00IQ0E", "gateway's id"),
    ("06 \x01 abc01", "printable ASCII"),
    ("FF" + "A" * 600, "over 512"),
])
def test_what_is_not_a_gateway_line(text, message):
    with pytest.raises(FrameError, match=message):
        protocol.parse_line(text)


@given(st.one_of(st.text(max_size=200), st.binary(max_size=200)))
def test_anything_raises_only_frame_error(data):
    try:
        line = protocol.parse_line(data)
    except FrameError:
        return
    try:
        protocol.decode_inverter_line(line, received_at=0.0)
    except FrameError:
        pass


def test_keepalive_on_connect_on_pings_and_every_200_s_of_lines():
    policy = KeepalivePolicy()
    assert policy.on_connect(0.0)
    assert not policy.on_line(LineKind.PING, 5.0)  # just answered at connect
    assert policy.on_line(LineKind.PING, 60.0)  # the gateway's minute pings are all answered
    assert policy.on_line(LineKind.PING, 120.0)
    assert not policy.on_line(LineKind.PING, 125.0)  # not a flood of them
    assert not policy.on_line(LineKind.INVERTER, 300.0)
    assert policy.on_line(LineKind.INVERTER, 320.0)  # e2pv's 200 s while lines arrive
    assert not policy.on_line(LineKind.ANSWER, 330.0)  # an answer-shaped line is no ping
    fresh = KeepalivePolicy()
    assert fresh.on_line(LineKind.INVERTER, 0.0)  # never answered yet


# --- the listener over TCP -------------------------------------------------------------------------

class Harness:
    """A listener on a free loopback port, with a real store, run in one asyncio test."""

    def __init__(self, tmp_path: Path, **options):
        self.store = Store(tmp_path / "data")
        self.listener = GatewayListener("127.0.0.1", 0, Pipeline(self.store), self.store, **options)

    async def __aenter__(self):
        await self.listener.start()
        return self

    async def __aexit__(self, *exc):
        await self.listener.close()
        self.store.close()

    @property
    def port(self) -> int:
        return self.listener.port

    def gateway(self, count: int = 2, **options) -> SimulatedGateway:
        options = {"interval": 0.2, "ping_interval": 0.1, "reconnect_delay": 0.1, **options}
        return SimulatedGateway("127.0.0.1", self.port, [100036587, 120069930][:count],
                                clock=SimClock.at(12.0), **options)

    async def until(self, predicate, timeout: float = 10.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            await asyncio.sleep(0.02)


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 60))


def latest_is_last_sent(store: Store, gateway: SimulatedGateway) -> bool:
    """The store thread has recorded each inverter's last line (its counter is counted first)."""
    latest = store.latest()
    return all(str(serial) in latest and latest[str(serial)].frame_hex == frame.hex()
               for serial, frame in gateway.stats.sent.items())


def assert_matches_sent(store: Store, gateway: SimulatedGateway) -> None:
    latest = store.latest()
    for serial, frame in gateway.stats.sent.items():
        sent = enecsys.decode(frame, received_at=0.0).fields
        stored = latest[str(serial)]
        assert stored.source == "gateway:127.0.0.1"
        for key in ("dc_power_w", "ac_voltage_v", "temperature_c", "lifetime_wh", "ac_frequency_hz"):
            assert stored.fields[key] == sent[key], key
        assert stored.fields["ac_power_w"] == pytest.approx(sent["ac_power_w"])


def test_a_simulated_gateway_reports_its_inverters_and_is_answered(tmp_path):
    async def scenario():
        async with Harness(tmp_path) as h:
            gateway = h.gateway(2)
            task = asyncio.create_task(gateway.run())
            await h.until(lambda: len(h.store.latest()) == 2, what="two inverters")
            await h.until(lambda: gateway.stats.reports_sent >= 6, what="three rounds")
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await h.until(lambda: h.listener.counts["reports"] == gateway.stats.reports_sent, what="all counted")
            await h.until(lambda: latest_is_last_sent(h.store, gateway), what="the last lines stored")
            assert_matches_sent(h.store, gateway)
            info = {i.serial: i for i in h.store.inverters()}
            assert set(info) == {"100036587", "120069930"} and info["100036587"].family == "enecsys"
            assert h.store.rejected() == []
            status = h.store.status()["gateway"][1]
            assert status["state"] == "listening" and status["inverters"] == ["100036587", "120069930"]
            assert gateway.stats.answers == 1  # on connect; pings 0.1 s apart get no more (20 s gap)
    run(scenario())


def test_stalled_and_garbage_clients_do_not_hold_up_the_gateway(tmp_path):
    async def scenario():
        async with Harness(tmp_path, idle_seconds=1.0) as h:
            stalled = [await asyncio.open_connection("127.0.0.1", h.port) for _ in range(3)]
            stalled[0][1].write(b"49AB")  # half a line, then nothing
            _, garbage = await asyncio.open_connection("127.0.0.1", h.port)
            garbage.write(b"\x00\xff junk\r" * 30)
            _, long_line = await asyncio.open_connection("127.0.0.1", h.port)
            long_line.write(b"4" * 5000)
            gateway = h.gateway(2)
            task = asyncio.create_task(gateway.run())
            started = time.monotonic()
            await h.until(lambda: len(h.store.latest()) == 2, what="the gateway's inverters")
            assert time.monotonic() - started < 3  # not after the stalled clients' deadline
            for reader, _ in stalled:  # closed by the read deadline
                assert await asyncio.wait_for(reader.read(), 5) == protocol.KEEPALIVE.encode() + b"\r"
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            reasons = [r.reason for r in h.store.rejected(limit=100)]
            assert sum(r == "gateway line: a gateway line is ASCII text" for r in reasons) == 20  # then closed
            assert any("over 512" in r for r in reasons)
            assert all(r.source == "gateway:127.0.0.1" and r.family == "enecsys" for r in h.store.rejected())
            assert ("packets_rejected", "enecsys") in h.store.counters()
            assert h.listener.counts["connections"] == 6
    run(scenario())


def test_a_full_house_of_silent_clients_makes_room_for_the_gateway(tmp_path):
    async def scenario():
        async with Harness(tmp_path, max_connections=4) as h:
            silent = [await asyncio.open_connection("127.0.0.1", h.port) for _ in range(4)]
            await h.until(lambda: h.listener.counts["connections"] == 4, what="four connections")
            gateway = h.gateway(1)
            task = asyncio.create_task(gateway.run())
            await h.until(lambda: len(h.store.latest()) == 1, what="the gateway's inverter")
            five = await asyncio.open_connection("127.0.0.1", h.port)  # one more silent client
            await asyncio.sleep(0.3)
            before = gateway.stats.reports_sent
            await h.until(lambda: gateway.stats.reports_sent > before + 2, what="more reports")
            assert gateway.stats.connects == 1  # the talking gateway kept its place
            assert h.listener.counts["refused"] == 2
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            for _, writer in silent + [five]:
                writer.close()
    run(scenario())


def test_a_client_sending_malformed_lines_is_closed(tmp_path):
    async def scenario():
        async with Harness(tmp_path) as h:
            reader, writer = await asyncio.open_connection("127.0.0.1", h.port)
            for n in range(40):
                writer.write(f"0A0000000001{n:02d}WS=AAAA00\r".encode())  # framed wrong: length
            assert await asyncio.wait_for(reader.read(), 10) == protocol.KEEPALIVE.encode() + b"\r"
            assert h.listener.counts["rejected"] == 20
    run(scenario())


def test_port_in_use_is_a_clear_error(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        from appliance.gateway import GatewayThread

        store = Store(tmp_path)
        thread = GatewayThread("127.0.0.1", busy.getsockname()[1], Pipeline(store), store)
        assert thread.start() is False
        assert "cannot listen on 127.0.0.1" in thread.error and thread.summary().startswith("error:")
        thread.stop()
        assert store.status()["gateway"][1]["state"].startswith("error: cannot listen")


def test_a_flood_of_malformed_lines_costs_at_most_thirty_store_writes_a_minute(tmp_path):
    from appliance.gateway import REJECTS_KEPT_PER_MINUTE

    async def scenario():
        async with Harness(tmp_path) as h:
            for _ in range(5):
                reader, writer = await asyncio.open_connection("127.0.0.1", h.port)
                writer.write(b"not a gateway line\r" * 20)
                await asyncio.wait_for(reader.read(), 10)  # closed after its 20th
            gateway = h.gateway(1)
            task = asyncio.create_task(gateway.run())
            await h.until(lambda: len(h.store.latest()) == 1, what="the gateway's inverter")
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            assert h.listener.counts["rejected"] == 100
            assert len(h.store.rejected(limit=500)) == REJECTS_KEPT_PER_MINUTE == 30
            assert h.listener.status()["rejected_lines"] == 100  # all counted in the status
    run(scenario())
