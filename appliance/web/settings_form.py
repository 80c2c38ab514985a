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
}
"""Fields whose stored value is never shown; an empty submission keeps it."""

SECTION_FIELDS: dict[str, tuple[str, ...]] = {
    "access_point": ("ssid", "passphrase", "country", "channel"),
    "upstream_wifi": ("enabled", "ssid", "passphrase"),
    "mqtt": ("enabled", "host", "port", "tls", "username", "password", "discovery_prefix", "retain"),
    "relay": ("enabled", "host", "address", "timeout_seconds"),
    "system": ("timezone",),
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
