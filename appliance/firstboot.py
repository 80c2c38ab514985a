"""First boot: apply the boot partition's ``solargw.toml`` and make the card unique.

The boot partition's file is edited by the owner on any computer after flashing.
It may hold any section of the settings file plus three keys of its own:
``[admin] password`` (stored only as a werkzeug hash), ``[system]
ssh_authorized_keys`` (root's keys; SSH is enabled only then) and the
``[system] timezone`` / ``hostname`` values, which are also applied to the
system. Whatever is still missing afterwards is generated per device: the
access-point passphrase, the web session key, the machine id and the SSH host
keys; a card image never carries a shared default.

Then every applied line of the boot file is commented out, secret values are
removed, and a note says when it was applied: running again changes nothing
(the unit runs at every boot, so an owner can drop in a new file later, e.g. to
reset a forgotten password).

That repair path must work when ``/etc/solargw/solargw.toml`` itself is broken (not
TOML, not UTF-8, a value breaking a rule): the boot file is then applied on top of
what the services run on (:func:`appliance.settings.load_recovering`: the file's good
sections, the last good copy for the rest), and the broken file is kept beside it
(``solargw.toml.broken-<time>``), which the output and the log say.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import grp
import logging
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import tomllib
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from werkzeug.security import generate_password_hash

from appliance import settings as settings_mod
from appliance.atomic import write_atomic
from appliance.settings import rules

log = logging.getLogger(__name__)

BOOT_FILE = "solargw.toml"
SECRET_KEYS = {("access_point", "passphrase"), ("admin", "password"), ("upstream_wifi", "passphrase")}
APPLIED_NOTE = "# solargw first boot: the settings below were applied on {when}"
# No 0/O or 1/l/I: the passphrase is typed from the web UI into an inverter's app.
PASSPHRASE_ALPHABET = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
SERVICE_USER = "solargw"


class FirstBootError(ValueError):
    """The boot file cannot be applied; the message says why (the file is left as it is)."""


@dataclass
class Result:
    applied: list[str] = field(default_factory=list)
    generated: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    """What was wrong with the existing settings file, and where the broken one was kept."""
    settings_changed: bool = False
    boot_file_scrubbed: bool = False

    @property
    def changed(self) -> bool:
        return bool(self.applied or self.generated or self.repaired or self.settings_changed
                    or self.boot_file_scrubbed)


def random_passphrase(groups: int = 4, size: int = 4) -> str:
    """A WPA2 passphrase that is easy to type: e.g. ``x7Kq-9mPa-...`` (~94 bits)."""
    return "-".join(
        "".join(secrets.choice(PASSPHRASE_ALPHABET) for _ in range(size)) for _ in range(groups)
    )


def read_boot_file(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise FirstBootError(f"{path}: not valid TOML: {exc}") from None


def split_boot_data(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(settings sections, the boot file's own keys), the latter checked; the settings are
    checked once applied (:func:`appliance.settings.validate`, as every settings file is)."""
    data = {name: dict(values) if isinstance(values, dict) else values for name, values in data.items()}
    own: dict[str, Any] = {}
    admin = data.get("admin")
    if isinstance(admin, dict) and "password" in admin:
        password = admin.pop("password")
        problem = rules.password_error(password) if isinstance(password, str) else "expected text"
        if problem:
            raise FirstBootError(f"[admin] password: {problem}")
        own["password"] = password
    system = data.get("system")
    if isinstance(system, dict):
        if "ssh_authorized_keys" in system:
            keys = system.pop("ssh_authorized_keys")
            if isinstance(keys, str):
                keys = [keys]
            if not isinstance(keys, list) or not all(isinstance(k, str) and k.strip() for k in keys):
                raise FirstBootError("[system] ssh_authorized_keys: expected a list of public keys")
            for key in keys:
                if not re.match(r"^(ssh-|ecdsa-|sk-)\S+ \S+", key.strip()):
                    raise FirstBootError(f"[system] ssh_authorized_keys: not an SSH public key: {key[:30]!r}")
            own["ssh_keys"] = [k.strip() for k in keys]
    if isinstance(data.get("upstream_wifi"), dict) and data["upstream_wifi"].get("ssid"):
        data["upstream_wifi"].setdefault("enabled", True)
    return {k: v for k, v in data.items() if v != {}}, own


def scrub(text: str, secrets_found: list[str], when: str) -> str:
    """The boot file with every setting commented out and secret values removed."""
    out = [APPLIED_NOTE.format(when=when),
           "# (secrets were moved to /etc/solargw/solargw.toml and removed from this file;",
           "#  to change a setting again, write it below without the leading '#')"]
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith((APPLIED_NOTE.split("{")[0], "# (secrets were", "#  to change a setting again")):
            continue
        if any(secret and secret in line for secret in secrets_found):
            key = stripped.lstrip("#").split("=", 1)[0].strip()
            out.append(f"# {key} = (applied, removed)" if key and "=" in stripped else "# (removed)")
        elif not stripped or stripped.startswith(("#", "[")):
            out.append(line)
        else:
            out.append(f"# {line}")
    return "\n".join(out) + "\n"


def _secret_values(data: dict[str, Any]) -> list[str]:
    found = []
    for section, key in SECRET_KEYS:
        values = data.get(section)
        if isinstance(values, dict) and isinstance(values.get(key), str):
            found.append(values[key])
    return found


class FirstBoot:
    """Applies the boot file to a system whose file tree starts at ``root``."""

    def __init__(self, boot_dir: Path, root: Path = Path("/"), settings_path: Path | None = None):
        self.boot_dir = Path(boot_dir)
        self.root = Path(root)
        self.live = self.root.resolve() == Path("/")
        self.settings_path = settings_path or self.root / str(settings_mod.DEFAULT_PATH).lstrip("/")

    def run(self) -> Result:
        result = Result()
        boot_file = self.boot_dir / BOOT_FILE
        text = boot_file.read_text() if boot_file.exists() else ""
        data = read_boot_file(boot_file)
        sections, own = split_boot_data(data)
        loaded = settings_mod.load_recovering(self.settings_path, env={})
        current = loaded.settings
        if loaded.problem:
            kept = settings_mod.keep_broken(self.settings_path)
            result.repaired.append(loaded.problem)
            if kept is not None:
                result.repaired.append(f"the broken file is kept as {kept}")
            log.warning("%s", loaded.problem)
        try:
            updated = settings_mod.require_valid(settings_mod.from_dict(sections, base=current))
        except settings_mod.SettingsError as exc:
            raise FirstBootError(f"{boot_file}: {exc}") from None
        if sections:
            result.applied.append("settings: " + ", ".join(
                f"[{name}] {', '.join(sorted(values))}" for name, values in sorted(sections.items())))
        if "password" in own:
            updated.admin = dataclasses.replace(updated.admin,
                                                password_hash=generate_password_hash(own["password"]))
            result.applied.append("admin password")
        if "ssh_keys" in own:
            self._install_ssh_keys(own["ssh_keys"])
            updated.system = dataclasses.replace(updated.system, ssh_enabled=True)
            result.applied.append(f"{len(own['ssh_keys'])} SSH key(s); SSH enabled")
        self._generate_missing(updated, result)
        if "timezone" in sections.get("system", {}):
            self._set_timezone(updated.system.timezone)
        if "hostname" in sections.get("system", {}):
            self._set_hostname(updated.system.hostname)
        if updated.system.ssh_enabled:
            self._enable_ssh()
        if updated.to_dict() != current.to_dict() or not self.settings_path.exists() or loaded.problem:
            settings_mod.save(updated, self.settings_path)
            result.settings_changed = True
        self._fix_settings_ownership()
        if self.settings_path.exists():  # what the services fall back on if the file breaks later
            settings_mod.keep_last_good(self.settings_path, self.settings_path.read_bytes())
        if data and (sections or own):
            # The image's root file system commits its journal only every 10 minutes
            # (commit=600, image/build.py): what was applied must be on the card before the
            # boot partition's copy loses its secrets, or a power cut could lose both.
            os.sync()
            when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
            write_atomic(boot_file, scrub(text, _secret_values(data), when), 0o644)
            result.boot_file_scrubbed = True
        return result

    # -- per-device values -------------------------------------------------
    def _generate_missing(self, settings: settings_mod.Settings, result: Result) -> None:
        if not settings.access_point.passphrase:
            settings.access_point = dataclasses.replace(settings.access_point,
                                                        passphrase=random_passphrase())
            result.generated.append("access point passphrase")
        if not settings.admin.secret_key:
            settings.admin = dataclasses.replace(settings.admin, secret_key=secrets.token_hex(32))
            result.generated.append("web session key")
        machine_id = self.root / "etc/machine-id"
        current = machine_id.read_text().strip() if machine_id.exists() else ""
        if not re.fullmatch(r"[0-9a-f]{32}", current):
            write_atomic(machine_id, uuid.uuid4().hex + "\n", 0o444)
            result.generated.append("machine id")
        ssh_dir = self.root / "etc/ssh"
        if ssh_dir.is_dir() and not any(ssh_dir.glob("ssh_host_*_key")) and shutil.which("ssh-keygen"):
            # -A writes every missing host key type under the given prefix.
            subprocess.run(["ssh-keygen", "-A", "-f", str(self.root)], check=True,
                           capture_output=True)
            result.generated.append("SSH host keys")

    # -- system effects ----------------------------------------------------
    def _set_timezone(self, name: str) -> None:
        zoneinfo = self.root / "usr/share/zoneinfo"
        if not (zoneinfo / name).is_file() or ".." in name.split("/"):
            raise FirstBootError(f"[system] timezone: unknown time zone {name!r}")
        localtime = self.root / "etc/localtime"
        target = Path("/usr/share/zoneinfo") / name
        if localtime.is_symlink() and Path(os.readlink(localtime)) == target:
            return
        tmp = localtime.with_name("localtime.tmp")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(target)
        os.replace(tmp, localtime)
        write_atomic(self.root / "etc/timezone", name + "\n", 0o644)

    def _set_hostname(self, name: str) -> None:
        path = self.root / "etc/hostname"
        if not path.exists() or path.read_text().strip() != name:
            write_atomic(path, name + "\n", 0o644)
        hosts = self.root / "etc/hosts"
        lines = hosts.read_text().splitlines() if hosts.exists() else ["127.0.0.1\tlocalhost"]
        wanted = f"127.0.1.1\t{name}"
        new = [wanted if re.match(r"^127\.0\.1\.1\s", line) else line for line in lines]
        if wanted not in new:
            new.append(wanted)
        if new != lines:
            write_atomic(hosts, "\n".join(new) + "\n", 0o644)
        if self.live and socket.gethostname() != name:
            socket.sethostname(name)

    def _install_ssh_keys(self, keys: list[str]) -> None:
        ssh = self.root / "root/.ssh"
        ssh.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = ssh / "authorized_keys"
        existing = path.read_text().splitlines() if path.exists() else []
        merged = existing + [k for k in keys if k not in existing]
        if merged != existing:
            write_atomic(path, "\n".join(merged) + "\n", 0o600)

    def _enable_ssh(self) -> None:
        unit_dirs = (self.root / "usr/lib/systemd/system", self.root / "lib/systemd/system")
        if not any((d / "ssh.service").exists() for d in unit_dirs):
            return
        wants = self.root / "etc/systemd/system/multi-user.target.wants/ssh.service"
        if wants.exists() or wants.is_symlink():
            return
        subprocess.run(["systemctl", f"--root={self.root}", "enable", "ssh.service"],
                       check=True, capture_output=True)
        if self.live:
            subprocess.run(["systemctl", "start", "--no-block", "ssh.service"], check=False)

    def _fix_settings_ownership(self) -> None:
        """The services run as ``solargw``: give them the settings file (when the user exists)."""
        if not self.live or not self.settings_path.exists():
            return
        try:
            uid, gid = pwd.getpwnam(SERVICE_USER).pw_uid, grp.getgrnam(SERVICE_USER).gr_gid
        except KeyError:
            return
        stat = self.settings_path.stat()
        if (stat.st_uid, stat.st_gid) != (uid, gid):
            os.chown(self.settings_path, uid, gid)
        if stat.st_mode & 0o777 != 0o640:
            os.chmod(self.settings_path, 0o640)
