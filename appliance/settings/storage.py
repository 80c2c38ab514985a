"""The settings file: where it is, reading it (plus environment overrides) and writing it.

``SOLARGW_SETTINGS`` names another file than ``/etc/solargw/solargw.toml``;
``SOLARGW_DATA_DIR`` and the seed NEP server's ``NEP_LISTEN_ADDR`` /
``NEP_LISTEN_PORT`` / ``NEP_MQTT_ADDR`` / ``NEP_MQTT_PORT`` override the file, so the
collector also runs outside the appliance. A missing file means defaults.
"""
from __future__ import annotations

import dataclasses
import os
import tomllib
from pathlib import Path
from typing import Mapping

import tomli_w

from appliance.atomic import write_atomic
from appliance.settings.model import Settings, SettingsError, from_dict
from appliance.settings.rules import require_valid

DEFAULT_PATH = Path("/etc/solargw/solargw.toml")


def _apply_environment(settings: Settings, env: Mapping[str, str]) -> Settings:
    def port(name: str) -> int:
        try:
            value = int(env[name])
        except ValueError:
            raise SettingsError(f"{name}: expected a port number, got {env[name]!r}") from None
        if not 0 < value < 65536:
            raise SettingsError(f"{name}: {value} is not a port number")
        return value

    web, mqtt, data = settings.web, settings.mqtt, settings.data
    if "NEP_LISTEN_ADDR" in env:
        web = dataclasses.replace(web, listen_addr=env["NEP_LISTEN_ADDR"])
    if "NEP_LISTEN_PORT" in env:
        web = dataclasses.replace(web, port=port("NEP_LISTEN_PORT"))
    if "NEP_MQTT_ADDR" in env:
        mqtt = dataclasses.replace(mqtt, host=env["NEP_MQTT_ADDR"], enabled=True)
    if "NEP_MQTT_PORT" in env:
        mqtt = dataclasses.replace(mqtt, port=port("NEP_MQTT_PORT"))
    if "SOLARGW_DATA_DIR" in env:
        data = dataclasses.replace(data, dir=env["SOLARGW_DATA_DIR"])
    return dataclasses.replace(settings, web=web, mqtt=mqtt, data=data)


ENVIRONMENT_PREFIXES = ("SOLARGW_", "NEP_")
"""The variables solargw reads from its environment begin so."""


def without_overrides(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """``env`` (this process's environment) without the variables solargw reads: for a child
    service that must run on the settings it is given, not on what its parent was started with."""
    env = os.environ if env is None else env
    return {k: v for k, v in env.items() if not k.startswith(ENVIRONMENT_PREFIXES)}


def settings_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get("SOLARGW_SETTINGS", str(DEFAULT_PATH)))


def file_fingerprint(path: Path | str) -> tuple[int, int, int] | None:
    """What changes when the settings file is rewritten (``save`` replaces it), None without one:
    the long-running services poll it to follow edits."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def read_file(path: Path) -> bytes | None:
    """The file's bytes, None when there is none (``SettingsError`` when it cannot be read)."""
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SettingsError(f"{path}: cannot read: {exc.strerror}") from None


def parse(data: bytes | None, path: Path, env: Mapping[str, str]) -> Settings:
    """Settings from the file's bytes (None: no file, defaults), then the environment overrides."""
    try:
        table = tomllib.loads(data.decode("utf-8")) if data is not None else {}
    except UnicodeDecodeError as exc:
        raise SettingsError(f"{path}: not valid TOML: not UTF-8 text (byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path}: not valid TOML: {exc}") from None
    settings = from_dict(table)
    settings.path = path
    return _apply_environment(settings, env)


def load(path: Path | str | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Read the settings file (defaults if it does not exist), then the environment overrides.

    Types are checked (``SettingsError`` names the key); value rules are not: see
    :func:`load_valid`."""
    env = os.environ if env is None else env
    path = Path(path) if path is not None else settings_path(env)
    return parse(read_file(path), path, env)


def load_valid(path: Path | str | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """:func:`load`, then every value rule (:func:`appliance.settings.rules.validate`): a
    ``SettingsError`` lists each problem with its key."""
    return require_valid(load(path, env))


def save(settings: Settings, path: Path | str | None = None) -> Path:
    """Write the file atomically (mode 0600: it holds secrets)."""
    path = Path(path or settings.path or settings_path())
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, tomli_w.dumps(settings.to_dict()), 0o600)
    return path
