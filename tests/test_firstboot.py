"""First boot on a file tree in a temp dir: the boot file is applied, secrets leave it, reruns change nothing."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
from werkzeug.security import check_password_hash

from appliance import settings as settings_mod
from appliance.cli import main
from appliance.firstboot import FirstBoot, FirstBootError, random_passphrase

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "image" / "solargw.toml.example"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx5dGVzdGtleWZvcnNvbGFyZ3d0ZXN0c29ubHkxMjM0 owner@laptop"


@pytest.fixture()
def system(tmp_path: Path) -> tuple[Path, Path]:
    """A minimal root (zoneinfo, ssh dir, an ssh.service unit) and a boot dir."""
    root, boot = tmp_path / "root", tmp_path / "boot"
    (root / "etc/ssh").mkdir(parents=True)
    (root / "etc/machine-id").write_text("uninitialized\n")
    (root / "etc/hosts").write_text("127.0.0.1\tlocalhost\n127.0.1.1\tsolargw\n")
    zone = root / "usr/share/zoneinfo/Europe"
    zone.mkdir(parents=True)
    shutil.copy("/usr/share/zoneinfo/Europe/Berlin", zone / "Berlin")
    units = root / "usr/lib/systemd/system"
    units.mkdir(parents=True)
    (units / "ssh.service").write_text(
        "[Unit]\nDescription=ssh\n[Service]\nExecStart=/usr/sbin/sshd -D\n"
        "[Install]\nWantedBy=multi-user.target\n")
    boot.mkdir()
    return root, boot


def write_boot_file(boot: Path, text: str) -> Path:
    path = boot / "solargw.toml"
    path.write_text(text)
    return path


FULL = f"""
[access_point]
ssid = "SunnyRoof"
passphrase = "correct horse battery"
[admin]
password = "s3cret-admin"
[system]
timezone = "Europe/Berlin"
hostname = "roof-gw"
ssh_authorized_keys = ["{KEY}"]
[upstream_wifi]
ssid = "HomeNet"
passphrase = "home-net-passphrase"
[mqtt]
host = "broker.lan"
"""


def load(root: Path) -> settings_mod.Settings:
    return settings_mod.load(root / "etc/solargw/solargw.toml", env={})


def test_example_shipped_in_the_image_is_valid_toml_and_sets_nothing(system):
    root, boot = system
    text = EXAMPLE.read_text()
    assert tomllib.loads(text) == {"access_point": {}, "admin": {}, "system": {}, "upstream_wifi": {}}
    write_boot_file(boot, text)
    result = FirstBoot(boot, root=root).run()
    assert not result.applied and not result.boot_file_scrubbed
    # Unset values are generated per device, never a shared default.
    assert "access point passphrase" in result.generated
    assert (boot / "solargw.toml").read_text() == text


def test_applies_every_setting_and_removes_the_secrets(system):
    root, boot = system
    boot_file = write_boot_file(boot, FULL)
    result = FirstBoot(boot, root=root).run()
    assert result.settings_changed and result.boot_file_scrubbed

    s = load(root)
    assert (s.access_point.ssid, s.access_point.passphrase) == ("SunnyRoof", "correct horse battery")
    assert check_password_hash(s.admin.password_hash, "s3cret-admin")
    assert not check_password_hash(s.admin.password_hash, "wrong")
    assert (s.upstream_wifi.enabled, s.upstream_wifi.ssid) == (True, "HomeNet")
    assert s.upstream_wifi.passphrase == "home-net-passphrase"
    assert s.mqtt.host == "broker.lan"
    assert (s.system.timezone, s.system.hostname, s.system.ssh_enabled) == ("Europe/Berlin", "roof-gw", True)
    assert len(s.admin.secret_key) == 64

    # The system itself.
    assert Path(root / "etc/localtime").readlink() == Path("/usr/share/zoneinfo/Europe/Berlin")
    assert (root / "etc/hostname").read_text() == "roof-gw\n"
    assert "127.0.1.1\troof-gw" in (root / "etc/hosts").read_text().splitlines()
    assert (root / "root/.ssh/authorized_keys").read_text() == KEY + "\n"
    assert (root / "root/.ssh/authorized_keys").stat().st_mode & 0o777 == 0o600
    assert (root / "etc/systemd/system/multi-user.target.wants/ssh.service").is_symlink()
    assert re.fullmatch(r"[0-9a-f]{32}\n", (root / "etc/machine-id").read_text())
    assert sorted(p.name for p in (root / "etc/ssh").glob("ssh_host_*_key"))
    assert (root / "etc/solargw/solargw.toml").stat().st_mode & 0o777 == 0o600

    # The boot file keeps no secret, says it was applied, and sets nothing any more.
    scrubbed = boot_file.read_text()
    for secret in ("correct horse battery", "s3cret-admin", "home-net-passphrase"):
        assert secret not in scrubbed
    assert "applied on" in scrubbed
    assert all(not values for values in tomllib.loads(scrubbed).values())
    assert 'ssid = "SunnyRoof"' in scrubbed  # kept as a comment, for the owner to read


def test_what_was_applied_is_synced_before_the_boot_file_loses_its_secrets(system, monkeypatch):
    """The image's root file system commits its journal every 10 minutes (commit=600): without a
    sync, a power cut after the boot file was scrubbed could lose the settings and keys with it."""
    root, boot = system
    boot_file = write_boot_file(boot, FULL)
    seen_at_sync = []
    real_sync = os.sync

    def sync():
        seen_at_sync.append(("settings" if (root / "etc/solargw/solargw.toml").exists() else None,
                             "s3cret-admin" in boot_file.read_text()))
        real_sync()

    monkeypatch.setattr(os, "sync", sync)
    FirstBoot(boot, root=root).run()
    assert seen_at_sync == [("settings", True)]  # once: everything applied, the secrets still there
    assert "s3cret-admin" not in boot_file.read_text()


def test_second_run_changes_nothing(system):
    root, boot = system
    boot_file = write_boot_file(boot, FULL)
    FirstBoot(boot, root=root).run()
    snapshot = {p: p.read_bytes() for p in [*root.rglob("*"), boot_file] if p.is_file()}
    result = FirstBoot(boot, root=root).run()
    assert not result.changed
    assert {p: p.read_bytes() for p in [*root.rglob("*"), boot_file] if p.is_file()} == snapshot


def test_generated_values_survive_a_later_boot_file(system):
    root, boot = system
    FirstBoot(boot, root=root).run()  # no boot file at all: generate everything
    first = load(root)
    assert re.fullmatch(r"([a-zA-Z2-9]{4}-){3}[a-zA-Z2-9]{4}", first.access_point.passphrase)
    write_boot_file(boot, '[admin]\npassword = "another-password"\n')
    FirstBoot(boot, root=root).run()
    second = load(root)
    assert second.access_point.passphrase == first.access_point.passphrase
    assert second.admin.secret_key == first.admin.secret_key
    assert check_password_hash(second.admin.password_hash, "another-password")
    assert not second.system.ssh_enabled
    assert not (root / "etc/systemd/system/multi-user.target.wants/ssh.service").exists()


def test_passphrases_are_random():
    assert len({random_passphrase() for _ in range(50)}) == 50


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[access_point]\npassphrase = "short"\n', "8 to 63"),
        ('[admin]\npassword = "abc"\n', "at least 8"),
        ('[system]\ntimezone = "Mars/Olympus"\n', "unknown time zone"),
        ('[system]\nhostname = "bad_name!"\n', "not a valid host name"),
        ('[system]\nssh_authorized_keys = ["hello"]\n', "not an SSH public key"),
        ('[acess_point]\nssid = "x"\n', "unknown section [acess_point]"),
        ('[access_point]\nsid = "x"\n', "unknown key 'sid'"),
        ("[access_point\n", "not valid TOML"),
    ],
)
def test_bad_boot_file_is_refused_and_left_untouched(system, text, message):
    root, boot = system
    boot_file = write_boot_file(boot, text)
    with pytest.raises(FirstBootError, match=re.escape(message)):
        FirstBoot(boot, root=root).run()
    assert boot_file.read_text() == text


def test_command_line(system, capsys):
    root, boot = system
    write_boot_file(boot, '[access_point]\nssid = "Cli"\npassphrase = "cli-passphrase"\n')
    assert main(["firstboot", "--boot-dir", str(boot), "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "applied: settings: [access_point] passphrase, ssid" in out
    assert main(["firstboot", "--boot-dir", str(boot), "--root", str(root)]) == 0
    assert capsys.readouterr().out.strip() == "nothing to do"
    write_boot_file(boot, '[admin]\npassword = "x"\n')
    assert main(["firstboot", "--boot-dir", str(boot), "--root", str(root)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("solargw firstboot: ") and "Traceback" not in err


def test_installed_command_runs(system):
    root, boot = system
    solargw = shutil.which("solargw", path=str(REPO / ".venv/bin")) or "solargw"
    done = subprocess.run([solargw, "firstboot", "--boot-dir", str(boot), "--root", str(root)],
                          capture_output=True, text=True, check=True)
    assert "generated: access point passphrase" in done.stdout
