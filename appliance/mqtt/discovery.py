"""Home Assistant MQTT discovery and state payloads: pure functions, no I/O, no clock.

Topics (``<prefix>`` = discovery prefix, ``<base>`` = base topic):

- ``<prefix>/device/solargw_<family>_<serial>/config``: one retained device-discovery message
  per inverter (``device``, ``origin``, ``components``). With ``per_entity_discovery`` the older
  form is used instead: ``<prefix>/sensor/solargw_<family>_<serial>/<key>/config``, one per entity.
- ``<prefix>/device/solargw_<host>_<service>/config``: the appliance as a device. Both services
  publish one with the same device ``identifiers``, so Home Assistant shows one appliance
  device holding both services' entities, and neither config overwrites the other's.
- ``<base>/inverter/<serial>/state``: one JSON per reading, not retained; every entity's key is
  always present (``null`` when unknown, which Home Assistant shows as "unknown").
- ``<base>/inverter/<serial>/availability``: ``online`` / ``offline`` (retained), offline after
  ``stale_seconds`` of silence.
- ``<base>/<service>/availability``: the service's ``online`` / ``offline`` (retained, last will).
- ``<base>/<service>/status``: the appliance status JSON of that service.

Night: an inverter that stops talking is asleep, not broken, and silence cannot be told apart
from a lost link. So the entities follow one of two availability rules:

- ``service`` (AC/DC power, energies, state, last seen): available while the publishing service
  is. When the inverter falls silent the publisher sends one more state with the power at 0 W,
  ``state`` ``sleeping`` and the energies at their last ledger values: the Energy dashboard
  sees a flat line, never a drop to 0 and never a gap. (Only "energy today" goes to 0, at
  local midnight, as the day it counted is over.)
- ``inverter`` (voltages, currents, frequency, temperature, efficiency, alarms): also require
  the inverter's own availability, because a grid voltage from hours ago is not a measurement:
  they turn "unavailable" while the inverter is silent.
"""
from __future__ import annotations

import datetime as _dt
import math
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from appliance import __version__
from appliance.fields import FIELDS, UNIT_FACTORS, Field, Follows
from appliance.protocols import nep
from appliance.reading import STATES

ONLINE, OFFLINE = "online", "offline"
MANUFACTURERS = {"nep": "NEP", "enecsys": "Enecsys"}
ORIGIN = {"name": "solargw", "sw_version": __version__}
POWER_KEYS = ("ac_power_w", "dc_power_w")
"""Read 0 W while the inverter is silent (asleep)."""

@dataclass(frozen=True)
class Topics:
    discovery_prefix: str
    base: str
    service: str

    @property
    def service_availability(self) -> str:
        return f"{self.base}/{self.service}/availability"

    @property
    def status(self) -> str:
        return f"{self.base}/{self.service}/status"

    @property
    def homeassistant_status(self) -> str:
        return f"{self.discovery_prefix}/status"

    def inverter_state(self, serial: str) -> str:
        return f"{self.base}/inverter/{slug(serial)}/state"

    def inverter_availability(self, serial: str) -> str:
        return f"{self.base}/inverter/{slug(serial)}/availability"

    def device_config(self, object_id: str) -> str:
        return f"{self.discovery_prefix}/device/{object_id}/config"

    def entity_config(self, platform: str, object_id: str, key: str) -> str:
        return f"{self.discovery_prefix}/{platform}/{object_id}/{key}/config"

    def seed_watt(self, serial: str) -> str:
        """The seed NEP server's topic (opt-in compatibility)."""
        return f"{self.discovery_prefix}/sensor/{slug(serial)}/watt"


@dataclass(frozen=True)
class Entity:
    key: str
    """Key in the state JSON (the reading's field name where there is one)."""
    name: str
    device_class: str | None = None
    state_class: str | None = None
    unit: str | None = None
    precision: int | None = None
    category: str | None = None
    follows: Follows = "inverter"
    template: str | None = None
    extra: tuple[tuple[str, Any], ...] = ()
    platform: str = "sensor"


def _value(key: str) -> str:
    return "{{ value_json.%s }}" % key


_HA_EXTRAS: dict[str, dict[str, Any]] = {
    "state": {"extra": (("options", list(STATES)),)},
    "alarms": {"template": "{{ value_json.alarms | join(', ') if value_json.alarms else 'none' }}",
               "extra": (("icon", "mdi:alert-outline"),)},
    "last_seen": {"category": "diagnostic"},
}
"""What only Home Assistant needs beyond the field table (templates, icons, categories)."""


def _scaled(key: str, factor: str, decimals: int) -> str:
    return ("{{ (value_json.%s %s) | round(%d) if value_json.%s is number else none }}"
            % (key, factor, decimals, key))


def _entity(field: Field) -> Entity:
    options: dict[str, Any] = {"unit": field.unit or None, "precision": field.precision}
    if field.percent:
        options["unit"] = "%"
        options["template"] = _scaled(field.key, "* 100", field.precision or 0)
    if field.ha_unit:  # e.g. Wh kept in the state, kWh in Home Assistant (see appliance.fields)
        factor = UNIT_FACTORS[(field.unit, field.ha_unit)]
        options.update(unit=field.ha_unit, precision=field.ha_precision,
                       template=_scaled(field.key, f"/ {factor:g}", round(math.log10(factor))))
    options.update(_HA_EXTRAS.get(field.key, {}))
    return Entity(field.key, field.label, field.device_class, field.state_class, follows=field.follows, **options)


INVERTER_ENTITIES: tuple[Entity, ...] = tuple(_entity(field) for field in FIELDS)
"""Every entity an inverter can have, in display order: one per row of :data:`appliance.fields.FIELDS`."""

ALWAYS = frozenset({"ac_power_w", "lifetime_wh", "energy_today_wh", "state", "last_seen"})
"""Entities every inverter has (from the ledger or the publisher); the others need the field."""

_ENTITY_BY_KEY = {e.key: e for e in INVERTER_ENTITIES}

APPLIANCE_STATUS_ENTITIES: dict[str, Entity] = {
    "inverters": Entity("inverters", "Inverters", state_class="measurement", category="diagnostic",
                        extra=(("icon", "mdi:solar-panel"),)),
    "gateway": Entity("gateway", "Enecsys gateway", category="diagnostic", extra=(("icon", "mdi:router-network"),)),
    "zigbee": Entity("zigbee", "Zigbee", category="diagnostic", extra=(("icon", "mdi:zigbee"),)),
    "wifi": Entity("wifi", "Wi-Fi", category="diagnostic", extra=(("icon", "mdi:wifi"),)),
    # The SD card (the store's health, ``Store.health()``): on when it does not take writes.
    "storage": Entity("storage", "Storage", "problem", category="diagnostic", platform="binary_sensor",
                      template="{{ 'OFF' if value_json.storage == 'ok' else 'ON' }}"),
    "storage_queued": Entity("storage_queued", "Readings waiting for the SD card", state_class="measurement",
                             category="diagnostic", extra=(("icon", "mdi:sd"),)),
}
"""Nice names for the keys ``publish_status()`` is expected to carry; other keys get a plain sensor."""


@dataclass(frozen=True)
class InverterIdentity:
    """What discovery needs to know about an inverter (from the store's ``InverterInfo``)."""

    family: str
    serial: str
    name: str = ""
    model: str = ""
    firmware: str = ""


_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def slug(text: str) -> str:
    """``text`` made safe for a topic level and a Home Assistant object id."""
    return _UNSAFE.sub("_", text) or "_"


def appliance_id(hostname: str) -> str:
    return f"solargw_{slug(hostname)}"


def inverter_id(family: str, serial: str) -> str:
    return f"solargw_{slug(family)}_{slug(serial)}"


def model_name(family: str, model: str) -> str:
    """The vendor's name for a model (``bdm400`` -> ``BDM-400``); others as they are."""
    return nep.model_name(model) if family == "nep" else model


def default_name(family: str, serial: str) -> str:
    return f"{MANUFACTURERS.get(family, family)} {serial}"


def web_url(public_url: str, hostname: str) -> str:
    """The web UI's root URL, with a trailing slash."""
    url = public_url or f"http://{hostname}.local/"
    return url if url.endswith("/") else url + "/"


def inverter_entity_keys(seen_fields: Iterable[str]) -> tuple[str, ...]:
    """The entities an inverter has: the always-present ones plus those its readings carried."""
    present = ALWAYS | set(seen_fields)
    return tuple(e.key for e in INVERTER_ENTITIES if e.key in present)


def _availability(topics: Topics, serial: str, follows: Follows) -> dict[str, Any]:
    entries = [{"topic": topics.service_availability}]
    if follows == "inverter":
        entries.append({"topic": topics.inverter_availability(serial)})
    return {"availability": entries, "availability_mode": "all",
            "payload_available": ONLINE, "payload_not_available": OFFLINE}


def _entity_config(entity: Entity, unique_id: str, state_topic: str) -> dict[str, Any]:
    config: dict[str, Any] = {
        "platform": entity.platform,
        "name": entity.name,
        "unique_id": unique_id,
        "state_topic": state_topic,
        "value_template": entity.template or _value(entity.key),
    }
    for key, value in (("device_class", entity.device_class), ("state_class", entity.state_class),
                       ("unit_of_measurement", entity.unit),
                       ("suggested_display_precision", entity.precision),
                       ("entity_category", entity.category)):
        if value is not None:
            config[key] = value
    config.update(entity.extra)
    return config


def inverter_device(identity: InverterIdentity, appliance: str, url: str) -> dict[str, Any]:
    device: dict[str, Any] = {
        "identifiers": [inverter_id(identity.family, identity.serial)],
        "name": identity.name or default_name(identity.family, identity.serial),
        "manufacturer": MANUFACTURERS.get(identity.family, identity.family),
        "serial_number": identity.serial,
        "via_device": appliance,
        "configuration_url": f"{url}inverter/{identity.serial}",
    }
    if identity.model:
        device["model"] = model_name(identity.family, identity.model)
    if identity.firmware:
        device["sw_version"] = identity.firmware
    return device


def inverter_components(identity: InverterIdentity, keys: Iterable[str],
                        topics: Topics) -> dict[str, dict[str, Any]]:
    """Component configs keyed by the entity key (the per-entity form reuses them)."""
    object_id = inverter_id(identity.family, identity.serial)
    state_topic = topics.inverter_state(identity.serial)
    components = {}
    for key in keys:
        entity = _ENTITY_BY_KEY[key]
        config = _entity_config(entity, f"{object_id}_{key}", state_topic)
        config.update(_availability(topics, identity.serial, entity.follows))
        components[key] = config
    return components


def inverter_discovery(identity: InverterIdentity, keys: Iterable[str], topics: Topics, *,
                       appliance: str, url: str, per_entity: bool = False
                       ) -> list[tuple[str, dict[str, Any]]]:
    """``(topic, payload)`` pairs that announce an inverter: one device config, or one per entity."""
    object_id = inverter_id(identity.family, identity.serial)
    device = inverter_device(identity, appliance, url)
    components = inverter_components(identity, keys, topics)
    if not per_entity:
        return [(topics.device_config(object_id),
                 {"device": device, "origin": ORIGIN, "components": components})]
    pairs = []
    for key, config in components.items():
        entity = {k: v for k, v in config.items() if k != "platform"}
        entity.update(device=device, origin=ORIGIN)
        pairs.append((topics.entity_config(config["platform"], object_id, key), entity))
    return pairs


def inverter_discovery_topics(family: str, serial: str, topics: Topics) -> list[str]:
    """Every config topic an inverter may have used (both forms), for removal."""
    object_id = inverter_id(family, serial)
    return [topics.device_config(object_id)] + [
        topics.entity_config("sensor", object_id, e.key) for e in INVERTER_ENTITIES]


def iso_time(timestamp: float) -> str:
    return _dt.datetime.fromtimestamp(timestamp, _dt.timezone.utc).isoformat(timespec="seconds")


def _json_value(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    return value


def inverter_state(keys: Iterable[str], fields: Mapping[str, Any], *, lifetime_wh: float | None,
                   energy_today_wh: float | None, last_seen: float, asleep: bool = False
                   ) -> dict[str, Any]:
    """The state JSON for one inverter: every entity key present (``None`` when unknown).

    ``asleep``: the inverter has been silent for longer than the stale time; power reads 0,
    ``state`` reads ``sleeping``, the energies keep their ledger values and the inverter-bound
    measurements are dropped (their entities are unavailable anyway).
    """
    state: dict[str, Any] = {}
    for key in keys:
        entity = _ENTITY_BY_KEY[key]
        if key == "lifetime_wh":
            value: Any = lifetime_wh
        elif key == "energy_today_wh":
            value = energy_today_wh if energy_today_wh is not None else fields.get(key)
        elif key == "last_seen":
            value = iso_time(last_seen)
        elif asleep and key in POWER_KEYS:
            value = 0
        elif asleep and key == "state":
            value = "sleeping"
        elif asleep and entity.follows == "inverter":
            value = None
        else:
            value = _json_value(fields.get(key))
        if key == "state" and value not in STATES:
            value = "unknown" if value is not None else None
        if key == "alarms" and isinstance(value, str):
            value = [value] if value else []
        state[key] = value
    state["asleep"] = asleep
    return state


def appliance_name(hostname: str) -> str:
    """``solargw`` once: the default host name is the name; another one is said after it
    (Home Assistant makes entity ids from it: ``sensor.solargw_zigbee``, ``sensor.solargw_garage_zigbee``)."""
    return hostname if "solargw" in hostname.lower() else f"solargw {hostname}"


def appliance_device(hostname: str, url: str) -> dict[str, Any]:
    return {
        "identifiers": [appliance_id(hostname)],
        "name": appliance_name(hostname),
        "manufacturer": "solargw",
        "model": "solargw appliance",
        "sw_version": __version__,
        "configuration_url": url,
    }


def appliance_discovery(hostname: str, url: str, topics: Topics, status_keys: Iterable[str], *,
                        per_entity: bool = False) -> list[tuple[str, dict[str, Any]]]:
    """This service's part of the appliance device: when it started, plus one sensor per status key.

    The status JSON always carries ``started`` (an ISO time: the service's uptime, shown by
    Home Assistant as "x hours ago") and ``version``.
    """
    object_id = f"{appliance_id(hostname)}_{slug(topics.service)}"
    service = topics.service.capitalize()
    entities = [Entity("started", f"{service} service started", "timestamp", category="diagnostic"),
                Entity("version", f"{service} service version", category="diagnostic",
                       extra=(("icon", "mdi:information-outline"),))]
    for key in status_keys:
        if key in ("started", "version"):
            continue
        known = APPLIANCE_STATUS_ENTITIES.get(key)
        entities.append(known or Entity(slug(key), key.replace("_", " ").capitalize(),
                                        category="diagnostic",
                                        template="{{ value_json['%s'] }}" % slug(key)))
    availability = {"availability": [{"topic": topics.service_availability}],
                    "payload_available": ONLINE, "payload_not_available": OFFLINE}
    components = {}
    for entity in entities:
        config = _entity_config(entity, f"{object_id}_{entity.key}", topics.status)
        config.update(availability)
        components[entity.key] = config
    device = appliance_device(hostname, url)
    if not per_entity:
        return [(topics.device_config(object_id),
                 {"device": device, "origin": ORIGIN, "components": components})]
    return [(topics.entity_config(config["platform"], object_id, key),
             {**{k: v for k, v in config.items() if k != "platform"}, "device": device,
              "origin": ORIGIN})
            for key, config in components.items()]


def status_state(status: Mapping[str, Any], *, started: float) -> dict[str, Any]:
    """The service's status JSON: scalars kept, anything else as short text."""
    state: dict[str, Any] = {"started": iso_time(started), "version": __version__}
    for key, value in status.items():
        if key in ("started", "version"):
            continue
        if not (value is None or isinstance(value, (bool, int, float, str))):
            value = str(value)[:255]
        state[slug(key) if key not in APPLIANCE_STATUS_ENTITIES else key] = value
    return state
