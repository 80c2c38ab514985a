"""The gateway listener inside the real ``solargw web`` (gunicorn): a simulated genuine Enecsys
gateway connects over TCP while a stalled and a garbage client are connected, and its inverters
appear in ``/data.json`` with the values it sent."""
from __future__ import annotations

import asyncio
import socket
import time

import pytest
import requests

from appliance.protocols import enecsys
from appliance.sim.enecsys_gateway import SimulatedGateway
from appliance.sim.sun import SimClock
from brokers import free_port
from server import running_web

pytestmark = pytest.mark.slow


def test_gateway_inverters_appear_in_data_json_with_the_values_sent(tmp_path):
    port = free_port()
    settings = {"gateway": {"enabled": True, "listen_addr": "127.0.0.1", "port": port}}
    with running_web(tmp_path, settings) as web:
        stalled = socket.create_connection(("127.0.0.1", port))
        stalled.sendall(b"49AB")  # half a line, then nothing
        garbage = socket.create_connection(("127.0.0.1", port))
        garbage.sendall(b"GET / HTTP/1.0\r\n\r\n" + b"\xff" * 100 + b"\r")

        async def talk() -> SimulatedGateway:
            gateway = SimulatedGateway("127.0.0.1", port, [100036587, 120069930, 120069931], interval=0.5,
                                       ping_interval=0.5, clock=SimClock.at(12.0), reconnect_delay=0.2)
            task = asyncio.create_task(gateway.run())
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                document = await asyncio.to_thread(lambda: requests.get(web.url + "data.json", timeout=5).json())
                if {"100036587", "120069930", "120069931"} <= set(document) and gateway.stats.reports_sent >= 6:
                    break
                await asyncio.sleep(0.2)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            return gateway

        gateway = asyncio.run(talk())
        time.sleep(0.5)  # the last lines reach the store
        document = requests.get(web.url + "data.json", timeout=5).json()
        for serial, frame in gateway.stats.sent.items():
            sent = enecsys.decode(frame, received_at=0.0).fields
            entry = document[str(serial)]
            assert entry["family"] == "enecsys"
            assert entry["serial"] == str(serial) and entry["mac"] == sent["ieee"]
            assert entry["dc_watts"] == sent["dc_power_w"] and entry["ac_volt"] == sent["ac_voltage_v"]
            assert entry["temp"] == sent["temperature_c"] and entry["ac_freq"] == sent["ac_frequency_hz"]
            assert entry["lifetime_wh"] == sent["lifetime_wh"]
            assert entry["ac_watts"] == pytest.approx(sent["ac_power_w"])
        assert gateway.stats.answers >= 1 and gateway.stats.connects == 1

        store = web.store()
        assert {r.source for r in store.rejected()} == {"gateway:127.0.0.1"}
        status = store.status()["gateway"][1]
        assert status["state"] == "listening" and status["address"] == f"127.0.0.1:{port}"
        assert web.alive()
        stalled.close()
        garbage.close()


def test_the_gateway_listener_follows_the_settings_file(tmp_path):
    """Turned on by an edit of the settings file (as the settings page or an import writes it)."""
    import tomllib

    import tomli_w

    port = free_port()
    with running_web(tmp_path) as web:
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        data = tomllib.loads(web.settings_path.read_text())
        data["gateway"] = {"enabled": True, "listen_addr": "127.0.0.1", "port": port}
        web.settings_path.write_text(tomli_w.dumps(data))
        deadline = time.monotonic() + 15
        while True:
            requests.get(web.url + "data.json", timeout=5)  # a request takes the new file into use
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"the listener did not start; log:\n{web.log()}") from None
                time.sleep(0.2)
