"""Settings always recoverable (issue 14): a broken file never stops a service, never loses the
password or the access point's passphrase, and the repair paths (the web UI, the boot partition's
file) work on it. Unit tests of :mod:`appliance.settings.recovery`, then the real processes."""
from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import requests
from werkzeug.security import generate_password_hash

from appliance.firstboot import FirstBoot
from appliance.settings import Settings, keep_broken, last_good_path, load, load_recovering, save, save_sections
from appliance.sim import nep_inverters
from server import running_web, start_web
from vectors import NEP_BDM400

BDM400 = bytes.fromhex(NEP_BDM400["hex"])
PASSWORD = "correct horse battery"
BROKEN = {
    "not TOML": (b"[web\nport = 8080\n", "at the end of a table declaration"),
    "not UTF-8": (b'[access_point]\nssid = "caf\xe9"\n', "not UTF-8 text (byte 26)"),
    "breaks a rule": (b'[mqtt]\nhost = "bad host!"\n[web]\nstale_seconds = 60\n', "[mqtt] host: not a valid host name"),
}


@pytest.fixture
def good(tmp_path: Path) -> Path:
    settings = Settings()
    settings.data.dir = str(tmp_path / "data")
    settings.mqtt.host = "broker.lan"
    settings.access_point.passphrase = "the-inverters-know-it"
    settings.admin.password_hash = generate_password_hash(PASSWORD)
    settings.admin.secret_key = "s" * 64
    path = tmp_path / "solargw.toml"
    save(settings, path)
    return path


def test_a_good_file_is_used_and_kept_as_the_last_good_copy(good):
    loaded = load_recovering(good, env={})
    assert loaded.problem == "" and loaded.settings.mqtt.host == "broker.lan"
    copy = last_good_path(good)
    assert copy.read_bytes() == good.read_bytes() and copy.stat().st_mode & 0o777 == 0o600
    stamp = copy.stat().st_mtime_ns
    time.sleep(0.01)
    load_recovering(good, env={})
    assert copy.stat().st_mtime_ns == stamp  # unchanged file: not written again (SD card)


@pytest.mark.parametrize("kind", BROKEN)
def test_a_broken_file_runs_on_the_last_good_copy(good, kind):
    load_recovering(good, env={})
    data, message = BROKEN[kind]
    good.write_bytes(data)
    loaded = load_recovering(good, env={})
    assert message in loaded.problem and loaded.problem.endswith("until the file is fixed")
    assert loaded.settings.access_point.passphrase == "the-inverters-know-it"
    assert loaded.settings.admin.secret_key == "s" * 64 and loaded.settings.path == good
    assert last_good_path(good).read_bytes() != data  # a broken file never becomes the last good one


def test_the_broken_files_good_sections_are_kept(good):
    load_recovering(good, env={})
    good.write_bytes(BROKEN["breaks a rule"][0])
    loaded = load_recovering(good, env={})
    assert loaded.settings.web.stale_seconds == 60  # [web] was fine: taken from the file
    assert loaded.settings.mqtt.host == "broker.lan"  # [mqtt] broke a rule: the last good one
    assert "running on its sections [web] with the last good copy for the rest" in loaded.problem


def test_without_a_last_good_copy_the_broken_sections_get_defaults(tmp_path):
    path = tmp_path / "solargw.toml"
    path.write_bytes(b'[mqtt]\nhost = "bad host!"\n[relay]\nenabled = true\n')
    loaded = load_recovering(path, env={})
    assert loaded.settings.mqtt.host == "localhost" and loaded.settings.relay.enabled
    assert "with defaults for the rest" in loaded.problem
    assert not last_good_path(path).exists()


def test_sections_that_only_break_a_rule_together_are_not_mixed(tmp_path):
    path = tmp_path / "solargw.toml"
    path.write_bytes(b'[upstream_wifi]\nenabled = true\nssid = "Home"\ninterface = "wlan0"\n'
                     b'[mqtt]\nhost = "bad host!"\n')
    loaded = load_recovering(path, env={})
    assert not loaded.settings.upstream_wifi.enabled  # its interface clashes with the access point's
    assert loaded.problem


def test_the_environment_still_overrides_a_recovered_file(good):
    good.write_bytes(b"[web\n")
    loaded = load_recovering(good, env={"SOLARGW_DATA_DIR": "/srv/elsewhere"})
    assert str(loaded.settings.data_dir) == "/srv/elsewhere"


def test_a_form_save_repairs_a_file_that_does_not_load(good):
    load_recovering(good, env={})
    good.write_bytes(BROKEN["not UTF-8"][0])
    in_use = load_recovering(good, env={}).settings
    in_use.relay.enabled = True
    saved = save_sections(in_use, ("relay",), good)
    assert saved.relay.enabled and saved.access_point.passphrase == "the-inverters-know-it"
    assert load(good, env={}).admin.password_hash == in_use.admin.password_hash
    kept = list(good.parent.glob("solargw.toml.broken-*"))
    assert len(kept) == 1 and kept[0].read_bytes() == BROKEN["not UTF-8"][0]


def test_keep_broken_keeps_the_bytes_and_the_mode(good):
    good.write_bytes(b"\xff\xfe junk")
    copy = keep_broken(good)
    assert copy is not None and copy.read_bytes() == b"\xff\xfe junk" and copy.stat().st_mode & 0o777 == 0o600


# --- firstboot ------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", BROKEN)
def test_firstboot_applies_the_boot_file_over_a_broken_etc_file(tmp_path, good, kind):
    root, boot = tmp_path / "root", tmp_path / "boot"
    etc = root / "etc/solargw"
    etc.mkdir(parents=True)
    boot.mkdir()
    (etc / "solargw.toml").write_bytes(good.read_bytes())
    load_recovering(etc / "solargw.toml", env={})  # a service accepted it once: the last good copy
    (etc / "solargw.toml").write_bytes(BROKEN[kind][0])
    (boot / "solargw.toml").write_text('[admin]\npassword = "a new password"\n[relay]\nenabled = true\n')
    result = FirstBoot(boot, root=root).run()
    assert BROKEN[kind][1] in result.repaired[0]
    assert "kept as" in result.repaired[1]
    fixed = load(etc / "solargw.toml", env={})
    assert fixed.relay.enabled and fixed.access_point.passphrase == "the-inverters-know-it"
    assert fixed.admin.password_hash != load(good, env={}).admin.password_hash  # the boot file's password
    backups = list(etc.glob("solargw.toml.broken-*"))
    assert [b.read_bytes() for b in backups] == [BROKEN[kind][0]]
    assert last_good_path(etc / "solargw.toml").read_bytes() == (etc / "solargw.toml").read_bytes()


def test_firstboot_command_with_a_corrupt_etc_file_and_no_last_good_copy(tmp_path):
    import subprocess
    import sys

    root, boot = tmp_path / "root", tmp_path / "boot"
    (root / "etc/solargw").mkdir(parents=True)
    boot.mkdir()
    (root / "etc/solargw/solargw.toml").write_bytes(b"\x00\xff garbage from a bad write")
    (boot / "solargw.toml").write_text('[access_point]\nssid = "Roof"\npassphrase = "roof-passphrase"\n')
    result = subprocess.run([sys.executable, "-m", "appliance", "firstboot", "--boot-dir", str(boot),
                             "--root", str(root)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert "repaired:" in result.stdout and "not valid TOML" in result.stdout
    assert load(root / "etc/solargw/solargw.toml", env={}).access_point.ssid == "Roof"


# --- the real web service ------------------------------------------------------------------------

def web_settings(password_hash: str) -> dict:
    return {"admin": {"password_hash": password_hash}, "mqtt": {"host": "broker.lan", "enabled": False}}


def assert_ingest_answers(web, source_count: int) -> None:
    reply = nep_inverters.post(web.url, "/i.php", BDM400)
    assert reply.status == 200 and len(reply.body) == 14 and reply.body.isdigit()
    assert web.store().counters()[("readings_recorded", "nep")] == source_count


def csrf(page: bytes) -> str:
    return re.search(rb'name="csrf_token" value="([^"]+)"', page).group(1).decode()


@pytest.mark.slow
@pytest.mark.parametrize("kind", BROKEN)
def test_web_starts_on_a_broken_file_keeps_ingesting_and_says_why(tmp_path, kind):
    """Start once on a good file (the last good copy), then restart on a broken one: the service
    runs, answers inverters, the admin can log in and sees the problem on the status page."""
    with running_web(tmp_path, web_settings(generate_password_hash(PASSWORD))) as web:
        assert_ingest_answers(web, 1)
        web.settings_path.write_bytes(BROKEN[kind][0])
        lines_before = len(web.log().splitlines())
    web = start_web(tmp_path, keep_settings=True)
    try:
        assert_ingest_answers(web, 2)
        session = requests.Session()
        login = session.post(web.url + "login", data={"csrf_token": csrf(session.get(web.url + "login").content),
                                                      "password": PASSWORD}, timeout=10)
        assert login.status_code == 200 and "Log out" in login.text
        status = session.get(web.url + "status", timeout=10).text
        assert BROKEN[kind][1] in status and "until the file is fixed" in status
        log = "\n".join(web.log().splitlines()[lines_before:])
        assert "Traceback" not in log
        assert len([line for line in log.splitlines() if BROKEN[kind][1] in line]) == 1, log
    finally:
        web.stop()


@pytest.mark.slow
def test_web_keeps_its_settings_when_the_file_breaks_while_running(tmp_path):
    with running_web(tmp_path, web_settings(generate_password_hash(PASSWORD))) as web:
        assert_ingest_answers(web, 1)
        good_bytes = web.settings_path.read_bytes()
        count = 1
        for kind, (data, message) in BROKEN.items():
            web.settings_path.write_bytes(data)
            for _ in range(3):
                count += 1
                assert_ingest_answers(web, count)  # never a 500, and still recorded
                for page in ("", "status", "data.json", "metrics", "login"):
                    assert requests.get(web.url + page, timeout=10).status_code == 200, (kind, page)
            assert message in requests.get(web.url + "status", timeout=10).text
        web.settings_path.write_bytes(good_bytes)
        count += 1
        assert_ingest_answers(web, count)
        assert "until the file is fixed" not in requests.get(web.url + "status", timeout=10).text
        log = web.log()
    assert "Traceback" not in log and "settings accepted again" in log
    for _kind, (_data, message) in BROKEN.items():
        assert len([line for line in log.splitlines() if message in line]) == 1, message
