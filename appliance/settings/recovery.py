"""A broken settings file must not stop a service: run on the last good settings instead.

Every time a service accepts the file (it loads and passes every rule), a copy of its bytes is
kept beside it as ``solargw.toml.last-good`` (same mode and owner; written only when it
differs). When a service starts on a file that does not load (broken TOML, not UTF-8,
unreadable) or breaks a rule, :func:`load_recovering` gives it settings to run on, and one
line that says what happened (shown on the status page and logged once):

1. the sections of the broken file that are fine on their own are kept;
2. the others come from the last good copy, or from the defaults when there is none.

So the web UI stays reachable to fix the file (its password and session key are in the last
good copy), the access point keeps its address and passphrase (the inverters know them), and
a service never restarts in a loop on a file that only a reflash could otherwise repair.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

from appliance.atomic import write_atomic
from appliance.settings.model import Settings, SettingsError, from_dict
from appliance.settings.rules import require_valid, validate
from appliance.settings.storage import (
    _apply_environment,
    parse,
    read_file,
    settings_path,
)

log = logging.getLogger(__name__)

LAST_GOOD_SUFFIX = ".last-good"
Adjust = Callable[[Settings], Settings]


def last_good_path(path: Path | str) -> Path:
    path = Path(path)
    return path.with_name(path.name + LAST_GOOD_SUFFIX)


@dataclass(frozen=True)
class Loaded:
    settings: Settings
    problem: str = ""
    """Empty when the file was used as it is; else what was wrong and what runs instead."""
    data: bytes | None = None
    """The file's bytes when it was used as it is (to keep as the last good copy)."""


def load_checked(path: Path, env: Mapping[str, str], adjust: Adjust | None = None) -> Loaded:
    """The file loaded, adjusted and checked against every rule (``SettingsError`` if not)."""
    data = read_file(path)
    settings = parse(data, path, env)
    if adjust is not None:
        settings = adjust(settings)
    return Loaded(require_valid(settings), "", data)


def keep_last_good(path: Path, data: bytes | None) -> bool:
    """Keep ``data`` (the accepted file's bytes) as the last good copy; True when written.
    Never raises: a service that cannot write there (a read-only /etc) runs on without it."""
    if data is None:
        return False
    copy = last_good_path(path)
    try:
        if copy.read_bytes() == data:
            return False
    except OSError:
        pass
    try:
        write_atomic(copy, data, owner_of=path)
    except OSError as exc:
        log.debug("cannot keep %s: %s", copy, exc)
        return False
    return True


def keep_broken(path: Path) -> Path | None:
    """Keep a broken settings file beside it (``solargw.toml.broken-<time>``) before it is
    replaced; the copy's name, or None when there was nothing to keep. Never raises."""
    try:
        data = path.read_bytes()
        mode = path.stat().st_mode & 0o777
    except OSError:
        return None
    copy = path.with_name(f"{path.name}.broken-{time.strftime('%Y%m%d-%H%M%S')}")
    try:
        fd = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            os.fchmod(handle.fileno(), mode)
    except OSError as exc:
        log.warning("cannot keep the broken settings file as %s: %s", copy, exc.strerror or exc)
        return None
    log.warning("the broken settings file is kept as %s", copy)
    return copy


def load_recovering(path: Path | str | None = None, env: Mapping[str, str] | None = None,
                    adjust: Adjust | None = None) -> Loaded:
    """The file's settings when it is good (the last good copy is refreshed then); else settings to
    run on (see the module's docstring) and ``problem`` saying why. Never raises ``SettingsError``."""
    env = os.environ if env is None else env
    path = Path(path) if path is not None else settings_path(env)
    try:
        loaded = load_checked(path, env, adjust)
    except SettingsError as exc:
        problem = str(exc)
    else:
        keep_last_good(path, loaded.data)
        return loaded
    try:
        copy = load_checked(last_good_path(path), env, adjust)
    except SettingsError:
        copy = None
    if copy is not None and copy.data is not None:
        base, source = copy.settings, "the last good copy"
    else:
        base, source = _defaults(path, env, adjust), "defaults"
    base.path = path
    settings, kept = _salvage(path, base, env, adjust)
    if kept:
        instead = f"running on its sections {_sections(kept)} with {source} for the rest"
    else:
        instead = f"running on {source}"
    where = "" if problem.startswith(str(path)) else f"{path}: "
    return Loaded(settings, f"{where}{problem}; {instead} until the file is fixed")


def _defaults(path: Path, env: Mapping[str, str], adjust: Adjust | None) -> Settings:
    settings = parse(None, path, env)
    return adjust(settings) if adjust is not None else settings


def _salvage(path: Path, base: Settings, env: Mapping[str, str], adjust: Adjust | None) -> tuple[Settings, list[str]]:
    """``base`` with every section of the file that loads and passes its rules on top of it."""
    try:
        data = read_file(path)
        table = tomllib.loads(data.decode("utf-8")) if data is not None else {}
    except (SettingsError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return base, []
    good = base
    kept: list[str] = []
    for name, values in table.items():
        try:
            candidate = from_dict({name: values}, base=good)
        except SettingsError:
            continue
        candidate.path = path
        candidate = _apply_environment(candidate, env)
        if adjust is not None:
            candidate = adjust(candidate)
        if not validate(candidate, sections=[name]):
            good, kept = candidate, [*kept, name]
    while kept and validate(good):  # a rule across sections still broken: drop the last section taken
        kept.pop()
        good = _with_sections(base, good, kept)
    return good, kept


def _with_sections(base: Settings, good: Settings, names: list[str]) -> Settings:
    result = dataclasses.replace(base)
    for name in names:
        setattr(result, name, getattr(good, name))
    return result


def _sections(names: list[str]) -> str:
    return ", ".join(f"[{name}]" for name in names)


__all__ = ["LAST_GOOD_SUFFIX", "Loaded", "keep_broken", "keep_last_good", "last_good_path", "load_checked", "load_recovering"]
