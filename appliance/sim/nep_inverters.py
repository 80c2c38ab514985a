"""Simulated NEP inverters that post real packets over HTTP, like the real ones.

Each inverter follows a clear-sky day curve between sunrise and sunset (with a
little per-inverter haze), posts 0 W "standby" packets around dawn and dusk,
is silent at night, and restarts its daily energy counter at the first packet
of a new day (dawn, not midnight, as the real ones do). 45-byte models post
``/i.php``; the 69-byte models (BDM-1200-LV, -2000, -2250) post ``/t.php``.

The sun and the simulated clock are :mod:`appliance.sim.sun`'s.
"""
from __future__ import annotations

import random
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable, Iterator
from urllib.parse import urlsplit

from appliance.protocols import nep
from appliance.sim.sun import SUNRISE_HOUR, TWILIGHT_HOURS, SimClock, sun_fraction

RATED_W: dict[str, float] = {
    "bdm300": 300, "bdm400": 400, "bdm600": 600, "bdm800": 800,
    "bdm1200": 1200, "bdm2000": 2000, "bdm2250": 2250,
}
T_PHP_MODELS = frozenset({"bdm1200", "bdm2000", "bdm2250"})
MODULE_VOLTAGE_V = 32.0


@dataclass
class NepInverter:
    """One simulated NEP inverter: what it posts at a given moment."""

    serial: str
    model: str
    haze: float = 0.9
    """Share of the clear-sky peak this inverter reaches (panel orientation, dirt)."""
    energy_today_wh: float = 0.0
    _day: str | None = field(default=None, repr=False)
    _last: datetime | None = field(default=None, repr=False)

    @property
    def path(self) -> str:
        return "/t.php" if self.model in T_PHP_MODELS else "/i.php"

    def packet(self, moment: datetime, rng: random.Random) -> bytes | None:
        """The body this inverter posts at ``moment``, or None while it sleeps."""
        sun = sun_fraction(moment)
        if sun is None:
            self._last = None
            return None
        day = moment.date().isoformat()
        if day != self._day:  # first packet after the night: the daily counter restarts
            self._day, self.energy_today_wh, self._last = day, 0.0, None
        flicker = 1.0 - 0.08 * rng.random() if sun > 0 else 0.0
        power = RATED_W[self.model] * self.haze * sun * flicker
        if self._last is not None:
            hours = max(0.0, (moment - self._last).total_seconds() / 3600)
            self.energy_today_wh += power * hours
        self._last = moment
        temperature = 15 + 30 * sun + rng.uniform(-0.5, 0.5)
        voltage = 230 + rng.uniform(-3, 3)
        frequency = 50 + rng.uniform(-0.05, 0.05)
        if self.model in T_PHP_MODELS:
            share = power / 4
            energy_each = self.energy_today_wh / 4
            modules = [nep.Module(voltage_v=MODULE_VOLTAGE_V + rng.uniform(0, 4) if sun > 0 else 0.0,
                                  power_w=share, energy_wh=energy_each) for _ in range(4)]
            return nep.encode_t(
                serial=self.serial, model=self.model, modules=modules,
                dc_voltage_v=MODULE_VOLTAGE_V if sun > 0 else 0.0, ac_voltage_v=voltage,
                ac_frequency_hz=frequency, temperature_c=temperature,
            )
        dual = self.model in ("bdm600", "bdm800")
        current = power / MODULE_VOLTAGE_V
        return nep.encode_i(
            serial=self.serial, model=self.model, ac_power_w=power, ac_voltage_v=voltage,
            dc_current_1_a=current / 2 if dual else 0.0, dc_current_2_a=current / 2 if dual else current,
            ac_frequency_hz=frequency, temperature_c=temperature, energy_today_wh=self.energy_today_wh,
            mode_low=None if power > 0 else 0x04,
        )


def make_fleet(count: int, models: list[str], seed: int = 1) -> list[NepInverter]:
    """``count`` inverters cycling through ``models``; the same seed gives the same serials."""
    unknown = [m for m in models if m not in RATED_W]
    if unknown:
        raise ValueError(f"unknown model {unknown[0]!r}; choose from {', '.join(RATED_W)}")
    if not models:
        raise ValueError("name at least one model")
    rng = random.Random(seed)
    fleet = []
    serials: set[str] = set()
    while len(fleet) < count:
        serial = f"{rng.getrandbits(32):08x}"
        if serial in serials:
            continue
        serials.add(serial)
        fleet.append(NepInverter(serial, models[len(fleet) % len(models)], haze=rng.uniform(0.8, 0.97)))
    return fleet


@dataclass
class Reply:
    status: int
    body: bytes


def post_url_check(url: str) -> None:
    """Raise ValueError unless ``url`` is ``http://HOST[:PORT][/prefix]``."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"{url!r}: expected http://HOST[:PORT]")
    _ = parts.port  # raises ValueError for a bad port


def post(url: str, path: str, body: bytes, timeout: float = 10.0) -> Reply:
    """POST like an inverter (its exact minimal headers) to ``url``'s host and port."""
    post_url_check(url)
    parts = urlsplit(url)
    prefix = parts.path.rstrip("/")
    with socket.create_connection((parts.hostname, parts.port or 80), timeout=timeout) as sock:
        sock.sendall(nep.build_request(nep.PORTAL_HOST, prefix + path, body))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, payload = data.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].split()
    status = int(status_line[1]) if len(status_line) > 1 and status_line[1].isdigit() else 0
    return Reply(status, payload)


def run(url: str, fleet: list[NepInverter], *, interval: float, clock: SimClock,
        rounds: int | None = None, seed: int = 1, report: Callable[[str], None] = print) -> tuple[int, int]:
    """Post one packet per awake inverter every ``interval`` real seconds. Returns (ok, failed) replies."""
    rng = random.Random(seed)
    ok = failed = 0
    done = 0
    night_told = False
    while rounds is None or done < rounds:
        started = time.monotonic()
        moment = clock.now()
        bodies = [(inverter, inverter.packet(moment, rng)) for inverter in fleet]
        asleep = all(body is None for _, body in bodies)
        if asleep and not night_told:
            wake = SUNRISE_HOUR - TWILIGHT_HOURS
            report(f"{moment:%H:%M:%S} night: the inverters sleep until {int(wake):02d}:{round(wake % 1 * 60):02d}"
                   " (use --start HH:MM and --speed for a daytime demo)")
        night_told = asleep
        for inverter, body in bodies:
            if body is None:
                continue
            try:
                reply = post(url, inverter.path, body)
            except OSError as exc:
                failed += 1
                report(f"{moment:%H:%M:%S} {inverter.serial} {inverter.model}: {exc}")
                continue
            good = reply.status == 200 and len(reply.body) == 14 and reply.body.isdigit()
            ok += good
            failed += not good
            report(f"{moment:%H:%M:%S} {inverter.serial} {inverter.model} {inverter.path} "
                   f"{inverter.energy_today_wh:8.1f} Wh today -> {reply.status} {reply.body[:20].decode('latin-1')}")
        done += 1
        if rounds is not None and done >= rounds:
            break
        time.sleep(max(0.0, interval - (time.monotonic() - started)))
    return ok, failed


def rounds_iter(fleet: list[NepInverter], moments: Iterator[datetime],
                seed: int = 1) -> Iterator[tuple[datetime, NepInverter, bytes]]:
    """Packets the fleet would post at these moments (no network): for tests and benchmarks."""
    rng = random.Random(seed)
    for moment in moments:
        for inverter in fleet:
            body = inverter.packet(moment, rng)
            if body is not None:
                yield moment, inverter, body
