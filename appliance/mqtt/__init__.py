"""Home Assistant over MQTT: discovery, availability and states for both services.

    publisher = make_publisher(settings, "web")     # None when [mqtt] enabled = false
    pipeline = Pipeline(store, publisher)
    ...
    publisher.close()

``discovery`` builds the payloads (pure), ``client`` holds the paho connection,
``publisher`` ties them together without ever blocking its caller.
"""
from __future__ import annotations

import logging
from typing import Any, Mapping

from appliance.mqtt.publisher import MqttPublisher
from appliance.settings import Settings
from appliance.store import Store

log = logging.getLogger(__name__)

__all__ = ["MqttPublisher", "make_publisher"]


ZIGBEE_SOURCE = "zigbee:"
"""How the Zigbee service's readings name their source (``zigbee:0x1234``, see ``zigbee.frames``)."""


def owner(family: str, source: str | None) -> str:
    """The service that publishes an inverter: the one that received its latest report.

    The Zigbee service's readings come from the radio; the web service's from NEP posts and
    from a genuine Enecsys gateway's stream (:mod:`appliance.gateway`). An Enecsys inverter
    that moves from the gateway to the stick (or back) thus changes publisher, keeping its
    Home Assistant device (same identifiers). Without a report yet, the family decides.
    """
    if source:
        return "zigbee" if source.startswith(ZIGBEE_SOURCE) else "web"
    return "zigbee" if family == "enecsys" else "web"


def _latest_source(latest: Mapping[str, Any], serial: str) -> str | None:
    row = latest.get(serial)
    return getattr(row, "source", None) if row is not None else None


def make_publisher(settings: Settings, service: str, store: Store | None = None,
                   **options) -> MqttPublisher | None:
    """A started publisher for ``service`` (``web`` or ``zigbee``), client id
    ``solargw-<service>-<hostname>``; None when MQTT is disabled or unusable.

    With ``store``, the publisher starts with the service's known inverters (:func:`owner`; so
    one asleep at boot is announced asleep, with its energy) and asks the store before
    announcing an inverter again (so one removed in the other process stays removed, and one
    the other service now receives is left to it).

    A broker that is down is not an error (the publisher keeps reconnecting in the
    background); an unreadable CA file is, and is logged: the service then runs without
    MQTT rather than not at all.
    """
    if not settings.mqtt.enabled:
        return None
    if store is not None:
        options.setdefault("removed", lambda serial: _not_ours(store, serial, service))
    try:
        publisher = MqttPublisher(settings, service, **options)
    except (ValueError, OSError) as exc:
        log.error("mqtt disabled: cannot set up the connection to %s:%s: %s",
                  settings.mqtt.host, settings.mqtt.port, exc)
        return None
    if store is not None:
        try:
            latest = store.latest()
            ours = [info for info in store.inverters()
                    if owner(info.family, _latest_source(latest, info.serial)) == service]
            publisher.restore(ours, latest)
        except Exception:  # a store problem must not keep the service from starting
            log.exception("mqtt: cannot read the known inverters")
    return publisher.start()


def _not_ours(store: Store, serial: str, service: str) -> bool:
    """Removed, or taken over by the other service (its latest report came through it)."""
    info = store.inverter(serial)
    if info is None or info.removed:
        return True
    return owner(info.family, _latest_source(store.latest(), serial)) != service
