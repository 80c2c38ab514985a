"""``settings.validate``: every value rule, each problem under its key, for forms and files alike."""
from __future__ import annotations

import dataclasses

import pytest

from appliance import settings as settings_mod
from appliance.settings import Settings, SettingsError, load, load_valid, save, save_sections, validate
from appliance.settings.rules import access_point_addressing, describe


def changed(section: str, **values) -> Settings:
    settings = Settings()
    setattr(settings, section, dataclasses.replace(getattr(settings, section), **values))
    return settings


def test_the_defaults_break_no_rule():
    assert validate(Settings()) == {}


RULES = [
    ("web", {"port": 70000}, "web.port", "70000 is not a port number"),
    ("access_point", {"interface": "wlan0\ninterface=eth0"}, "access_point.interface", "is not an interface name"),
    ("access_point", {"interface": "a-very-long-name0"}, "access_point.interface", "is not an interface name"),
    ("access_point", {"ssid": ""}, "access_point.ssid", "not set"),
    ("access_point", {"ssid": "x" * 33}, "access_point.ssid", "an SSID is 1 to 32 bytes"),
    ("access_point", {"ssid": "evil\nwpa=1"}, "access_point.ssid", "control character"),
    ("access_point", {"passphrase": "short12"}, "access_point.passphrase", "8 to 63 characters, not 7"),
    ("access_point", {"passphrase": "pässphrase"}, "access_point.passphrase", "printable ASCII"),
    ("access_point", {"country": "GBR"}, "access_point.country", "'GBR' is not a two-letter ISO 3166 country code"),
    ("access_point", {"country": "XX"}, "access_point.country", "XX is not an ISO 3166 country code"),
    ("access_point", {"channel": 14}, "access_point.channel", "14 is not a 2.4 GHz channel; use 1 to 13"),
    ("access_point", {"channel": 0}, "access_point.channel", "0 is not a 2.4 GHz channel"),
    ("access_point", {"address": "banana"}, "access_point.address", "'banana' is not an IPv4 address with prefix"),
    ("access_point", {"address": "10.42.0.1"}, "access_point.address", "prefix /32 leaves no room"),
    ("access_point", {"address": "10.42.0.0/24"}, "access_point.address", "network or broadcast address"),
    ("access_point", {"dhcp_start": "10.43.0.5"}, "access_point.dhcp_start",
     "10.43.0.5 is outside the access point subnet 10.42.0.0/24"),
    ("access_point", {"dhcp_end": "ten"}, "access_point.dhcp_end", "'ten' is not an IPv4 address"),
    ("access_point", {"dhcp_start": "10.42.0.200", "dhcp_end": "10.42.0.100"}, "access_point.dhcp_end",
     "dhcp_start 10.42.0.200 is after dhcp_end 10.42.0.100"),
    ("access_point", {"dhcp_start": "10.42.0.1"}, "access_point.address",
     "own address 10.42.0.1 lies inside the DHCP range"),
    ("access_point", {"upstream_dns": ["192.168.1.1", "dns.example"]}, "access_point.upstream_dns",
     "'dns.example' is not an IP address"),
    ("access_point", {"upstream_dns": ["10.42.0.1"]}, "access_point.upstream_dns", "is the appliance itself"),
    ("upstream_wifi", {"enabled": True, "ssid": ""}, "upstream_wifi.ssid", "not set"),
    ("upstream_wifi", {"enabled": True, "ssid": "Home", "passphrase": "short"}, "upstream_wifi.passphrase",
     "8 to 63 characters"),
    ("upstream_wifi", {"enabled": True, "ssid": "Home", "interface": "wlan0"}, "upstream_wifi.interface",
     "must differ from [access_point] interface"),
    ("upstream_wifi", {"enabled": True, "ssid": "Home", "interface": "wl an1"}, "upstream_wifi.interface",
     "is not an interface name"),
    ("mqtt", {"host": "bad host!"}, "mqtt.host", "not a valid host name"),
    ("mqtt", {"host": ""}, "mqtt.host", "must not be empty"),
    ("mqtt", {"port": 0}, "mqtt.port", "port number from 1 to 65535"),
    ("mqtt", {"discovery_prefix": "home/#"}, "mqtt.discovery_prefix", "wildcards"),
    ("mqtt", {"base_topic": "/solargw"}, "mqtt.base_topic", "leading or trailing /"),
    ("mqtt", {"password": "secret"}, "mqtt.username", "a password needs a user name"),
    ("relay", {"host": "not a host"}, "relay.host", "not a valid host name"),
    ("relay", {"address": "portal"}, "relay.address", "not an IP address"),
    ("relay", {"resolver": "dns.example"}, "relay.resolver", "is not ADDRESS or ADDRESS:PORT"),
    ("relay", {"resolver": "127.0.0.1:99999"}, "relay.resolver", "port number"),
    ("relay", {"timeout_seconds": 0.1}, "relay.timeout_seconds", "between 0.5 and 60 seconds"),
    ("relay", {"port": 70000}, "relay.port", "port number from 1 to 65535"),
    ("zigbee", {"channel": 40}, "zigbee.channel", "40 is not a Zigbee channel (11 to 26)"),
    ("zigbee", {"pan_id": 0xFFFF}, "zigbee.pan_id", "0xFFFF is not a PAN id"),
    ("zigbee", {"extended_pan_id": "d3:73:39"}, "zigbee.extended_pan_id", "is not 8 bytes in hex"),
    ("zigbee", {"extended_pan_id": "zz:73:39:d4:cb:1c:60:bb"}, "zigbee.extended_pan_id", "is not 8 bytes in hex"),
    ("gateway", {"listen_addr": "gw.enecsys.net"}, "gateway.listen_addr", "is not an IP address"),
    ("gateway", {"port": 0}, "gateway.port", "port number from 1 to 65535"),
    ("gateway", {"enabled": True, "port": 80}, "gateway.port", "80 is the web service's port"),
    ("system", {"timezone": "Mars/Olympus"}, "system.timezone", "unknown time zone 'Mars/Olympus'"),
    ("system", {"hostname": "bad_name!"}, "system.hostname", "'bad_name!' is not a valid host name"),
    ("system", {"hostname": "-solargw"}, "system.hostname", "is not a valid host name"),
]


@pytest.mark.parametrize("section, values, key, message", RULES, ids=[f"{r[2]}-{i}" for i, r in enumerate(RULES)])
def test_each_rule_names_its_key(section, values, key, message):
    problems = validate(changed(section, **values))
    assert key in problems and message in problems[key], problems
    section_name, _, name = key.partition(".")
    with pytest.raises(SettingsError) as error:
        settings_mod.require_valid(changed(section, **values))
    assert f"[{section_name}] {name}: " in str(error.value) and message in str(error.value)
    assert error.value.problems[key] == problems[key]


@pytest.mark.parametrize("section, values", [
    ("access_point", {"country": "de", "channel": 13}),  # hostapd gets it upper-cased
    ("access_point", {"country": "JP", "channel": 14}),
    ("access_point", {"passphrase": ""}),  # the first boot generates one
    ("upstream_wifi", {"enabled": False, "interface": "wlan0", "ssid": ""}),  # off: not used, not checked
    ("upstream_wifi", {"enabled": True, "ssid": "Home", "passphrase": ""}),  # an open network
    ("mqtt", {"host": "broker.lan", "username": "ha", "password": "pw"}),
    ("relay", {"resolver": "[::1]:5353", "address": "192.0.2.7"}),
    ("web", {"port": 0}),  # any free port (tests, the demo)
    ("zigbee", {"channel": 11, "extended_pan_id": "d373:39d4:cb1c:60bb"}),
    ("gateway", {"enabled": True, "listen_addr": "::", "port": 5040}),
    ("gateway", {"enabled": False, "port": 80}),  # off: no clash with the web port
])
def test_good_values_pass(section, values):
    assert validate(changed(section, **values)) == {}


def test_every_problem_is_returned_not_just_the_first():
    settings = changed("mqtt", host="", port=0)
    settings.zigbee.channel = 5
    assert set(validate(settings)) == {"mqtt.host", "mqtt.port", "zigbee.channel"}
    assert set(validate(settings, sections=("zigbee",))) == {"zigbee.channel"}


def test_addressing_checks_the_range_once_the_subnet_is_known():
    ap = changed("access_point", address="nonsense", dhcp_start="10.99.0.5").access_point
    assert set(access_point_addressing(ap)) == {"address"}  # no subnet to be outside of


def test_describe_is_the_settings_error_form():
    assert describe({"mqtt.port": "bad", "zigbee.channel": "worse"}) == "[mqtt] port: bad; [zigbee] channel: worse"


def test_a_hand_edited_file_meets_the_form_rules(tmp_path):
    path = tmp_path / "solargw.toml"
    path.write_text('[mqtt]\nhost = "bad host!"\n[zigbee]\nchannel = 40\n')
    assert load(path, env={}).mqtt.host == "bad host!"  # load checks types only
    with pytest.raises(SettingsError) as error:
        load_valid(path, env={})
    assert "[mqtt] host: not a valid host name" in str(error.value) and "[zigbee] channel: 40" in str(error.value)


def test_a_file_that_is_not_utf8_is_a_settings_error(tmp_path):
    path = tmp_path / "solargw.toml"
    path.write_bytes(b'[access_point]\nssid = "caf\xe9"\n')
    with pytest.raises(SettingsError, match="not UTF-8"):
        load(path, env={})


def test_save_sections_writes_nothing_that_breaks_a_rule(tmp_path):
    path = tmp_path / "solargw.toml"
    path.write_text('[zigbee]\nchannel = 40\n')  # edited by hand, wrongly
    before = path.read_bytes()
    wanted = changed("system", timezone="Europe/Paris")
    with pytest.raises(SettingsError, match=r"\[zigbee\] channel"):
        save_sections(wanted, ("system",), path)
    assert path.read_bytes() == before
    path.write_text('[zigbee]\nchannel = 15\n')
    saved = save_sections(wanted, ("system",), path)
    assert (saved.system.timezone, saved.zigbee.channel) == ("Europe/Paris", 15)


def test_advice_warns_about_a_pan_id_enecsys_inverters_never_join():
    assert settings_mod.advice(Settings()) == {}
    notes = settings_mod.advice(changed("zigbee", pan_id=0x1234))
    assert "only join PAN 0x02AA" in notes["zigbee.pan_id"]
    assert validate(changed("zigbee", pan_id=0x1234)) == {}  # allowed all the same


def test_save_then_load_valid_roundtrip(tmp_path):
    settings = changed("access_point", passphrase="correct horse", country="DE", channel=11)
    path = save(settings, tmp_path / "solargw.toml")
    assert load_valid(path, env={}).access_point.country == "DE"
