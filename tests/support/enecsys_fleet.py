"""Simulated Enecsys inverters whose lifetime counters outlive the process, for power-cut tests.

``python tests/support/enecsys_fleet.py PORT INVERTERS INTERVAL EPOCH`` runs the emulated coordinator on
127.0.0.1:PORT with inverters behind it, like ``solargw simulate enecsys``, until SIGTERM. Killing
it stands for a power cut of the appliance (the stick loses power); real inverters keep counting
meanwhile, so each counter here starts from the time since EPOCH (the test's start) at 1 Wh/s: more
than a simulated inverter adds between two reports, and than the counter's 1 Wh resolution, so a
restart never finds it lower than before.
"""
from __future__ import annotations

import asyncio
import signal
import sys
import time

from appliance.sim.enecsys_inverters import InverterFleet
from appliance.sim.sun import SimClock
from appliance.sim.zstack.coordinator import CoordinatorEmulator

async def main(port: int, inverters: int, interval: float, epoch: float) -> None:
    emulator = CoordinatorEmulator()
    print(await emulator.start("127.0.0.1", port), flush=True)
    fleet = InverterFleet(emulator, InverterFleet.default_serials(inverters), interval=interval,
                          clock=SimClock.at(12.0))
    for n, inverter in enumerate(fleet.inverters):
        inverter.lifetime_wh = 1_000_000 * (n + 1) + (time.time() - epoch) * 1.0
    fleet.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await fleet.stop()
    await emulator.stop()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])))
