"""Zigbee service figures: ``.venv/bin/python -m bench.zigbee [inverters] [seconds]``.

The real service (zigpy-znp) against the emulated coordinator over TCP, with simulated
inverters: handshake latency as the inverters see it (request sent -> reply received,
median and worst), then reports per second recorded in the store (SQLite) while every
inverter reports as fast as it can.
"""
from __future__ import annotations

import asyncio
import logging
import statistics
import sys
import tempfile
import time

from appliance.settings import from_dict
from appliance.sim.enecsys_inverters import InverterFleet
from appliance.sim.sun import SimClock
from appliance.sim.zstack.coordinator import CoordinatorEmulator
from appliance.store import Store
from appliance.zigbee.service import ZigbeeService


async def run(count: int, seconds: float) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-zigbee-") as tmp:
        emu = CoordinatorEmulator()
        await emu.start()
        settings = from_dict({"data": {"dir": tmp}, "zigbee": {"device": emu.url}, "mqtt": {"enabled": False}})
        store = Store.from_settings(settings)
        service = ZigbeeService(settings, store)
        fleet = InverterFleet(emu, InverterFleet.default_serials(count), interval=3600, alarm_probability=0,
                              handshake_timeout=5, clock=SimClock.at(12))
        fleet.start()
        running = asyncio.create_task(service.run())
        deadline = time.monotonic() + 60
        while not fleet.reporting() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        latencies = sorted(fleet.latencies())
        print(f"inverters: {count}, handshakes answered: {len(latencies)}")
        print(f"handshake latency (inverter's request -> reply on the air): "
              f"median {1000 * statistics.median(latencies):.1f} ms, worst {1000 * latencies[-1]:.1f} ms")
        answered = sorted(service.frames.handshake_reply_seconds)
        print(f"service time per handshake (frame in -> reply acknowledged): "
              f"median {1000 * statistics.median(answered):.1f} ms, worst {1000 * answered[-1]:.1f} ms")

        def recorded() -> int:
            return store.counters().get(("readings_recorded", "enecsys"), 0)

        async def flood(inverter) -> None:
            while True:
                inverter.send_report()
                await asyncio.sleep(0.002)

        await asyncio.sleep(0.5)  # let the first reports land before counting
        start_count, started = recorded(), time.monotonic()
        sent_before = sum(inverter.stats.reports_sent for inverter in fleet.inverters)
        flooders = [asyncio.create_task(flood(inverter)) for inverter in fleet.inverters]
        await asyncio.sleep(seconds)
        for task in flooders:
            task.cancel()
        sent = sum(inverter.stats.reports_sent for inverter in fleet.inverters) - sent_before
        await asyncio.sleep(1.0)
        done = recorded() - start_count
        elapsed = time.monotonic() - started
        print(f"reports: {sent} sent, {done} recorded in {elapsed:.1f} s: {done / elapsed:.0f} reports/s "
              f"through the service (decode, SQLite ledger, no MQTT)")
        service.stop()
        await running
        await fleet.stop()
        await emu.stop()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    inverters = int(sys.argv[1]) if len(sys.argv) > 1 else 8
    duration = float(sys.argv[2]) if len(sys.argv) > 2 else 5.0
    asyncio.run(run(inverters, duration))
