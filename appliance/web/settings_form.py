"""The settings pages' forms: form text in, typed settings or per-field errors out.

Each page edits one section of the settings file. ``parse_section`` turns the
submitted form into a new :class:`~appliance.settings.Settings` plus a dict of
errors keyed by field name, so the page can show each message beside its field.
The value rules are :func:`appliance.settings.validate`'s, the same ones a
hand-edited or imported file meets. Secret fields left empty in a form keep
their stored value (the pages never echo secrets back).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from appliance.settings import Settings, validate
from appliance.settings.rules import password_error

Errors = dict[str, str]

SECRET_FIELDS = {
    ("access_point", "passphrase"),
    ("upstream_wifi", "passphrase"),
    ("mqtt", "password"),
    ("pvoutput", "api_key"),
}
"""Fields whose stored value is never shown; an empty submission keeps it."""

SECTION_FIELDS: dict[str, tuple[str, ...]] = {
    "access_point": ("ssid", "passphrase", "country", "channel"),
    "upstream_wifi": ("enabled", "ssid", "passphrase"),
    "mqtt": ("enabled", "host", "port", "tls", "username", "password", "discovery_prefix", "retain"),
    "relay": ("enabled", "host", "address", "timeout_seconds"),
    "system": ("timezone",),
    "pvoutput": ("enabled", "api_key", "system_id", "interval_minutes"),
    "gateway": ("enabled",),
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
    for key, message in validate(updated, sections=(section,)).items():
        name = key.partition(".")[2]
        if name in SECTION_FIELDS[section]:
            errors.setdefault(name, message)
        else:  # a key this page does not show (edited in the file): said at the top of the section
            errors.setdefault("_", f"[{section}] {name}: {message}")
    return updated, errors


SYSTEM_FOR = "system_for."
"""Form fields ``system_for.<serial>``: the PVOutput system of one inverter (empty: the default system)."""


def _pvoutput_systems(form: Mapping[str, str], current: Mapping[str, int]) -> tuple[dict[str, str], dict[str, int], Errors]:
    """The inverter-to-system table from the PVOutput form (inverters the form does not show keep
    theirs), and the form with an empty default system id read as 0 (none) and the key trimmed."""
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
