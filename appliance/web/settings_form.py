"""Validation of the settings pages: form text in, typed settings or per-field errors out.

Each page edits one section of the settings file. ``parse_section`` turns the
submitted form into a new :class:`~appliance.settings.Settings` plus a dict of
errors keyed by field name, so the page can show each message beside its field.
``check`` runs the same value rules over a whole Settings object: an imported
TOML file is held to exactly the rules the forms are. Secret fields left empty
in a form keep their stored value (the pages never echo secrets back).
"""
from __future__ import annotations

import dataclasses
import ipaddress
import re
import urllib.parse
import zoneinfo
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Mapping

from appliance.net import hostapd, wifi
from appliance.net.addressing import NetConfigError
from appliance.settings import Settings

Errors = dict[str, str]

SECRET_FIELDS = {
    ("access_point", "passphrase"),
    ("upstream_wifi", "passphrase"),
    ("mqtt", "password"),
    ("pvoutput", "api_key"),
}
"""Fields whose stored value is never shown; an empty submission keeps it."""

_HOSTNAME = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$")


# --- single-value rules (each returns an error message or None) -------------------------------

def _net_rule(check: Callable[..., Any], *args: Any) -> str | None:
    """Run one of the net service's own checks (the ones hostapd and wpa_supplicant configs are
    built with), so the form refuses exactly what the access point would; the message without its key."""
    try:
        check(*args, "value")
    except NetConfigError as exc:
        return str(exc).split(": ", 1)[-1]
    return None


def passphrase_error(value: str) -> str | None:
    """WPA2 passphrase: 8 to 63 printable ASCII characters."""
    return _net_rule(wifi.check_passphrase, value)


def ssid_error(value: str) -> str | None:
    """1 to 32 bytes, no control characters."""
    return _net_rule(wifi.check_ssid, value)


@lru_cache(maxsize=1)
def country_codes() -> frozenset[str]:
    """ISO 3166 alpha-2 codes from tzdata's table (on every Debian system); empty if absent."""
    try:
        text = Path("/usr/share/zoneinfo/iso3166.tab").read_text(encoding="utf-8")
    except OSError:
        return frozenset()
    return frozenset(line.split("\t", 1)[0] for line in text.splitlines() if line and not line.startswith("#"))


def country_error(value: str) -> str | None:
    if not re.fullmatch(r"[A-Z]{2}", value):
        return "two capital letters, the ISO 3166 country code (for example GB, DE, US)"
    codes = country_codes()
    if codes and value not in codes:
        return f"{value} is not an ISO 3166 country code"
    return None


def channel_error(value: int, country: str) -> str | None:
    """2.4 GHz channels 1-13 (14 only in Japan); the country code sets the rest in hostapd."""
    try:
        hostapd.check_channel(value, country)
    except NetConfigError as exc:
        return str(exc).split(": ", 1)[-1]
    return None


def host_error(value: str) -> str | None:
    if not value:
        return "must not be empty"
    try:
        ipaddress.ip_address(value)
        return None
    except ValueError:
        pass
    if not _HOSTNAME.match(value):
        return "not a valid host name or IP address"
    return None


def address_error(value: str) -> str | None:
    if not value:
        return None
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return "not an IP address (leave empty to look the name up)"
    return None


def port_error(value: int) -> str | None:
    return None if 1 <= value <= 65535 else "must be a port number from 1 to 65535"


def topic_prefix_error(value: str) -> str | None:
    if not value:
        return "must not be empty"
    if any(c in value for c in "#+\0") or value.startswith("/") or value.endswith("/"):
        return "an MQTT topic without wildcards (# +) and without a leading or trailing /"
    return None


def timezone_error(value: str) -> str | None:
    return None if value in zoneinfo.available_timezones() else f"unknown time zone {value!r} (for example Europe/London)"


def password_error(value: str) -> str | None:
    if len(value) < 8:
        return "must be at least 8 characters"
    if len(value) > 256:
        return "must be at most 256 characters"
    return None


def timeout_error(value: float) -> str | None:
    return None if 0.5 <= value <= 60 else "must be between 0.5 and 60 seconds"


MAX_SYSTEM_ID = 2**31 - 1


def pvoutput_key_error(value: str, enabled: bool) -> str | None:
    if not value:
        return "the API key from PVOutput (Settings, API Settings) is needed to upload" if enabled else None
    if len(value) > 100 or any(c.isspace() or not c.isprintable() for c in value):
        return "an API key is up to 100 characters without spaces (PVOutput's are 40 letters and digits)"
    return None


def pvoutput_system_error(value: int) -> str | None:
    if not 0 <= value <= MAX_SYSTEM_ID:
        return "a PVOutput system id is a whole number (0: none)"
    return None


def pvoutput_interval_error(value: int) -> str | None:
    from appliance.pvoutput.api import INTERVALS_MINUTES

    if value not in INTERVALS_MINUTES:
        return "5, 10 or 15 minutes: the Status Interval of the system on PVOutput"
    return None


def url_error(value: str) -> str | None:
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "an http:// or https:// address"
    return None


# --- whole-settings check (forms and imports) --------------------------------------------------

def check(settings: Settings) -> Errors:
    """Every rule the settings pages enforce, keyed ``section.field``."""
    errors: Errors = {}

    def add(key: str, message: str | None) -> None:
        if message:
            errors[key] = message

    ap = settings.access_point
    add("access_point.ssid", ssid_error(ap.ssid))
    if ap.passphrase:  # empty: the first boot generates one
        add("access_point.passphrase", passphrase_error(ap.passphrase))
    add("access_point.country", country_error(ap.country))
    add("access_point.channel", channel_error(ap.channel, ap.country))
    up = settings.upstream_wifi
    if up.enabled:
        add("upstream_wifi.ssid", ssid_error(up.ssid))
        add("upstream_wifi.passphrase", passphrase_error(up.passphrase) if up.passphrase else None)
    mq = settings.mqtt
    add("mqtt.host", host_error(mq.host))
    add("mqtt.port", port_error(mq.port))
    add("mqtt.discovery_prefix", topic_prefix_error(mq.discovery_prefix))
    add("mqtt.base_topic", topic_prefix_error(mq.base_topic))
    if mq.password and not mq.username:
        errors["mqtt.username"] = "a password needs a user name"
    rl = settings.relay
    add("relay.host", host_error(rl.host))
    add("relay.address", address_error(rl.address))
    add("relay.timeout_seconds", timeout_error(rl.timeout_seconds))
    add("system.timezone", timezone_error(settings.system.timezone))
    pv = settings.pvoutput
    add("pvoutput.api_key", pvoutput_key_error(pv.api_key, pv.enabled))
    add("pvoutput.system_id", pvoutput_system_error(pv.system_id))
    if pv.enabled and not pv.system_id and not any(pv.inverters.values()):
        errors.setdefault("pvoutput.system_id", "the PVOutput system id is needed (or one per inverter)")
    for serial, system in pv.inverters.items():
        add(f"pvoutput.system_for.{serial}", pvoutput_system_error(system))
    add("pvoutput.interval_minutes", pvoutput_interval_error(pv.interval_minutes))
    add("pvoutput.base_url", url_error(pv.base_url))
    return errors


# --- form parsing -------------------------------------------------------------------------------

SECTION_FIELDS: dict[str, tuple[str, ...]] = {
    "access_point": ("ssid", "passphrase", "country", "channel"),
    "upstream_wifi": ("enabled", "ssid", "passphrase"),
    "mqtt": ("enabled", "host", "port", "tls", "username", "password", "discovery_prefix", "retain"),
    "relay": ("enabled", "host", "address", "timeout_seconds"),
    "system": ("timezone",),
    "pvoutput": ("enabled", "api_key", "system_id", "interval_minutes"),
}
"""What each settings page edits (checkboxes are the booleans)."""


def _typed(default: Any, text: str, present: bool) -> tuple[Any, str | None]:
    if isinstance(default, bool):
        return present and text not in ("", "0", "off", "false"), None
    if isinstance(default, int):
        try:
            return int(text.strip()), None
        except ValueError:
            return default, "must be a whole number"
    if isinstance(default, float):
        try:
            return float(text.strip()), None
        except ValueError:
            return default, "must be a number"
    return text.strip(), None


def parse_section(section: str, form: Mapping[str, str], current: Settings) -> tuple[Settings, Errors]:
    """Apply one page's form to ``current``; errors are keyed by bare field name."""
    if section not in SECTION_FIELDS:
        raise KeyError(section)
    values = getattr(current, section)
    changes: dict[str, Any] = {}
    errors: Errors = {}
    if section == "pvoutput":
        form, changes["inverters"], errors = _pvoutput_systems(form, values.inverters)
    for name in SECTION_FIELDS[section]:
        default = getattr(values, name)
        text = form.get(name, "")
        if (section, name) in SECRET_FIELDS:
            if text == "":
                continue  # keep the stored secret
            changes[name] = text  # secrets are taken verbatim (spaces are legal in a passphrase)
            continue
        value, error = _typed(default, text, name in form)
        if section == "access_point" and name == "country":
            value = str(value).upper()
        if error:
            errors[name] = error
        else:
            changes[name] = value
    if section == "upstream_wifi" and form.get("forget_passphrase"):
        changes["passphrase"] = ""
    updated = dataclasses.replace(current, **{section: dataclasses.replace(values, **changes)})
    updated.path = current.path
    prefix = section + "."
    for key, message in check(updated).items():
        if key.startswith(prefix):
            errors.setdefault(key[len(prefix):], message)
    return updated, errors


SYSTEM_FOR = "system_for."
"""Form fields ``system_for.<serial>``: the PVOutput system of one inverter (empty: the default system)."""


def _pvoutput_systems(form: Mapping[str, str], current: Mapping[str, int]) -> tuple[dict[str, str], dict[str, int], Errors]:
    """The inverter-to-system table from the PVOutput form; inverters the form does not show keep theirs.
    An empty default system id means 0 (none)."""
    mapping, errors = dict(current), {}
    for name, text in form.items():
        if not name.startswith(SYSTEM_FOR) or len(name) == len(SYSTEM_FOR):
            continue
        serial, text = name[len(SYSTEM_FOR):], text.strip()
        if not text:
            mapping.pop(serial, None)
        elif text.isdigit():
            mapping[serial] = int(text)
        else:
            errors[name] = "a PVOutput system id (empty: the system above, 0: not uploaded)"
    form = dict(form)
    form["api_key"] = form.get("api_key", "").strip()
    if not form.get("system_id", "").strip():
        form["system_id"] = "0"
    return form, mapping, errors


def parse_password_change(form: Mapping[str, str]) -> tuple[str, Errors]:
    """New admin password and confirmation; returns the password or errors keyed by field."""
    new = form.get("new_password", "")
    errors: Errors = {}
    message = password_error(new)
    if message:
        errors["new_password"] = message
    elif form.get("confirm_password", "") != new:
        errors["confirm_password"] = "the two passwords differ"
    return new, errors
