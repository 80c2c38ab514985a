"""``GET /metrics``: Prometheus text built fresh from the store on every scrape.

A custom collector (no global registry, no multiprocess mode) reads the store,
which both services write, so one scrape of the web process sees every
inverter of both families.

Naming follows the Prometheus guide: base units in the name (``_watts``,
``_volts``, ``_amperes``, ``_hertz``, ``_celsius``, ``_ratio``, ``_seconds``),
``_total`` on counters, ``_info`` for metadata. Energy is in **joules**, the
guide's base unit: ``solargw_inverter_energy_joules_total`` is the ledger's
lifetime total (3600 J = 1 Wh; divide by 3.6e6 for kWh in PromQL).
Every inverter series carries ``serial`` and ``family``.

Instantaneous values (power, voltage, ...) and the state are emitted only for
inverters heard from within ``settings.web.stale_seconds``: a silent inverter
loses them (its ``solargw_inverter_up`` is 0) instead of freezing at the last
value. Energy counters, last-seen time and ``_info`` are always emitted.

``solargw_storage_*``: whether the SD card takes the store's writes (``solargw_storage_state``,
one series per state, 1 for the current one), the readings waiting in memory for it and the
time of the last write that reached it.
"""
from __future__ import annotations

import re
import time
from typing import Callable, Iterator

from flask import Blueprint, Response, current_app, request
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.exposition import choose_encoder

from appliance import __version__
from appliance.fields import FIELDS
from appliance.reading import STATES
from appliance.store.records import HEALTH_STATES
from appliance.web.services import services

bp = Blueprint("metrics", __name__)

WH_TO_J = 3600.0

INSTANT_GAUGES: tuple[tuple[str, str, str], ...] = tuple(
    (f.key, f.metric, f.metric_help) for f in FIELDS if f.metric)
"""(reading field, metric name, help), from the field table."""
PER_PART_GAUGES: tuple[tuple[str, str, str, str], ...] = (
    # (field pattern, metric name, label, help): one series per input / module
    (r"dc_current_(\d)_a", "solargw_inverter_dc_input_current_amperes", "input", "DC current of one input"),
    (r"module_(\d)_power_w", "solargw_inverter_module_power_watts", "module", "Power of one module (/t.php)"),
    (r"module_(\d)_voltage_v", "solargw_inverter_module_voltage_volts", "module", "Voltage of one module (/t.php)"),
)
LABELS = ["serial", "family"]


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


class StoreCollector:
    """Fresh metric families from the store on every ``collect()``."""

    def __init__(self, store, stale_seconds: float | Callable[[], float], clock=time.time):
        self.store = store
        self.stale_seconds = stale_seconds
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        now = self.clock()
        stale = self.stale_seconds() if callable(self.stale_seconds) else self.stale_seconds
        inverters = self.store.inverters()
        latest = self.store.latest()

        yield InfoMetricFamily("solargw_build", "solargw version", value={"version": __version__})

        info = InfoMetricFamily("solargw_inverter", "Inverter identity",
                                labels=LABELS + ["model", "firmware", "name"])
        energy = CounterMetricFamily("solargw_inverter_energy_joules",
                                     "Lifetime energy produced (the appliance's monotonic ledger)", labels=LABELS)
        today = GaugeMetricFamily("solargw_inverter_energy_today_joules",
                                  "Energy produced today (local day), from the ledger", labels=LABELS)
        last_seen = GaugeMetricFamily("solargw_inverter_last_seen_timestamp_seconds",
                                      "Unix time of the inverter's last frame", labels=LABELS)
        up = GaugeMetricFamily("solargw_inverter_up",
                               "1 if the inverter reported within the stale window, else 0", labels=LABELS)
        state = GaugeMetricFamily("solargw_inverter_state",
                                  "Current state (1 for the current one; fresh inverters only)",
                                  labels=LABELS + ["state"])
        gauges = {field: GaugeMetricFamily(name, text, labels=LABELS) for field, name, text in INSTANT_GAUGES}
        parts = {pattern: GaugeMetricFamily(name, text, labels=LABELS + [label])
                 for pattern, name, label, text in PER_PART_GAUGES}

        for inv in inverters:
            labels = [inv.serial, inv.family]
            info.add_metric(labels + [inv.model, inv.firmware, inv.name], {})
            energy.add_metric(labels, inv.lifetime_wh * WH_TO_J)
            today.add_metric(labels, inv.energy_today_wh * WH_TO_J)
            last_seen.add_metric(labels, inv.last_seen)
            reading = latest.get(inv.serial)
            fresh = reading is not None and now - reading.timestamp <= stale
            up.add_metric(labels, 1 if fresh else 0)
            if not fresh:
                continue
            fields = reading.fields
            current = fields.get("state", "unknown")
            current = current if current in STATES else "unknown"
            for name in STATES:
                state.add_metric(labels + [name], 1 if name == current else 0)
            for field, family in gauges.items():
                value = _number(fields.get(field))
                if value is not None:
                    family.add_metric(labels, value)
            for pattern, family in parts.items():
                for field, value in sorted(fields.items()):
                    match = re.fullmatch(pattern, field)
                    number = _number(value)
                    if match and number is not None:
                        family.add_metric(labels + [match.group(1)], number)

        yield from (info, energy, today, last_seen, up, state)
        yield from gauges.values()
        yield from parts.values()
        yield from self._counters()
        yield from self._storage()

    def _storage(self) -> Iterator[Metric]:
        """The SD card (``Store.health()``): whether it takes the writes, and what waits for it."""
        health = self.store.health()
        state = GaugeMetricFamily("solargw_storage_state",
                                  "State of the SD card's writes (1 for the current one)", labels=["state"])
        for name in HEALTH_STATES:
            state.add_metric([name], 1 if name == health.state else 0)
        yield state
        yield GaugeMetricFamily("solargw_storage_queued_readings",
                                "Readings waiting in memory for the SD card", value=health.queued)
        if health.last_flush is not None:
            yield GaugeMetricFamily("solargw_storage_last_write_timestamp_seconds",
                                    "Unix time of the last write that reached the SD card", value=health.last_flush)

    def _counters(self) -> Iterator[Metric]:
        by_name: dict[str, CounterMetricFamily] = {}
        for (name, family), value in sorted(self.store.counters().items()):
            metric = re.sub(r"[^a-zA-Z0-9_]", "_", name)
            if metric not in by_name:
                by_name[metric] = CounterMetricFamily(
                    f"solargw_{metric}", f"Count of {name.replace('_', ' ')}", labels=["family"])
            by_name[metric].add_metric([family], value)
        yield from by_name.values()


def make_registry(store, stale_seconds: float | Callable[[], float]) -> CollectorRegistry:
    """A registry of our own: the store collector and this process's CPU/memory."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(store, stale_seconds))
    ProcessCollector(namespace="solargw_web", registry=registry)
    return registry


@bp.get("/metrics")
def metrics() -> Response:
    registry = current_app.extensions.get("solargw.metrics")
    if registry is None:
        svc = services()
        registry = make_registry(svc.store, lambda: svc.settings.web.stale_seconds)  # follows new settings
        current_app.extensions["solargw.metrics"] = registry
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    return Response(encoder(registry), status=200, content_type=content_type)
