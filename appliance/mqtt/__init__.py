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

from appliance.mqtt.publisher import MqttPublisher
from appliance.settings import Settings
from appliance.store import Store

log = logging.getLogger(__name__)

__all__ = ["MqttPublisher", "make_publisher"]


SERVICE_FAMILY = {"web": "nep", "zigbee": "enecsys"}
"""Which inverters each service publishes."""


def make_publisher(settings: Settings, service: str, store: Store | None = None,
                   **options) -> MqttPublisher | None:
    """A started publisher for ``service`` (``web`` or ``zigbee``), client id
    ``solargw-<service>-<hostname>``; None when MQTT is disabled or unusable.

    With ``store``, the publisher starts with the service's known inverters (so one asleep
    at boot is announced asleep, with its energy) and asks the store before announcing an
    inverter again (so one removed in the other process stays removed).

    A broker that is down is not an error (the publisher keeps reconnecting in the
    background); an unreadable CA file is, and is logged: the service then runs without
    MQTT rather than not at all.
    """
    if not settings.mqtt.enabled:
        return None
    if store is not None:
        options.setdefault("removed", lambda serial: _removed(store, serial))
    try:
        publisher = MqttPublisher(settings, service, **options)
    except (ValueError, OSError) as exc:
        log.error("mqtt disabled: cannot set up the connection to %s:%s: %s",
                  settings.mqtt.host, settings.mqtt.port, exc)
        return None
    if store is not None:
        try:
            publisher.restore(store.inverters(), store.latest(), family=SERVICE_FAMILY.get(service))
        except Exception:  # a store problem must not keep the service from starting
            log.exception("mqtt: cannot read the known inverters")
    return publisher.start()


def _removed(store: Store, serial: str) -> bool:
    info = store.inverter(serial)
    return info is None or info.removed
