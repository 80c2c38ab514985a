"""The upstream Wi-Fi's parts that need no radio (fast): the channel-follow decision, the kernel's
scan results and interfaces as nl80211 encodes them, wpa_supplicant's events, hostapd's control
protocol, and ``UpstreamWifi`` driving a stand-in wpa_supplicant.

The radio itself (AP + station on one channel, DHCP, CSA) is proven in the booted image with
``mac80211_hwsim`` (tests/test_image.py, image/guest_upstream_wifi.py).
"""
from __future__ import annotations

import dataclasses
import socket
import struct
import threading
import time
from pathlib import Path

import pytest
from pyroute2.netlink.nl80211 import NL80211_NAMES, nl80211cmd

from appliance.net import ctrl, follow, hostapd, radio, upstream, wpa
from appliance.net.follow import Sighting
from appliance.settings import AccessPointSettings, Settings, UpstreamWifiSettings
from support.waiting import wait_for


# -- channels and the follow decision ----------------------------------------------------------
def test_channels_and_frequencies():
    assert [follow.freq_of(c) for c in (1, 6, 11, 13, 14)] == [2412, 2437, 2462, 2472, 2484]
    assert all(follow.channel_of(follow.freq_of(c)) == c for c in range(1, 15))
    assert follow.channel_of(5180) is None and follow.channel_of(2413) is None
    with pytest.raises(ValueError):
        follow.freq_of(15)


def test_the_station_s_channel_wins_over_any_sighting():
    seen = [Sighting(2462, -30.0, 0.5)]
    assert follow.home_freq(2412, seen) == 2412
    assert follow.decide(2437, 2412, seen, None) == 2412


def test_without_association_the_latest_scan_s_strongest_access_point_wins():
    seen = [Sighting(2412, -70.0, 25.0),  # the home router before it changed channel
            Sighting(2462, -60.0, 1.0), Sighting(2437, -40.0, 3.0),  # one scan, two access points
            Sighting(2472, -20.0, 40.0)]  # too old to say anything
    assert follow.home_freq(None, seen) == 2437
    assert follow.decide(2412, None, seen, None) == 2437


def test_nothing_known_or_already_there_or_no_access_point_means_no_move():
    assert follow.decide(2437, None, [], None) is None
    assert follow.decide(2437, None, [Sighting(2437, -50.0, 1.0)], None) is None
    assert follow.decide(None, 2412, [], None) is None  # hostapd is not running
    assert follow.decide(2437, None, [Sighting(5180, -30.0, 1.0)], None) is None  # 5 GHz only


def test_moves_settle_and_sightings_cannot_make_the_access_point_hop():
    seen = [Sighting(2462, -50.0, 1.0)]
    assert follow.decide(2412, None, seen, 3.0) is None  # a switch in progress reads as the old channel
    assert follow.decide(2412, None, seen, 10.0) is None  # held: sightings only
    assert follow.decide(2412, 2462, [], 10.0) == 2462  # but the station is authoritative
    assert follow.decide(2412, None, seen, follow.HOLD_SECONDS + 1) == 2462


# -- nl80211 messages as the kernel sends them ---------------------------------------------------
def _nla(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("HH", length, kind) + payload + b"\0" * (-length % 4)


def _genl(command: str, attrs: bytes) -> nl80211cmd:
    body = struct.pack("BBH", NL80211_NAMES[command], 1, 0) + attrs
    msg = nl80211cmd(struct.pack("IHHII", 16 + len(body), 0x1C, 2, 1, 0) + body)
    msg.decode()
    return msg


def scan_result(ssid: bytes, freq: int, signal_mbm: int, seen_ms_ago: int) -> nl80211cmd:
    elements = bytes([0, len(ssid)]) + ssid + bytes([3, 1, follow.channel_of(freq) or 0])
    bss = (_nla(2, struct.pack("I", freq)) + _nla(6, elements) + _nla(7, struct.pack("i", signal_mbm))
           + _nla(10, struct.pack("I", seen_ms_ago)))
    return _genl("NL80211_CMD_NEW_SCAN_RESULTS", _nla(3, struct.pack("I", 5)) + _nla(47 | 0x8000, bss))


def test_sighting_from_a_scan_result():
    msg = scan_result(b"Home \xe2\x98\x80", 2437, -4500, 1500)
    assert radio.sighting(msg, "Home ☀".encode()) == Sighting(2437, -45.0, 1.5)
    assert radio.sighting(msg, b"Neighbour") is None


def interface_message(name: str, ifindex: int, phy: int, iftype: int, freq: int | None) -> nl80211cmd:
    attrs = (_nla(3, struct.pack("I", ifindex)) + _nla(1, struct.pack("I", phy))
             + _nla(4, name.encode() + b"\0") + _nla(5, struct.pack("I", iftype)))
    if freq:
        attrs += _nla(38, struct.pack("I", freq)) + _nla(159, struct.pack("I", 1))  # WIPHY_FREQ, CHANNEL_WIDTH
    return _genl("NL80211_CMD_NEW_INTERFACE", attrs)


def test_interfaces_from_nl80211_messages():
    ap = radio.interface_from_message(interface_message("wlan0", 3, 0, 3, 2437))
    station = radio.interface_from_message(interface_message("wlan1", 7, 0, 2, None))
    assert ap == radio.WifiInterface("wlan0", 3, 0, "ap", 2437)
    assert station == radio.WifiInterface("wlan1", 7, 0, "station", None)


# -- wpa_supplicant: configuration and events ----------------------------------------------------
def upstream_settings(**changes) -> Settings:
    return Settings(
        access_point=AccessPointSettings(passphrase="inverters-only"),
        upstream_wifi=dataclasses.replace(
            UpstreamWifiSettings(enabled=True, ssid="Home", passphrase="hunter2hunter2"), **changes),
    )


def test_wpa_supplicant_stays_on_2_4_ghz_with_its_socket_in_solargw_s_run_directory(tmp_path):
    text = wpa.render(upstream_settings(), tmp_path / "ctl")
    freqs = " ".join(str(2407 + 5 * c) for c in range(1, 14))
    assert f"ctrl_interface={tmp_path / 'ctl'}" in text.splitlines()
    assert f"freq_list={freqs}" in text.splitlines() and f"\tfreq_list={freqs}" in text.splitlines()
    japan = upstream_settings()
    japan.access_point.country = "JP"
    assert "2484" in wpa.render(japan)


# Lines as wpa_supplicant 2.10/2.11 prints them (the image test's own run shows the same ones).
CONNECTED = "wlan1: CTRL-EVENT-CONNECTED - Connection to 02:00:00:00:01:00 completed [id=0 id_str=]"
WRONG_KEY = ('wlan1: CTRL-EVENT-SSID-TEMP-DISABLED id=0 ssid="Home" auth_failures=1 duration=10 '
             'reason=WRONG_KEY')


def test_link_state_from_events():
    link = wpa.LinkState()
    assert link.feed("Successfully initialized wpa_supplicant") is False and link.state == "starting"
    assert link.feed("wlan1: CTRL-EVENT-NETWORK-NOT-FOUND") and link.state == "home network not found"
    assert not link.feed("wlan1: CTRL-EVENT-NETWORK-NOT-FOUND")
    assert link.feed("wlan1: SME: Trying to authenticate with 02:00:00:00:01:00 (SSID='Home' freq=2412 MHz)")
    assert link.state == "connecting"
    link.feed("wlan1: WPA: 4-Way Handshake failed - pre-shared key may be incorrect")
    link.feed("wlan1: CTRL-EVENT-DISCONNECTED bssid=02:00:00:00:01:00 reason=15")
    link.feed(WRONG_KEY)
    assert (link.state, link.problem) == ("waiting to retry", "wrong passphrase: the home network refused the key")
    link.feed("wlan1: Trying to associate with 02:00:00:00:01:00 (SSID='Home' freq=2412 MHz)")
    assert link.state == "connecting" and "wrong passphrase" in link.problem  # said until it connects
    link.feed(CONNECTED)
    assert (link.state, link.problem) == ("connected", "")
    link.feed('wlan1: CTRL-EVENT-SSID-TEMP-DISABLED id=0 ssid="Home" auth_failures=2 duration=20 reason=CONN_FAILED')
    assert link.problem == "could not connect to the home network"


# -- hostapd's control socket ---------------------------------------------------------------------
class FakeHostapd:
    """A Unix datagram server speaking hostapd's control protocol, for the driver we cannot have:
    brcmfmac, whose driver flags lack AP_CSA (hostapd would answer CHAN_SWITCH with FAIL)."""

    def __init__(self, directory: Path, csa: bool = True, refuse: tuple[str, ...] = (),
                 interface: str = "wlan0") -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(directory / interface))
        self.flags = "00000000000a0000:\nSME\n" + ("AP_CSA\n" if csa else "") + "AP_TEARDOWN_SUPPORT\n"
        self.refuse, self.commands, self.monitors = refuse, [], []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                data, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            if not data:  # shut down
                return
            command = data.decode()
            self.sock.sendto(b"<3>CTRL-EVENT-UNRELATED\n", peer)  # an attached monitor's noise first
            if command == "DRIVER_FLAGS":
                self.sock.sendto(self.flags.encode(), peer)
                continue
            if command == "ATTACH":
                self.monitors.append(peer)
                self.sock.sendto(b"OK\n", peer)
                continue
            self.commands.append(command)
            self.sock.sendto(b"FAIL\n" if command.split()[0] in self.refuse else b"OK\n", peer)

    def push(self, event: str) -> None:
        """An event to every attached monitor, as the daemons send them (level prefix)."""
        for peer in self.monitors:
            self.sock.sendto(f"<3>{event}".encode(), peer)

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.thread.join(5)
        self.sock.close()


def test_channel_switch_is_announced_where_the_driver_can(tmp_path):
    server = FakeHostapd(tmp_path)
    try:
        assert hostapd.switch_channel("wlan0", 2462, tmp_path) == "announced"
        assert server.commands == ["CHAN_SWITCH 5 2462 ht"]
    finally:
        server.close()


def test_without_csa_the_access_point_restarts_on_the_new_channel(tmp_path):
    server = FakeHostapd(tmp_path, csa=False)
    try:
        assert hostapd.switch_channel("wlan0", 2412, tmp_path) == "restarted"
        assert server.commands == ["DISABLE", "SET channel 1", "SET hw_mode g", "ENABLE"]
    finally:
        server.close()


def test_a_refused_announcement_is_an_error_to_retry_not_a_restart(tmp_path):
    server = FakeHostapd(tmp_path, refuse=("CHAN_SWITCH",))
    try:
        with pytest.raises(ctrl.CtrlError, match="CHAN_SWITCH refused"):
            hostapd.switch_channel("wlan0", 2412, tmp_path)
        assert server.commands == ["CHAN_SWITCH 5 2412 ht"]
    finally:
        server.close()


def test_ctrl_errors_are_one_clear_line(tmp_path):
    with pytest.raises(ctrl.CtrlError, match="no control socket .*wlan0"):
        ctrl.request(tmp_path, "wlan0", "STATUS")
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    silent.bind(str(tmp_path / "wlan9"))
    try:
        with pytest.raises(ctrl.CtrlError, match="STATUS: no answer"):
            ctrl.request(tmp_path, "wlan9", "STATUS", timeout=0.3)
    finally:
        silent.close()
    assert ctrl.key_values("state=ENABLED\nfreq=2437\nnoise\n") == {"state": "ENABLED", "freq": "2437"}


def test_a_monitor_receives_the_events(tmp_path):
    daemon = FakeHostapd(tmp_path, interface="wlan1")
    monitor = ctrl.Monitor(tmp_path, "wlan1")
    try:
        monitor.attach()
        daemon.push("CTRL-EVENT-NETWORK-NOT-FOUND")
        daemon.push("CTRL-EVENT-SCAN-STARTED ")
        events: list[str] = []

        def two_events() -> bool:
            events.extend(monitor.events())
            return len(events) >= 2

        wait_for(two_events, 5, lambda: f"two events; got {events}")
        assert events == ["CTRL-EVENT-NETWORK-NOT-FOUND", "CTRL-EVENT-SCAN-STARTED"]
        assert monitor.events() == [] and monitor.attached
    finally:
        monitor.close()
        daemon.close()
    with pytest.raises(ctrl.CtrlError, match="cannot attach"):
        ctrl.Monitor(tmp_path, "wlan1").attach()


def test_hostapd_renders_the_channel_the_radio_is_held_on():
    conf = hostapd.render(AccessPointSettings(passphrase="inverters-only", channel=6), channel=11)
    assert "channel=11" in conf.splitlines() and "channel=6" not in conf.splitlines()


# -- UpstreamWifi with a stand-in radio and wpa_supplicant ----------------------------------------
class FakeRadio:
    """The kernel's Wi-Fi interfaces as ``radio`` reports them (there is no nl80211 here)."""

    def __init__(self) -> None:
        self.found = {"wlan0": radio.WifiInterface("wlan0", 3, 0, "ap", 2437)}
        self.seen: list[Sighting] = []

    def interfaces(self):
        return dict(self.found)

    def add_interface(self, parent, name, kind):
        self.found[name] = radio.WifiInterface(name, 9, self.found[parent].phy, kind, None)

    def delete_interface(self, name):
        return self.found.pop(name, None) is not None

    def sightings(self, ifindex, ssid):
        return list(self.seen)


@pytest.fixture
def fake_radio(monkeypatch):
    fake = FakeRadio()
    for name in ("interfaces", "add_interface", "delete_interface", "sightings"):
        monkeypatch.setattr(radio, name, getattr(fake, name))
    return fake


def stand_in_supplicant(tmp_path: Path, lines: list[str], then: str = "sleep 60") -> str:
    script = tmp_path / "bin" / "wpa_supplicant"
    script.parent.mkdir(exist_ok=True)
    script.write_text("#!/bin/sh\n" + "".join(f"echo '{line}'\n" for line in lines) + then + "\n")
    script.chmod(0o755)
    return str(script)


def run_until(wifi: upstream.UpstreamWifi, condition, seconds: float = 5.0) -> None:
    """Tick ``wifi`` until ``condition`` holds."""
    def ticked() -> bool:
        if condition():
            return True
        wifi.tick(time.monotonic())
        return False

    wait_for(ticked, seconds, lambda: f"the condition; status: {wifi.status()}")


def test_home_network_not_found_comes_from_the_monitor(tmp_path, fake_radio):
    wifi = upstream.UpstreamWifi(tmp_path, stand_in_supplicant(tmp_path, []), hostapd_ctrl=tmp_path)
    supplicant = FakeHostapd(wifi.ctrl_dir, interface="wlan1")
    try:
        wifi.apply(upstream_settings())
        run_until(wifi, lambda: supplicant.monitors)
        supplicant.push("CTRL-EVENT-NETWORK-NOT-FOUND")  # wpa_supplicant prints it nowhere else
        run_until(wifi, lambda: wifi.status()["state"] == "home network not found")
    finally:
        wifi.stop()
        supplicant.close()


def test_wrong_passphrase_is_a_status_not_a_restart(tmp_path, fake_radio):
    binary = stand_in_supplicant(tmp_path, ["Successfully initialized wpa_supplicant", WRONG_KEY])
    wifi = upstream.UpstreamWifi(tmp_path, binary, hostapd_ctrl=tmp_path)
    try:
        assert wifi.apply(upstream_settings())
        assert "wlan1" in fake_radio.found and fake_radio.found["wlan1"].kind == "station"
        assert (tmp_path / "wpa_supplicant.conf").stat().st_mode & 0o777 == 0o600
        pid = wifi.child.pid
        run_until(wifi, lambda: wifi.link.problem)
        status = wifi.status()
        assert status["problem"] == "wrong passphrase: the home network refused the key"
        assert status["state"] == "waiting to retry" and status["network"] == "Home"
        assert wifi.child.pid == pid  # still the same wpa_supplicant, retrying by itself
        assert not wifi.apply(upstream_settings()) and wifi.child.pid == pid  # same settings: untouched
        wifi.apply(upstream_settings(passphrase="the-right-one"))
        assert wifi.child.pid != pid and wifi.status()["problem"] == ""
    finally:
        wifi.stop()


def test_a_dying_supplicant_is_restarted_with_backoff_and_switching_off_removes_the_station(
        tmp_path, fake_radio):
    binary = stand_in_supplicant(tmp_path, ["nl80211: could not configure driver mode"], then="exit 255")
    wifi = upstream.UpstreamWifi(tmp_path, binary, hostapd_ctrl=tmp_path)
    wifi.apply(upstream_settings())
    run_until(wifi, lambda: wifi.restart_at is not None)
    assert wifi.status()["error"] == "wpa_supplicant exited with status 255"
    run_until(wifi, lambda: wifi.backoff.failures >= 2)
    wifi.apply(dataclasses.replace(upstream_settings(), upstream_wifi=UpstreamWifiSettings(enabled=False)))
    assert wifi.child is None and "wlan1" not in fake_radio.found
    assert wifi.status() == {"enabled": False}


def test_switched_off_it_leaves_a_station_on_another_radio_alone(tmp_path, fake_radio):
    # A USB Wi-Fi adapter's wlan1 (or the image test's second hwsim radio) is not the station this
    # service adds on the access point's radio: the settings refresh must never delete it.
    fake_radio.found["wlan1"] = radio.WifiInterface("wlan1", 5, 1, "station", None)
    wifi = upstream.UpstreamWifi(tmp_path, "wpa_supplicant", hostapd_ctrl=tmp_path)
    off = dataclasses.replace(upstream_settings(), upstream_wifi=UpstreamWifiSettings(enabled=False))
    for _ in range(3):
        wifi.apply(off)
    assert "wlan1" in fake_radio.found
    fake_radio.found["wlan1"] = radio.WifiInterface("wlan1", 5, 0, "station", None)  # on the AP's radio
    wifi.apply(off)  # a station left on the access point's radio by an earlier run is removed
    assert "wlan1" not in fake_radio.found


def test_the_follower_moves_the_access_point_then_hurries_the_station(tmp_path, fake_radio):
    server = FakeHostapd(tmp_path)
    binary = stand_in_supplicant(tmp_path, [])
    wifi = upstream.UpstreamWifi(tmp_path, binary, hostapd_ctrl=tmp_path)
    supplicant = FakeHostapd(wifi.ctrl_dir, interface="wlan1")  # the same protocol
    try:
        wifi.apply(upstream_settings())
        fake_radio.seen = [Sighting(2412, -40.0, 1.0)]
        now = time.monotonic()
        wifi.tick(now)
        assert server.commands == ["CHAN_SWITCH 5 2412 ht"]
        assert wifi.status()["channel_moves"] == 1 and "channel 6 -> 1 (announced" in wifi.status()["last_move"]
        wifi.tick(now + upstream.FOLLOW_SECONDS)  # the switch is under way: no second one
        assert len(server.commands) == 1 and supplicant.commands == []  # (it attached a monitor)
        fake_radio.found["wlan0"] = dataclasses.replace(fake_radio.found["wlan0"], freq=2412)
        wifi.tick(now + 2 * upstream.FOLLOW_SECONDS)  # arrived: the station may try at once
        assert supplicant.commands == ["SELECT_NETWORK 0"] and len(server.commands) == 1
        assert wifi.status()["access_point_channel"] == 1
    finally:
        wifi.stop()
        server.close()
        supplicant.close()


def test_refusals_that_last_restart_the_access_point_on_the_channel(tmp_path, fake_radio):
    server = FakeHostapd(tmp_path, refuse=("CHAN_SWITCH",))
    wifi = upstream.UpstreamWifi(tmp_path, stand_in_supplicant(tmp_path, []), hostapd_ctrl=tmp_path)
    try:
        wifi.apply(upstream_settings())
        fake_radio.found["wlan1"] = dataclasses.replace(fake_radio.found["wlan1"], freq=2462)
        now = time.monotonic()
        for round_ in range(upstream.ANNOUNCE_TRIES + 1):
            wifi.tick(now + round_ * upstream.FOLLOW_SECONDS)
        assert server.commands == ["CHAN_SWITCH 5 2462 ht"] * upstream.ANNOUNCE_TRIES + [
            "DISABLE", "SET channel 11", "SET hw_mode g", "ENABLE"]
        assert "(restarted, the station's channel)" in wifi.status()["last_move"]
    finally:
        wifi.stop()
        server.close()


def test_a_refused_switch_is_tried_again_on_the_next_round(tmp_path, fake_radio):
    server = FakeHostapd(tmp_path, refuse=("CHAN_SWITCH",))
    wifi = upstream.UpstreamWifi(tmp_path, stand_in_supplicant(tmp_path, []), hostapd_ctrl=tmp_path)
    try:
        wifi.apply(upstream_settings())
        fake_radio.seen = [Sighting(2412, -40.0, 1.0)]
        now = time.monotonic()
        wifi.tick(now)
        assert "CHAN_SWITCH refused" in wifi.status()["error"] and wifi.status()["channel_moves"] == 0
        server.refuse = ()
        wifi.tick(now + upstream.FOLLOW_SECONDS)
        assert server.commands == ["CHAN_SWITCH 5 2412 ht"] * 2 and wifi.status()["channel_moves"] == 1
        assert wifi.status()["error"] == ""
    finally:
        wifi.stop()
        server.close()


def test_without_a_radio_the_upstream_wifi_says_so(tmp_path, monkeypatch):
    def no_radio():
        raise radio.RadioError("no Wi-Fi radio (No such file or directory)")

    monkeypatch.setattr(radio, "interfaces", no_radio)
    wifi = upstream.UpstreamWifi(tmp_path, "wpa_supplicant")
    wifi.apply(upstream_settings())
    assert wifi.child is None
    assert wifi.status() == {"enabled": True, "state": "not running",
                             "error": "no Wi-Fi radio (No such file or directory)"}
    assert upstream.held_channel(upstream_settings()) is None
