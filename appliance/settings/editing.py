"""Editing the settings file in place: the settings pages and an import write some sections.

The other sections are kept as the file has them; a file that does not load at all is
repaired from what a service would run on (:mod:`appliance.settings.recovery`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from appliance.settings.model import Settings, SettingsError
from appliance.settings.recovery import keep_broken, load_recovering
from appliance.settings.rules import require_valid
from appliance.settings.storage import load, save


def save_sections(new: Settings, sections: Iterable[str], path: Path | str) -> Settings:
    """Write ``sections`` of ``new`` into the file at ``path`` and return what it now says.

    The other sections are taken from the file as it is, not from ``new``, so values that
    came from environment overrides (``NEP_LISTEN_PORT``...) are never written. A file that
    does not load at all (broken TOML, not UTF-8) is repaired: the other sections come from
    what a service would run on (:func:`appliance.settings.recovery.load_recovering`) and the
    broken file is kept beside it. Nothing is written when the result would break a value
    rule (``SettingsError`` lists the problems)."""
    path = Path(path)
    try:
        on_disk = load(path, env={})
        broken = False
    except SettingsError:
        on_disk, broken = load_recovering(path, env={}).settings, True
    for name in sections:
        setattr(on_disk, name, getattr(new, name))
    require_valid(on_disk)
    if broken:
        keep_broken(path)
    save(on_disk, path)
    return load(path)
