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
