"""A few days of plausible past for the demo's simulated inverters, so its first look is not empty.

For every inverter the demo simulates, readings every ``STEP_SECONDS`` of daylight from
``days`` days ago until now, each made the live way: the inverter's own simulator builds the
frame its family sends (:mod:`~appliance.sim.nep_inverters`, :class:`~appliance.sim.enecsys_inverters.EnecsysInverter`),
the family's decoder reads it, and :meth:`Store.record <appliance.store.Store.record>` keeps it
with its past time, so the energy ledger and the per-day energy come out of the same rules as
live data. Each day has its own weather (a seeded share of the clear-sky output), the same for
every inverter, as one roof sees one sky.

An Enecsys inverter's lifetime counter must go on where the live simulator starts it (each
simulated inverter's starting counter comes from its serial): the past is laid out so that it
ends there, now. A NEP daily counter starts again at the live simulator's first packet, which
the ledger takes as a restart. Sources name where the live readings of each inverter will come
from (the Zigbee service, the gateway listener, the web collector), so each service's MQTT
publisher announces the inverters it will then receive.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Iterable, Iterator

from appliance.protocols import enecsys, nep
from appliance.sim import nep_inverters
from appliance.sim.enecsys_inverters import EnecsysInverter
from appliance.sim.sun import SimClock, sun_fraction
from appliance.store import Store

STEP_SECONDS = 600
SOURCES = {"zigbee": "zigbee:demo-history", "gateway": "gateway:demo-history", "nep": "demo-history"}


@dataclass(frozen=True)
class Written:
    readings: int
    days: int
    inverters: int


def weather(day: datetime, seed: int = 7) -> float:
    """This day's share of the clear-sky output (0.35 to 1.0), the same for every inverter."""
    return random.Random(f"{seed}-{day.date().isoformat()}").choice((1.0, 0.95, 0.9, 0.8, 0.6, 0.35))


def moments(now: datetime, days: int, step: float = STEP_SECONDS) -> Iterator[datetime]:
    """Every ``step`` seconds of daylight (and twilight) from ``days`` days ago, midnight, until ``now``."""
    moment = (now - timedelta(days=days)).replace(hour=0, minute=0, second=0, microsecond=0)
    while moment < now:
        if sun_fraction(moment) is not None:
            yield moment
        moment += timedelta(seconds=step)


def _enecsys_frames(serial: int, when: list[datetime], step: float,
                    start_wh: float | None) -> tuple[list[bytes], float]:
    """The reports one simulated Enecsys inverter sends at ``when``, and the energy they add up to.
    ``start_wh``: its lifetime counter before the first (None: the live simulator's own start)."""
    clock = SimClock(when[0] if when else datetime.now(), speed=0.0)
    inverter = EnecsysInverter(None, serial, interval=step, clock=clock)  # type: ignore[arg-type]  # no radio
    base_peak = inverter.peak_w
    begin = inverter.lifetime_wh if start_wh is None else start_wh
    inverter.lifetime_wh = begin
    frames = []
    for moment in when:
        clock.start = moment
        inverter.peak_w = base_peak * weather(moment)
        frames.append(inverter.next_report())
    return frames, inverter.lifetime_wh - begin


def write_enecsys(store: Store, serials: Iterable[int], source: str, now: datetime, days: int) -> int:
    when = [m for m in moments(now, days) if sun_fraction(m)]  # their radios run on panel power
    count = 0
    for serial in serials:
        live_start = EnecsysInverter(None, serial).lifetime_wh  # type: ignore[arg-type]  # where live goes on
        _, produced = _enecsys_frames(serial, when, STEP_SECONDS, None)
        frames, _ = _enecsys_frames(serial, when, STEP_SECONDS, live_start - produced)
        for moment, frame in zip(when, frames):
            store.record(enecsys.decode(frame, received_at=moment.timestamp()), source=source)
            count += 1
    return count


def write_nep(store: Store, fleet: list[nep_inverters.NepInverter], now: datetime, days: int) -> int:
    base_haze = {inverter.serial: inverter.haze for inverter in fleet}
    count = 0
    for moment in moments(now, days):
        for inverter in fleet:
            inverter.haze = base_haze[inverter.serial] * weather(moment)
        for _, _, body in nep_inverters.rounds_iter(fleet, iter([moment]), seed=int(moment.timestamp())):
            store.record(nep.decode(body, model="auto", received_at=moment.timestamp()), source=SOURCES["nep"])
            count += 1
    return count


def write(store: Store, *, zigbee_serials: Iterable[int] = (), gateway_serials: Iterable[int] = (),
          nep_fleet: list[nep_inverters.NepInverter] = (), now: datetime | None = None, days: int = 7) -> Written:
    """The demo's past, written through ``store`` (before the services start)."""
    now = now or datetime.now()
    zigbee_serials, gateway_serials = list(zigbee_serials), list(gateway_serials)
    readings = (write_enecsys(store, zigbee_serials, SOURCES["zigbee"], now, days)
                + write_enecsys(store, gateway_serials, SOURCES["gateway"], now, days)
                + write_nep(store, list(nep_fleet), now, days))
    return Written(readings, days, len(zigbee_serials) + len(gateway_serials) + len(nep_fleet))
