"""Zigbee service figures: ``.venv/bin/python -m bench.zigbee [inverters] [seconds]``.

The real service (zigpy-znp) against the emulated coordinator over TCP, with simulated
inverters that all power up at once, twice: on an ideal radio (every figure a lower bound),
then on a realistic one (10-40 ms per hop, 2% loss with Z-Stack's APS retries, the child table
of Koenkk's builds). Each run prints how many inverters joined, got their handshake answered and
have a report in the store; the handshake latency as the inverters see it (request sent -> reply
received, median and worst) and the service's own time per handshake; then reports per second
recorded in the store (SQLite) while every inverter sends reports back to back (each after the
previous one is through the air). Exits non-zero when fewer inverters report than asked.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import statistics
import sys
import tempfile
import time

from appliance.settings import from_dict
from appliance.sim.enecsys_inverters import InverterFleet
from appliance.sim.sun import SimClock
from appliance.sim.zstack.air import IDEAL, REALISTIC, RadioConditions
from appliance.sim.zstack.coordinator import CoordinatorEmulator
from appliance.store import Store
from appliance.zigbee.service import ZigbeeService

JOIN_DEADLINE_SECONDS = 90.0


def ms(values: list[float]) -> str:
    if not values:
        return "none"
    return f"median {1000 * statistics.median(values):.1f} ms, worst {1000 * max(values):.1f} ms"


async def run(count: int, seconds: float, radio: RadioConditions) -> int:
    """One run; returns how many inverters have a report in the store."""
    print(f"-- {count} inverters, {radio.describe()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-zigbee-") as tmp:
        emu = CoordinatorEmulator(radio=radio)
        await emu.start()
        settings = from_dict({"data": {"dir": tmp}, "zigbee": {"device": emu.url}, "mqtt": {"enabled": False}})
        store = Store.from_settings(settings)
        service = ZigbeeService(settings, store)
        running = asyncio.create_task(service.run())
        deadline = time.monotonic() + JOIN_DEADLINE_SECONDS
        while not emu.permit_join and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        fleet = InverterFleet(emu, InverterFleet.default_serials(count), interval=3600, alarm_probability=0,
                              handshake_timeout=5, retry_delay=2, clock=SimClock.at(12))
        fleet.start()  # every inverter powers up at once

        def reporting() -> int:
            latest = store.latest()
            return sum(1 for inverter in fleet.inverters if str(inverter.serial) in latest)

        while reporting() < count and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        joined = fleet.count(lambda i: i.stats.joins > 0)
        answered = fleet.count(lambda i: i.stats.handshake_replies > 0)
        reported = reporting()
        print(f"joined {joined}, answered {answered}, reporting {reported} (of {count})")
        if not radio.instant:
            hops = collections.Counter(emu.network.get(i.ieee).hops for i in fleet.inverters if emu.nwk_of(i))
            air = emu.air.stats
            print(f"hops to the stick: {dict(sorted(hops.items()))}; {air.lost} of {air.transmissions} "
                  f"transmissions lost, {air.aps_retries} APS retries, {air.aps_failures} given up")
        print(f"handshake latency (inverter's request -> reply on the air): {ms(fleet.latencies())}")
        print(f"service time per handshake (frame in -> reply acknowledged): "
              f"{ms(list(service.frames.handshake_reply_seconds))}")

        def recorded() -> int:
            return store.counters().get(("readings_recorded", "enecsys"), 0)

        sent = 0

        async def flood(inverter) -> None:
            nonlocal sent
            while True:
                if await emu.transmit(inverter, inverter.next_report()):
                    sent += 1
                await asyncio.sleep(0)

        await asyncio.sleep(1.0)  # let the start-up frames land before counting
        start_count, started = recorded(), time.monotonic()
        flooders = [asyncio.create_task(flood(inverter)) for inverter in fleet.inverters if emu.nwk_of(inverter)]
        await asyncio.sleep(seconds)
        for task in flooders:
            task.cancel()
        await asyncio.gather(*flooders, return_exceptions=True)
        elapsed = time.monotonic() - started
        await asyncio.sleep(1.0)  # the store thread catches up
        done = recorded() - start_count
        print(f"reports: {sent} acknowledged on the air, {done} recorded in {elapsed:.1f} s: "
              f"{done / elapsed:.0f} reports/s through the service (decode, SQLite ledger, no MQTT)", flush=True)
        service.stop()
        await running
        await fleet.stop()
        await emu.stop()
        store.close()
        return reported


async def main(count: int, seconds: float) -> int:
    short = [await run(count, seconds, radio) for radio in (IDEAL, REALISTIC)]
    return 1 if min(short) < count else 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    inverters = int(sys.argv[1]) if len(sys.argv) > 1 else 8
    duration = float(sys.argv[2]) if len(sys.argv) > 2 else 5.0
    if asyncio.run(main(inverters, duration)):
        sys.exit(f"fewer than {inverters} inverters reported")
