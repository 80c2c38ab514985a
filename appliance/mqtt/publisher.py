"""``MqttPublisher``: what the pipeline calls; one worker thread does the rest.

``publish()``, ``publish_status()``, ``remove()`` only put an item on a bounded queue and
return: the caller (an inverter waiting for its HTTP answer, the Zigbee event loop) never
waits for a broker, and nothing here raises into it. The worker thread owns all publisher
state (the inverters it announced, their latest values) and a small timer heap for the
delayed jobs: the stale check, the random delay after Home Assistant's ``online``, and the
state re-send after a new discovery config.

Discovery configs go out when an inverter is first seen or its entity set or identity changes,
and again after every (re)connect and every ``homeassistant/status`` ``online``: configs first,
then, once Home Assistant has had a moment to subscribe, availability and states. See
``discovery`` for the topics and how night-time silence is shown.
"""
from __future__ import annotations

import heapq
import itertools
import json
import logging
import math
import queue
import random
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from appliance.mqtt import discovery as ha
from appliance.mqtt.client import MqttConnection
from appliance.reading import FAMILIES
from appliance.settings import Settings
from appliance.store import local_day

log = logging.getLogger(__name__)

QUEUE_SIZE = 10_000
STATUS_EVERY_SECONDS = 5.0
CONFIG_SETTLE_SECONDS = 1.0
"""Pause between discovery configs and the states that follow them (Home Assistant subscribes
to an entity's state topic only after it has processed the config)."""


@dataclass
class _Inverter:
    identity: ha.InverterIdentity
    seen_fields: set[str] = field(default_factory=set)
    fields: dict[str, Any] = field(default_factory=dict)
    lifetime_wh: float | None = None
    energy_today_wh: float | None = None
    last_seen: float = 0.0
    asleep: bool = False
    announced: tuple | None = None
    """(identity, entity keys) of the last discovery config sent."""

    @property
    def keys(self) -> tuple[str, ...]:
        return ha.inverter_entity_keys(self.seen_fields)


def _clean(value: Any) -> Any:
    """JSON-safe: NaN and infinities (never valid JSON) become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _dumps(payload: Mapping[str, Any]) -> str:
    return json.dumps(_clean(payload), separators=(",", ":"), ensure_ascii=False)


class MqttPublisher:
    """Publishes one service's inverters and status to Home Assistant."""

    def __init__(self, settings: Settings, service: str, *, client_id: str | None = None,
                 republish_delay: tuple[float, float] = (1.0, 5.0),
                 config_settle: float = CONFIG_SETTLE_SECONDS,
                 reconnect_delay: tuple[int, int] = (1, 60),
                 removed: Callable[[str], bool] | None = None,
                 status_source: Callable[[], Mapping[str, Any]] | None = None,
                 status_every: float = STATUS_EVERY_SECONDS,
                 clock: Callable[[], float] = time.time):
        """``removed(serial)``: asked before republishing an inverter (e.g. backed by the store's
        ``removed`` flag and who received its latest reading), so that an inverter removed or
        taken over by the other service's process is not announced again by this one; without
        it only this process's ``remove()`` counts.

        ``status_source()``: the service's status as it is now (read on the worker thread every
        ``status_every`` seconds and before every republish); it is published whenever it
        changed, so Home Assistant's appliance sensors follow what the store knows, whoever
        wrote it, and a republish never sends a stale value."""
        self.settings = settings
        self.mqtt = settings.mqtt
        self.service = service
        self.topics = ha.Topics(self.mqtt.discovery_prefix, self.mqtt.base_topic, service)
        self.hostname = settings.system.hostname or socket.gethostname()
        self.url = ha.web_url(settings.web.public_url, self.hostname)
        self.appliance = ha.appliance_id(self.hostname)
        self.stale_seconds = max(1, settings.web.stale_seconds)
        self.republish_delay = republish_delay
        self.config_settle = config_settle
        self.clock = clock
        self.removed = removed
        self.status_source = status_source
        self.status_every = status_every
        self.started = clock()
        self.connection = MqttConnection(
            self.mqtt, client_id or f"solargw-{service}-{socket.gethostname()}",
            availability_topic=self.topics.service_availability,
            subscriptions=(self.topics.homeassistant_status,),
            on_connected=lambda: self._submit(("connected",)),
            on_message=self._on_message,
            reconnect_delay=reconnect_delay,
        )
        self._queue: queue.Queue = queue.Queue(QUEUE_SIZE)
        self._timers: list[tuple[float, int, tuple]] = []
        self._sequence = itertools.count()
        self._inverters: dict[str, _Inverter] = {}
        self._status: dict[str, Any] = {}
        self._status_keys: tuple[str, ...] | None = None
        self._status_polled = float("-inf")
        self._dropped = 0
        self._thread = threading.Thread(target=self._run, name=f"mqtt-{service}", daemon=True)
        self._closed = False

    # -- the caller's side: enqueue and return --------------------------------------------------

    def start(self) -> "MqttPublisher":
        self._thread.start()
        self.connection.start()
        return self

    def publish(self, recorded: Any) -> None:
        """Announce (first time) and publish a ``store.Recorded``; never blocks, never raises."""
        self._submit(("reading", recorded))

    def publish_status(self, status: Mapping[str, Any]) -> None:
        """The service's health for the appliance device, e.g. ``{"inverters": 3, "wifi": "ok"}``."""
        try:
            self._submit(("status", dict(status)))
        except Exception:  # a strange mapping must not reach the caller
            log.exception("mqtt: bad status %r", status)

    def refresh_status(self) -> None:
        """Read ``status_source`` now rather than at the next poll (something just changed)."""
        self._submit(("status_poll", False))

    def remove(self, serial: str) -> None:
        """Clear the inverter's retained discovery config(s) and availability."""
        self._submit(("remove", str(serial)))

    def restore(self, inverters: Iterable[Any], latest: Mapping[str, Any], *,
                family: str | None = None) -> None:
        """Preload what the store knows (``store.inverters()``, ``store.latest()``) at service
        start, keeping only ``family`` (this service's inverters), so that an inverter asleep at
        boot is announced with its energy and marked asleep, instead of left as it was."""
        chosen = [i for i in inverters if family is None or i.family == family]
        self._submit(("restore", chosen, dict(latest)))

    def close(self, timeout: float = 5.0) -> None:
        """Finish the queued work, mark the service offline (retained) and disconnect."""
        if self._closed:
            return
        self._closed = True
        try:
            self._queue.put(("close",), timeout=timeout)
        except queue.Full:
            pass
        if self._thread.is_alive():
            self._thread.join(timeout)
        self.connection.close(timeout)

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """True once every queued item has been handled (for tests and orderly shutdown)."""
        done = threading.Event()
        try:
            self._queue.put(("mark", done), timeout=timeout)
        except queue.Full:
            return False
        return done.wait(timeout)

    def _submit(self, item: tuple) -> None:
        if self._closed and item[0] != "close":
            return
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self._dropped += 1
            if self._dropped == 1 or self._dropped % 1000 == 0:
                log.warning("mqtt: publisher queue full, %d items dropped", self._dropped)
        except Exception:
            log.exception("mqtt: cannot queue %s", item[0])

    def _on_message(self, topic: str, payload: bytes) -> None:
        if topic == self.topics.homeassistant_status and payload.strip() == b"online":
            self._submit(("homeassistant_online",))

    # -- the worker thread ----------------------------------------------------------------------

    def _run(self) -> None:
        self._schedule(min(60.0, self.stale_seconds / 4), ("stale_check",))
        if self.status_source is not None:
            self._schedule(0.0, ("status_poll", True))
        while True:
            timeout = max(0.0, self._timers[0][0] - time.monotonic()) if self._timers else None
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                item = None
            if item is not None and item[0] == "close":
                return
            due = [item] if item is not None else []
            now = time.monotonic()
            while self._timers and self._timers[0][0] <= now:
                due.append(heapq.heappop(self._timers)[2])
            for job in due:
                try:
                    getattr(self, f"_do_{job[0]}")(*job[1:])
                except Exception:  # one bad reading must not stop the publisher
                    log.exception("mqtt: %s failed", job[0])

    def _schedule(self, delay: float, item: tuple) -> None:
        heapq.heappush(self._timers, (time.monotonic() + delay, next(self._sequence), item))

    def _send(self, topic: str, payload: Mapping[str, Any] | str | None, *, retain: bool,
              qos: int = 0) -> None:
        if payload is None:
            body: str | bytes = b""
        elif isinstance(payload, str):
            body = payload
        else:
            body = _dumps(payload)
        self.connection.publish(topic, body, qos=qos, retain=retain)

    def _do_mark(self, done: threading.Event) -> None:
        done.set()

    def _do_reading(self, recorded: Any) -> None:
        reading, info = recorded.reading, recorded.inverter
        serial = str(reading.serial)
        identity = ha.InverterIdentity(
            family=reading.family, serial=serial, name=getattr(info, "name", "") or "",
            model=getattr(info, "model", "") or reading.model or "",
            firmware=getattr(info, "firmware", "") or "")
        inverter = self._inverters.get(serial)
        if inverter is None:
            inverter = self._inverters[serial] = _Inverter(identity)
        inverter.identity = identity
        if reading.timestamp >= inverter.last_seen:
            if reading.kind == "report":
                inverter.fields = dict(reading.fields)
            else:  # info, alarm, short frames add to what the last report said
                inverter.fields.update(reading.fields)
            inverter.seen_fields.update(reading.fields)
            inverter.last_seen = reading.timestamp
        if not getattr(info, "resumed", False):  # an info frame after a power cut: the ledger is not back yet
            inverter.lifetime_wh = recorded.lifetime_wh
        inverter.energy_today_wh = recorded.energy_today_wh
        woke = inverter.asleep or inverter.announced is None
        inverter.asleep = self._is_stale(inverter)
        if self._announce(inverter):
            self._schedule(self.config_settle, ("state", serial))
        if woke and not inverter.asleep:
            self._send_availability(serial, inverter)
        self._send_state(serial, inverter)
        if self.mqtt.seed_compat and not inverter.asleep:
            power = inverter.fields.get("ac_power_w")
            if isinstance(power, (int, float)):
                self._send(self.topics.seed_watt(serial), f"{power:g}", retain=False)

    def _do_restore(self, inverters: list[Any], latest: dict[str, Any]) -> None:
        for info in inverters:
            if getattr(info, "removed", False) or str(info.serial) in self._inverters:
                continue
            last = latest.get(info.serial)
            fields = dict(last.fields) if last is not None else {}
            serial = str(info.serial)
            self._inverters[serial] = inverter = _Inverter(
                ha.InverterIdentity(info.family, serial, info.name or "", info.model or "",
                                    info.firmware or ""),
                # A ledger resumed after a power cut may be behind what was published before it:
                # no lifetime until the inverter's next report (a total must never go down).
                seen_fields=set(fields), fields=fields,
                lifetime_wh=None if getattr(info, "resumed", False) else info.lifetime_wh,
                energy_today_wh=info.energy_today_wh, last_seen=info.last_seen)
            inverter.asleep = self._is_stale(inverter)
            self._announce(inverter)
            self._send_availability(serial, inverter)
        self._schedule(self.config_settle, ("states",))

    def _do_status(self, status: dict[str, Any]) -> None:
        self._status = status
        keys = tuple(sorted(ha.status_state(status, started=self.started)))
        if keys != self._status_keys:
            self._status_keys = keys
            self._announce_appliance()
            self._schedule(self.config_settle, ("status_state",))
        self._do_status_state()

    def _do_status_poll(self, scheduled: bool) -> None:
        if scheduled:
            self._schedule(self.status_every, ("status_poll", True))
        elif time.monotonic() - self._status_polled < 1.0:  # a burst of refreshes reads once
            return
        self._status_polled = time.monotonic()
        status = self._current_status()
        if status is not None and status != self._status:
            self._do_status(status)

    def _current_status(self) -> dict[str, Any] | None:
        if self.status_source is None:
            return None
        try:
            return dict(self.status_source())
        except Exception:  # a broken source must not stop the publisher
            log.exception("mqtt: cannot read the service status")
            return None

    def _do_status_state(self) -> None:
        self._send(self.topics.status, ha.status_state(self._status, started=self.started),
                   retain=False)

    def _do_remove(self, serial: str) -> None:
        inverter = self._inverters.pop(serial, None)
        families = [inverter.identity.family] if inverter else list(FAMILIES)
        for family in families:
            for topic in ha.inverter_discovery_topics(family, serial, self.topics):
                self._send(topic, None, retain=True, qos=1)
        self._send(self.topics.inverter_availability(serial), None, retain=True, qos=1)

    def _do_connected(self) -> None:
        self._republish_configs()

    def _do_homeassistant_online(self) -> None:
        """Home Assistant (re)started: it has lost non-retained states; wait a random moment
        so that many devices do not answer at once."""
        self._schedule(random.uniform(*self.republish_delay), ("republish",))

    def _do_republish(self) -> None:
        self._republish_configs()

    def _republish_configs(self) -> None:
        status = self._current_status()
        if status is not None:  # what is true now, not what was true at the last change
            self._status = status
            self._status_keys = tuple(sorted(ha.status_state(status, started=self.started)))
        self._announce_appliance()
        self._forget_removed()
        for serial, inverter in self._inverters.items():
            self._announce(inverter, force=True)
            self._send_availability(serial, inverter)
        self._schedule(self.config_settle, ("states",))

    def _do_states(self) -> None:
        for serial, inverter in self._inverters.items():
            self._send_state(serial, inverter)
        self._do_status_state()

    def _do_state(self, serial: str) -> None:
        inverter = self._inverters.get(serial)
        if inverter is not None:
            self._send_state(serial, inverter)

    def _do_stale_check(self) -> None:
        self._schedule(min(60.0, self.stale_seconds / 4), ("stale_check",))
        self._forget_removed()
        today = local_day(self.clock())
        for serial, inverter in self._inverters.items():
            if not inverter.asleep and self._is_stale(inverter):
                log.info("mqtt: %s silent for %ds: asleep", serial, self.stale_seconds)
                inverter.asleep = True
                self._send_availability(serial, inverter)
                self._send_state(serial, inverter)
            elif inverter.asleep and inverter.energy_today_wh and local_day(inverter.last_seen) != today:
                inverter.energy_today_wh = 0.0  # a new day began while it slept
                self._send_state(serial, inverter)

    # -- helpers --------------------------------------------------------------------------------

    def _forget_removed(self) -> None:
        if self.removed is None:
            return
        for serial in list(self._inverters):
            try:
                gone = self.removed(serial)
            except Exception:
                log.exception("mqtt: cannot tell whether %s was removed", serial)
                continue
            if gone:
                del self._inverters[serial]

    def _is_stale(self, inverter: _Inverter) -> bool:
        return self.clock() - inverter.last_seen > self.stale_seconds

    def _announce(self, inverter: _Inverter, force: bool = False) -> bool:
        """Send the inverter's discovery config if new or changed; True when sent."""
        signature = (inverter.identity, inverter.keys)
        if not force and signature == inverter.announced:
            return False
        for topic, payload in ha.inverter_discovery(
                inverter.identity, inverter.keys, self.topics, appliance=self.appliance,
                url=self.url, per_entity=self.mqtt.per_entity_discovery):
            self._send(topic, payload, retain=self.mqtt.retain, qos=1)
        inverter.announced = signature
        return True

    def _announce_appliance(self) -> None:
        for topic, payload in ha.appliance_discovery(
                self.hostname, self.url, self.topics, self._status_keys or (),
                per_entity=self.mqtt.per_entity_discovery):
            self._send(topic, payload, retain=self.mqtt.retain, qos=1)

    def _send_availability(self, serial: str, inverter: _Inverter) -> None:
        self._send(self.topics.inverter_availability(serial),
                   ha.OFFLINE if inverter.asleep else ha.ONLINE, retain=True, qos=1)

    def _send_state(self, serial: str, inverter: _Inverter) -> None:
        state = ha.inverter_state(inverter.keys, inverter.fields, lifetime_wh=inverter.lifetime_wh,
                                  energy_today_wh=inverter.energy_today_wh,
                                  last_seen=inverter.last_seen, asleep=inverter.asleep)
        self._send(self.topics.inverter_state(serial), state, retain=False)
