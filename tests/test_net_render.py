"""The access point's rendered configurations and their validation rules (fast; no namespaces).

Where the real daemon can judge a rendered file without a radio or a namespace, it does:
``dnsmasq --test``, ``nft --check`` (root), and hostapd's / wpa_supplicant's own config parsers
(they read and check the whole file before they look for the driver; a negative control shows
that a broken file is caught).
"""
from __future__ import annotations

import dataclasses
import ipaddress
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.net import clients, dnsmasq, firewall, hostapd, resolvers, wpa
from appliance.net.addressing import NetConfigError, plan
from appliance.net.plan import RuntimePaths, build
from appliance.net.wifi import psk
from appliance.settings import AccessPointSettings, Settings, UpstreamWifiSettings
from support.waiting import wait_for


def ap_settings(**changes) -> AccessPointSettings:
    return dataclasses.replace(AccessPointSettings(passphrase="inverters-only"), **changes)


def ips(*texts: str):
    return [ipaddress.ip_address(t) for t in texts]


# -- addressing --------------------------------------------------------------------------------
def test_default_plan():
    p = plan(ap_settings())
    assert (p.interface, str(p.address), str(p.network)) == ("wlan0", "10.42.0.1/24", "10.42.0.0/24")
    assert (str(p.dhcp_start), str(p.dhcp_end), p.upstream_dns) == ("10.42.0.50", "10.42.0.250", ())


@pytest.mark.parametrize("changes, message", [
    ({"address": "10.42.0.1"}, "prefix /32 leaves no room"),
    ({"address": "banana"}, "[access_point] address: 'banana' is not an IPv4 address with prefix"),
    ({"address": "fd00::1/64"}, "is not an IPv4 address with prefix"),
    ({"address": "10.42.0.0/24"}, "network or broadcast address"),
    ({"dhcp_start": "10.43.0.5"}, "[access_point] dhcp_start: 10.43.0.5 is outside the access point subnet 10.42.0.0/24"),
    ({"dhcp_end": "10.42.0.255"}, "dhcp_end: 10.42.0.255 is outside"),
    ({"dhcp_end": "ten"}, "[access_point] dhcp_end: 'ten' is not an IPv4 address"),
    ({"dhcp_start": "10.42.0.200", "dhcp_end": "10.42.0.100"}, "dhcp_start 10.42.0.200 is after dhcp_end"),
    ({"dhcp_start": "10.42.0.1"}, "own address 10.42.0.1 lies inside the DHCP range"),
    ({"upstream_dns": ["192.168.1.1", "dns.example"]}, "upstream_dns: 'dns.example' is not an IP address"),
    ({"upstream_dns": ["10.42.0.1"]}, "is the appliance itself"),
    ({"interface": "wlan0\ninterface=eth0"}, "[access_point] interface: 'wlan0\\ninterface=eth0' is not an interface name"),
    ({"interface": "a-very-long-name0"}, "is not an interface name"),
])
def test_plan_rejects_with_the_setting_named(changes, message):
    with pytest.raises(NetConfigError) as err:
        plan(ap_settings(**changes))
    assert message in str(err.value)


# -- resolvers ---------------------------------------------------------------------------------
def test_nameservers_from_resolv_conf():
    text = ("# generated\nsearch lan\nnameserver 192.168.1.1\nnameserver  fe80::1%eth0 # router\n"
            "nameserver garbage\nnameserver\noptions edns0\nnameserver 127.0.0.53\n")
    assert [str(a) for a in resolvers.nameservers(text)] == ["192.168.1.1", "fe80::1%eth0", "127.0.0.53"]


def test_usable_drops_loopback_ourselves_and_duplicates():
    servers = ips("127.0.0.53", "192.168.1.1", "::1", "192.168.1.5", "192.168.1.1", "0.0.0.0")
    assert resolvers.usable(servers, own=ips("192.168.1.5")) == ips("192.168.1.1")


def test_upstream_servers_prefers_configured_then_resolv_conf_then_resolved(tmp_path):
    resolv, resolved = tmp_path / "resolv.conf", tmp_path / "resolved.conf"
    resolv.write_text("nameserver 127.0.0.53\n")
    resolved.write_text("nameserver 192.168.1.1\n")
    assert resolvers.upstream_servers([], [], resolv, resolved) == ips("192.168.1.1")
    assert resolvers.upstream_servers(ips("9.9.9.9"), [], resolv, resolved) == ips("9.9.9.9")
    resolv.write_text("nameserver 192.168.7.1\n")
    assert resolvers.upstream_servers([], [], resolv, resolved) == ips("192.168.7.1")
    assert resolvers.upstream_servers([], [], tmp_path / "missing", None) == []


# -- dnsmasq -----------------------------------------------------------------------------------
def render_dnsmasq(upstreams=(), lan=(), **changes) -> str:
    return dnsmasq.render(plan(ap_settings(**changes)), upstreams=ips(*upstreams),
                          leases=Path("/var/lib/solargw/dnsmasq.leases"),
                          pid_file=Path("/run/solargw/dnsmasq.pid"), lan_interfaces=lan)


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_dnsmasq_overrides_the_portal_and_keeps_it_local():
    conf = lines(render_dnsmasq(["192.168.1.1"]))
    assert "address=/nepviewer.net/nepviewer.com/gw.enecsys.net/10.42.0.1" in conf
    assert "local=/nepviewer.net/nepviewer.com/gw.enecsys.net/" in conf  # AAAA & co answered here
    assert [l for l in conf if l.startswith("server=")] == ["server=192.168.1.1"]
    assert "no-resolv" in conf and "bind-dynamic" in conf
    assert "interface=wlan0" in conf and "except-interface=lo" in conf
    assert "dhcp-range=10.42.0.50,10.42.0.250,255.255.255.0,1h" in conf
    assert "dhcp-authoritative" in conf and "dhcp-leasefile=/var/lib/solargw/dnsmasq.leases" in conf
    # DNS only on the access point: no other interface, no LAN answers
    assert [l for l in conf if l.startswith("interface=")] == ["interface=wlan0"]
    assert not [l for l in conf if "localise" in l or "interface-name" in l]


def test_dnsmasq_without_upstream_has_no_server_and_reads_no_resolv_conf():
    conf = lines(render_dnsmasq([]))
    assert not [l for l in conf if l.startswith(("server=", "resolv-file"))]
    assert "no-resolv" in conf


def test_dnsmasq_lan_dns_mode_listens_on_the_lan_without_dhcp():
    conf = lines(render_dnsmasq(["192.168.1.1"], lan=("eth0",), lan_dns_mode=True))
    assert {"interface=eth0", "no-dhcp-interface=eth0", "localise-queries"} <= set(conf)
    assert {"interface-name=www.nepviewer.net,eth0/4", "interface-name=www.nepviewer.net,wlan0/4",
            "interface-name=gw.enecsys.net,eth0/4", "interface-name=gw.enecsys.net,wlan0/4"} <= set(conf)
    # the mode off: the LAN interfaces are not mentioned even if passed
    assert "interface=eth0" not in lines(render_dnsmasq(["192.168.1.1"], lan=("eth0",)))


def test_the_service_s_dnsmasq_reads_its_resolvers_from_a_servers_file(tmp_path):
    """The service's configuration names the servers file instead of the servers, so new LAN
    resolvers need a SIGHUP, not a restart; the file holds what the configuration would."""
    servers_file = Path("/run/solargw-dns/servers")
    conf = lines(dnsmasq.render(plan(ap_settings()), upstreams=ips("192.168.1.1"), leases=Path("/l"),
                                pid_file=Path("/p"), servers_file=servers_file))
    assert f"servers-file={servers_file}" in conf and "no-resolv" in conf
    assert not [l for l in conf if l.startswith("server=")]
    assert dnsmasq.render_servers(ips("192.168.1.1", "fe80::1%eth0")) == "server=192.168.1.1\nserver=fe80::1%eth0\n"
    assert lines(dnsmasq.render_servers([])) == []
    settings = Settings(access_point=ap_settings(upstream_dns=["192.0.2.53"]))
    built = build(settings, RuntimePaths(run_dir=tmp_path, dns_dir=tmp_path / "dns"))
    assert f"servers-file={tmp_path / 'dns' / 'servers'}" in lines(built.dnsmasq_conf)
    assert built.dnsmasq_servers == "server=192.0.2.53\n"


def test_dnsmasq_ipv6_and_scoped_upstreams():
    conf = lines(render_dnsmasq(["2001:db8::53", "fe80::1%eth0"]))
    assert ["server=2001:db8::53", "server=fe80::1%eth0"] == [l for l in conf if l.startswith("server=")]


needs_dnsmasq = pytest.mark.skipif(not shutil.which("dnsmasq"), reason="needs dnsmasq (make apt-deps)")


@needs_dnsmasq
@pytest.mark.parametrize("lan_mode", [False, True])
def test_dnsmasq_accepts_the_rendered_configuration(tmp_path, lan_mode):
    conf = tmp_path / "dnsmasq.conf"
    conf.write_text(render_dnsmasq(["192.168.1.1", "fe80::1%eth0"], lan=("eth0",), lan_dns_mode=lan_mode))
    dnsmasq.validate(conf)


@needs_dnsmasq
def test_dnsmasq_test_failure_is_one_clear_line(tmp_path):
    conf = tmp_path / "dnsmasq.conf"
    conf.write_text(render_dnsmasq() + "dhcp-range=10.42.0.50,banana\n")
    with pytest.raises(dnsmasq.DnsmasqConfigError) as err:
        dnsmasq.validate(conf)
    assert "dhcp-range" in str(err.value) and str(conf) in str(err.value) and "\n" not in str(err.value)


def test_a_dnsmasq_left_by_an_earlier_run_is_stopped_and_no_other_process(tmp_path):
    conf, pid_file = tmp_path / "dnsmasq.conf", tmp_path / "dnsmasq.pid"
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    ours = subprocess.Popen([*sleeper, f"--conf-file={conf}"])
    other = subprocess.Popen([*sleeper, "--conf-file=/elsewhere.conf"])
    try:
        # Popen returns once exec began: for a moment after, /proc/PID/cmdline may not show the new
        # arguments yet (a loaded machine), and reap_stale would rightly leave the process alone.
        for process in (ours, other):
            wait_for(lambda: b"--conf-file=" in Path(f"/proc/{process.pid}/cmdline").read_bytes(), 10,
                     "the sleeper's command line")
        pid_file.write_text(f"{other.pid}\n")
        dnsmasq.reap_stale(pid_file, conf)
        assert other.poll() is None
        pid_file.write_text(f"{ours.pid}\n")
        dnsmasq.reap_stale(pid_file, conf)
        assert ours.wait(5) == -15
    finally:
        for process in (ours, other):
            process.kill()
            process.wait()


# -- firewall ----------------------------------------------------------------------------------
def test_firewall_rules():
    rules = firewall.render(plan(ap_settings()), firewall.LanPorts(web=80))
    assert rules.startswith("# Rendered") and "delete table inet solargw" in rules
    assert 'iifname "wlan0" meta l4proto { tcp, udp } th dport 53 dnat ip to 10.42.0.1' in rules
    ap_chain = rules.split("chain from_access_point {")[1].split("\n\t}")[0]
    assert "udp dport { 53, 67 } accept" in ap_chain and "tcp dport { 53, 80 } accept" in ap_chain
    assert ap_chain.strip().endswith("reject with icmpx admin-prohibited")
    lan_chain = rules.split("chain from_lan {")[1].split("\n\t}")[0]
    assert "tcp dport { 80 } accept" in lan_chain and "22" not in lan_chain
    assert 'iifname "wlan0" counter reject' in rules and 'oifname "wlan0" counter reject' in rules


def test_firewall_lan_ports_follow_the_settings():
    settings = Settings()
    settings.system.ssh_enabled = True
    settings.web.port = 8080
    settings.access_point.lan_dns_mode = True
    lan = firewall.LanPorts.from_settings(settings)
    assert lan == firewall.LanPorts(web=8080, ssh=True, mqtt=True, dns=True)
    rules = firewall.render(plan(ap_settings()), lan)
    assert "tcp dport { 22, 53, 1883, 8080 } accept" in rules
    assert "udp dport { 53, 68, 546, 5353 } accept" in rules
    assert "tcp dport 80 dnat ip to 10.42.0.1:8080" in rules
    assert "5040" not in rules  # the Enecsys gateway listener is off
    settings.mqtt.host = "broker.example"
    assert not firewall.LanPorts.from_settings(settings).mqtt


def test_firewall_opens_the_gateway_port_on_both_sides_when_the_listener_is_on():
    settings = Settings()
    settings.gateway.enabled, settings.gateway.port = True, 15040
    lan = firewall.LanPorts.from_settings(settings)
    assert lan.gateway == 15040
    rules = firewall.render(plan(ap_settings()), lan)
    ap_chain = rules.split("chain from_access_point {")[1].split("\n\t}")[0]
    lan_chain = rules.split("chain from_lan {")[1].split("\n\t}")[0]
    assert "tcp dport { 53, 80, 15040 } accept" in ap_chain
    assert "tcp dport { 80, 1883, 15040 } accept" in lan_chain
    # a gateway with the old server's address written in lands here too (it always dials 5040)
    assert 'iifname "wlan0" tcp dport 5040 dnat ip to 10.42.0.1:15040' in rules


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("nft"), reason="nft --check needs root and nft")
def test_nft_accepts_the_ruleset():
    rules = firewall.render(plan(ap_settings()), firewall.LanPorts(web=80, ssh=True, mqtt=True, dns=True,
                                                                    gateway=5040))
    result = subprocess.run(["nft", "--check", "-f", "-"], input=rules, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# -- hostapd -----------------------------------------------------------------------------------
def config(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in lines(text))


def test_psk_matches_the_ieee_802_11i_test_vector():
    assert psk(b"IEEE", "password") == "f42c6fc52df0ebef9ebb4b90b38a5f902e83fe1b135a70e23aed762e9710a12e"


def test_hostapd_is_wpa2_psk_on_2_4_ghz():
    conf = config(hostapd.render(ap_settings(country="de", channel=11)))
    assert conf["wpa"] == "2" and conf["wpa_key_mgmt"] == "WPA-PSK" and conf["rsn_pairwise"] == "CCMP"
    assert (conf["hw_mode"], conf["channel"], conf["country_code"]) == ("g", "11", "DE")
    assert conf["ssid"] == "solargw" and conf["wpa_psk"] == psk(b"solargw", "inverters-only")
    assert conf["ap_isolate"] == "1" and "wpa_passphrase" not in conf
    assert not any(k.startswith(("sae", "ieee80211w", "wpa_pairwise")) for k in conf)


def test_hostapd_channel_14_only_in_japan_and_without_11n():
    conf = config(hostapd.render(ap_settings(country="JP", channel=14)))
    assert conf["hw_mode"] == "b" and "ieee80211n" not in conf
    with pytest.raises(NetConfigError, match="14 only in Japan"):
        hostapd.render(ap_settings(country="GB", channel=14))


def test_hostapd_unicode_ssid_goes_in_hex():
    conf = config(hostapd.render(ap_settings(ssid="Solar ☀")))
    assert conf["ssid2"] == "Solar ☀".encode().hex() and conf["utf8_ssid"] == "1" and "ssid" not in conf


@pytest.mark.parametrize("changes, message", [
    ({"ssid": ""}, "[access_point] ssid: not set"),
    ({"ssid": "x" * 33}, "an SSID is 1 to 32 bytes"),
    ({"ssid": "☀" * 11}, "'" + "☀" * 11 + "' is 33"),
    ({"ssid": "evil\nwpa=1"}, "control character"),
    ({"passphrase": ""}, "[access_point] passphrase: not set"),
    ({"passphrase": "short12"}, "8 to 63 characters, not 7"),
    ({"passphrase": "p" * 64}, "not 64"),
    ({"passphrase": "pässphrase"}, "printable ASCII"),
    ({"passphrase": "tab\tinside"}, "printable ASCII"),
    ({"country": "GBR"}, "[access_point] country: 'GBR' is not a two-letter"),
    ({"country": "G1"}, "not a two-letter"),
    ({"channel": 0}, "[access_point] channel: 0 is not a 2.4 GHz channel"),
    ({"channel": 36}, "36 is not a 2.4 GHz channel"),
])
def test_hostapd_rejects_with_the_setting_named(changes, message):
    with pytest.raises(NetConfigError) as err:
        hostapd.render(ap_settings(**changes))
    assert message in str(err.value)


def _daemon_parses(argv: list[str]) -> tuple[bool, str]:
    """Run a Wi-Fi daemon on a file for an interface that does not exist: it parses and checks the
    whole configuration first, then fails at the driver. Which failure it reports tells us."""
    result = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    output = result.stdout + result.stderr
    rejected = ("errors found in configuration file" in output
                or "Failed to read or parse configuration" in output or "Line " in output)
    return not rejected, output


needs_hostapd = pytest.mark.skipif(not shutil.which("hostapd"), reason="needs hostapd (make apt-deps)")


@needs_hostapd
@pytest.mark.parametrize("changes", [{}, {"ssid": "Solar ☀", "country": "JP", "channel": 14},
                                     {"ssid": "with space", "passphrase": "a b#c=d\"e'f\\g"}])
def test_hostapd_parser_accepts_the_rendered_file(tmp_path, changes):
    conf = tmp_path / "hostapd.conf"
    conf.write_text(hostapd.render(ap_settings(interface="sgwnone0", **changes)))
    accepted, output = _daemon_parses(["hostapd", str(conf)])
    assert accepted, output


@needs_hostapd
def test_hostapd_parser_check_catches_a_broken_file(tmp_path):
    conf = tmp_path / "hostapd.conf"
    text = hostapd.render(ap_settings(interface="sgwnone0"))
    conf.write_text(text.replace("wpa_psk=", "wpa_psk=zz"))
    accepted, output = _daemon_parses(["hostapd", str(conf)])
    assert not accepted and "Invalid PSK" in output


# -- wpa_supplicant ----------------------------------------------------------------------------
def upstream_settings(**changes) -> Settings:
    settings = Settings()
    settings.upstream_wifi = dataclasses.replace(
        UpstreamWifiSettings(enabled=True, ssid="Home", passphrase="hunter2hunter2"), **changes)
    return settings


def test_wpa_supplicant_network_block():
    text = wpa.render(upstream_settings())
    assert '\tssid="Home"' in text and f"\tpsk={psk(b'Home', 'hunter2hunter2')}" in text
    assert "\tkey_mgmt=WPA-PSK" in text and "country=GB" in text and "hunter2hunter2" not in text
    quoted = wpa.render(upstream_settings(ssid='My "Wi-Fi"'))
    assert "\tssid=" + 'My "Wi-Fi"'.encode().hex() in quoted
    assert "\tkey_mgmt=NONE" in wpa.render(upstream_settings(passphrase=""))


@pytest.mark.parametrize("changes, message", [
    ({"ssid": ""}, "[upstream_wifi] ssid: not set"),
    ({"passphrase": "short"}, "[upstream_wifi] passphrase"),
    ({"interface": "wlan0"}, "must differ from [access_point] interface"),
    ({"interface": "wl an1"}, "is not an interface name"),
])
def test_wpa_supplicant_rejects_with_the_setting_named(changes, message):
    with pytest.raises(NetConfigError) as err:
        wpa.render(upstream_settings(**changes))
    assert message in str(err.value)


def test_station_interface_without_a_radio_is_a_clear_error():
    from appliance.net import radio

    # Without nl80211 in the kernel (this host), or with it but no such interface.
    with pytest.raises(radio.RadioError, match=r"no Wi-Fi radio|sgwnone0 is not a Wi-Fi interface"):
        radio.add_interface("sgwnone0", "sgwnone1", "station")


@pytest.mark.skipif(not shutil.which("wpa_supplicant"), reason="needs wpa_supplicant")
def test_wpa_supplicant_parser_accepts_the_rendered_file(tmp_path):
    conf = tmp_path / "wpa.conf"
    conf.write_text(wpa.render(upstream_settings(ssid='Home "net" ☀')))
    accepted, output = _daemon_parses(["wpa_supplicant", "-c", str(conf), "-i", "sgwnone0", "-D", "nl80211"])
    assert accepted, output
    conf.write_text(conf.read_text().replace("psk=", "psk=zz"))
    accepted, output = _daemon_parses(["wpa_supplicant", "-c", str(conf), "-i", "sgwnone0", "-D", "nl80211"])
    assert not accepted


# -- clients -----------------------------------------------------------------------------------
LEASES = """\
1700000600 2a:7b:66:a0:e6:b5 10.42.0.120 * 01:2a:7b:66:a0:e6:b5
0 AC:CF:23:00:00:01 10.42.0.101 HF-LPB100 *
1600000000 ac:cf:23:00:00:02 10.42.0.102 expired *
duid 00:01:00:01:2c:1f:00:00:aa:bb:cc:dd:ee:ff
half-written line
"""


def test_parse_leases():
    leases = clients.parse_leases(LEASES)
    assert [(l.mac, l.ip, l.hostname, l.expires) for l in leases] == [
        ("2a:7b:66:a0:e6:b5", "10.42.0.120", "", 1700000600),
        ("ac:cf:23:00:00:01", "10.42.0.101", "HF-LPB100", 0),
        ("ac:cf:23:00:00:02", "10.42.0.102", "expired", 1600000000),
    ]


def test_clients_without_a_radio_lists_current_leases_and_says_why(tmp_path):
    path = tmp_path / "dnsmasq.leases"
    path.write_text(LEASES)
    result = clients.clients(path, "sgwnone0", now=1700000000)
    assert [c["ip"] for c in result["clients"]] == ["10.42.0.120", "10.42.0.101"]
    assert all(c["associated"] is None and c["signal_dbm"] is None for c in result["clients"])
    assert result["stations_note"]
    assert clients.clients(tmp_path / "missing", "sgwnone0")["clients"] == []


def test_station_from_a_real_nl80211_message():
    from pyroute2.netlink.nl80211 import NL80211_NAMES, nl80211cmd

    msg = nl80211cmd()
    msg["cmd"] = NL80211_NAMES["NL80211_CMD_NEW_STATION"]
    msg["attrs"] = [
        ["NL80211_ATTR_IFINDEX", 3],
        ["NL80211_ATTR_MAC", "AC:CF:23:00:00:01"],
        ["NL80211_ATTR_STA_INFO", {"attrs": [["NL80211_STA_INFO_INACTIVE_TIME", 120],
                                             ["NL80211_STA_INFO_SIGNAL", -67],
                                             ["NL80211_STA_INFO_CONNECTED_TIME", 3600]]}],
    ]
    msg.encode()
    decoded = nl80211cmd(msg.data)
    decoded.decode()
    assert clients.station_from_message(decoded) == clients.Station("ac:cf:23:00:00:01", -67, 3600, 120)


# -- the command line --------------------------------------------------------------------------
@pytest.fixture
def solargw(capsys):
    """Runs the real ``solargw`` entry point in-process; returns (exit status, stdout, stderr)."""
    from appliance.cli import main

    def run(*argv: str):
        status = main(list(argv))
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(argv, status, out, err)

    return run


def test_render_writes_the_file_private(tmp_path, solargw):
    settings = tmp_path / "solargw.toml"
    settings.write_text('[access_point]\nssid = "roof"\npassphrase = "inverters-only"\n')
    out = tmp_path / "run" / "hostapd.conf"
    result = solargw("net", "render", "hostapd", "--settings", str(settings), "--output", str(out))
    assert result.returncode == 0, result.stderr
    assert config(out.read_text())["ssid"] == "roof" and out.stat().st_mode & 0o777 == 0o600
    printed = solargw("net", "render", "wpa_supplicant", "--settings", str(settings))
    assert printed.returncode == 2 and printed.stderr == "solargw net: [upstream_wifi] ssid: not set\n"


def test_enabled_answers_systemds_exec_condition(tmp_path, solargw, caplog):
    """hostapd's ExecCondition: 0 runs it, 1 skips it (inactive, not failed). A broken file is
    answered from the last good settings (issue 14: the access point must not go down with it)."""
    settings = tmp_path / "solargw.toml"
    assert solargw("net", "enabled", "--settings", str(settings)).returncode == 0  # no file: defaults
    settings.write_text("[access_point]\nenabled = false\n")
    off = solargw("net", "enabled", "--settings", str(settings))
    assert off.returncode == 1 and "disabled" in off.stdout
    settings.write_text("[access_point\n")
    broken = solargw("net", "enabled", "--settings", str(settings))
    assert broken.returncode == 1 and "Traceback" not in broken.stderr  # the last good file said "disabled"
    said = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(said) == 1 and "not valid TOML" in said[0] and "running on the last good copy" in said[0]


def test_render_says_what_is_wrong_in_one_line_and_renders_the_last_good_settings(tmp_path, solargw, caplog):
    settings = tmp_path / "solargw.toml"
    settings.write_text('[access_point]\ndhcp_start = "10.1.0.5"\n')
    result = solargw("net", "render", "dnsmasq", "--settings", str(settings))
    assert result.returncode == 0 and "Traceback" not in result.stderr
    said = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(said) == 1 and said[0].endswith(
        "[access_point] dhcp_start: 10.1.0.5 is outside the access point subnet 10.42.0.0/24; "
        "running on defaults until the file is fixed"), said
    assert "dhcp-range=10.42.0.50,10.42.0.250" in result.stdout.replace(" ", "")
    settings.write_text("[access_point\n")
    result = solargw("net", "render", "nftables", "--settings", str(settings))
    assert result.returncode == 0 and "Traceback" not in result.stderr and "table inet solargw" in result.stdout
    assert "not valid TOML" in caplog.records[-1].getMessage()


def test_render_dnsmasq_uses_the_lan_resolvers(tmp_path, solargw):
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.1\nnameserver 192.0.2.53\n")
    result = solargw("net", "render", "dnsmasq", "--settings", str(tmp_path / "none.toml"),
                     "--resolv-conf", str(resolv), "--interface", "ap7", "--leases", "/tmp/x.leases")
    conf = lines(result.stdout)
    assert "server=192.0.2.53" in conf and "server=127.0.0.1" not in conf
    assert "interface=ap7" in conf and "dhcp-leasefile=/tmp/x.leases" in conf
