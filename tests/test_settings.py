"""Settings: TOML file, defaults, environment overrides of the seed server, clear errors."""
import os
import stat

import pytest

from appliance import settings as settings_mod
from appliance.settings import SettingsError, load, save


def test_missing_file_means_defaults(tmp_path):
    s = load(tmp_path / "none.toml", env={})
    assert s.web.port == 80 and s.zigbee.pan_id == 0x02AA and s.mqtt.discovery_prefix == "homeassistant"


def test_file_then_seed_environment(tmp_path):
    path = tmp_path / "solargw.toml"
    path.write_text('[web]\nport = 8080\n[mqtt]\nhost = "broker.lan"\nenabled = false\n')
    s = load(path, env={"NEP_LISTEN_ADDR": "127.0.0.1", "NEP_LISTEN_PORT": "8181",
                        "NEP_MQTT_ADDR": "10.0.0.2", "NEP_MQTT_PORT": "1884", "SOLARGW_DATA_DIR": "/tmp/x"})
    assert (s.web.listen_addr, s.web.port) == ("127.0.0.1", 8181)
    assert (s.mqtt.host, s.mqtt.port, s.mqtt.enabled) == ("10.0.0.2", 1884, True)
    assert str(s.data_dir) == "/tmp/x"


def test_a_child_service_gets_the_environment_without_every_variable_solargw_reads(tmp_path):
    env = {"NEP_LISTEN_PORT": "8181", "SOLARGW_DATA_DIR": "/tmp/x", "SOLARGW_SETTINGS": "/tmp/s.toml",
           "PATH": "/usr/bin", "TZ": "UTC"}
    clean = settings_mod.without_overrides(env)
    assert clean == {"PATH": "/usr/bin", "TZ": "UTC"}
    assert load(tmp_path / "absent.toml", env=clean) == load(tmp_path / "absent.toml", env={})


@pytest.mark.parametrize("text, message", [
    ("[web]\nport = 'eighty'\n", "[web] port: expected a whole number"),
    ("[wbe]\nport = 1\n", "unknown section [wbe]"),
    ("[mqtt]\nhots = 'x'\n", "[mqtt] unknown key 'hots'"),
    ("[mqtt]\ntls = 'yes'\n", "[mqtt] tls: expected true or false"),
    ("web = 1\n", "[web] must be a table"),
    ("[web\n", "not valid TOML"),
])
def test_bad_files_name_the_key(tmp_path, text, message):
    path = tmp_path / "s.toml"
    path.write_text(text)
    with pytest.raises(SettingsError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load(path, env={})


def test_bad_environment_port(tmp_path):
    with pytest.raises(SettingsError, match="NEP_LISTEN_PORT"):
        load(tmp_path / "none.toml", env={"NEP_LISTEN_PORT": "99999"})


def test_save_roundtrip_is_private(tmp_path):
    s = load(tmp_path / "s.toml", env={})
    s.access_point.passphrase = "correct horse battery"
    s.access_point.upstream_dns = ["192.168.1.1"]
    path = save(s)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    again = load(path, env={})
    assert again.to_dict() == s.to_dict()


def test_default_path_from_environment(tmp_path):
    assert settings_mod.settings_path({"SOLARGW_SETTINGS": str(tmp_path / "a.toml")}) == tmp_path / "a.toml"


def test_apply_timezone_makes_the_configured_zone_the_local_time(tmp_path):
    import time
    from datetime import datetime

    from appliance.store import local_day

    s = settings_mod.Settings()
    s.system.timezone = "Pacific/Kiritimati"  # UTC+14: a different date from UTC for 14 hours a day
    assert settings_mod.apply_timezone(s) is True
    assert os.environ["TZ"] == "Pacific/Kiritimati"
    moment = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC = 2023-11-15 12:13:20 in Kiritimati
    assert time.localtime(moment).tm_hour == 12
    assert local_day(moment) == "2023-11-15" == datetime.fromtimestamp(moment).date().isoformat()
    s.system.timezone = "UTC"
    assert settings_mod.apply_timezone(s) is True
    assert local_day(moment) == "2023-11-14"


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "", "../../etc/passwd", "/etc/localtime", "Europe"])
def test_apply_timezone_ignores_an_unknown_zone(zone):
    import time

    s = settings_mod.Settings()
    s.system.timezone = "Asia/Kolkata"
    settings_mod.apply_timezone(s)
    s.system.timezone = zone
    assert settings_mod.apply_timezone(s) is False
    assert os.environ["TZ"] == "Asia/Kolkata" and time.localtime(0).tm_min == 30  # UTC+5:30 still


@pytest.mark.parametrize("text, message", [
    ("[data]\nkeep_days = -1\n", "[data] keep_days: must not be negative, got -1"),
    ("[relay]\ntimeout_seconds = -0.5\n", "[relay] timeout_seconds: must not be negative, got -0.5"),
    ("[web]\nport = 80.5\n", "[web] port: expected a whole number, got 80.5"),
    ("[relay]\ntimeout_seconds = \"5\"\n", "[relay] timeout_seconds: expected a number, got '5'"),
])
def test_numbers_are_checked(tmp_path, text, message):
    path = tmp_path / "solargw.toml"
    path.write_text(text)
    with pytest.raises(SettingsError) as error:
        load(path, env={})
    assert str(error.value) == message
