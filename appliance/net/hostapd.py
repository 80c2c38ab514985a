"""hostapd for the inverters' access point: its configuration (WPA2-PSK only, the inverters' old
Wi-Fi modules do not do WPA3; 2.4 GHz only; stations isolated from each other), and moving the
running access point to another channel (when it follows the upstream Wi-Fi's home network)."""
from __future__ import annotations

from pathlib import Path

from appliance.net import ctrl
from appliance.net.addressing import NetConfigError, check_interface_name, require
from appliance.net.follow import channel_of
from appliance.net.wifi import check_passphrase, check_ssid, psk, ssid_line
from appliance.settings import AccessPointSettings, rules

CTRL_DIR = Path("/run/hostapd")
CSA_BEACONS = 5
"""How many beacons announce a channel switch before it happens (0.5 s at 100 TU)."""


def check_channel(channel: int, country: str) -> int:
    """2.4 GHz channels 1-13; 14 exists only in Japan (and only for 802.11b)."""
    require("[access_point] channel", rules.channel_error(channel, country))
    return channel


def render(ap: AccessPointSettings, channel: int | None = None) -> str:
    """The hostapd.conf text; ``NetConfigError`` names the bad setting. ``channel`` overrides
    ``ap.channel`` (the channel the radio is held on by the upstream Wi-Fi)."""
    interface = check_interface_name(ap.interface, "[access_point] interface")
    ssid = check_ssid(ap.ssid, "[access_point] ssid")
    if not ap.passphrase:
        raise NetConfigError("[access_point] passphrase: not set (8 to 63 characters)")
    passphrase = check_passphrase(ap.passphrase, "[access_point] passphrase")
    require("[access_point] country", rules.country_error(ap.country))
    country = ap.country.strip().upper()
    channel = check_channel(ap.channel if channel is None else channel, country)
    lines = [
        "# Rendered by solargw (solargw net render hostapd); edits are overwritten.",
        f"interface={interface}",
        "driver=nl80211",
        f"ctrl_interface={CTRL_DIR}",
        "ctrl_interface_group=0",
    ]
    value = ssid_line(ssid, quoted=False)
    lines.append(f"ssid={value}" if value == ap.ssid else f"ssid2={value}")
    if not ap.ssid.isascii():
        lines.append("utf8_ssid=1")
    lines += [
        f"country_code={country}",
        "ieee80211d=1",
        "hw_mode=" + ("b" if channel == 14 else "g"),
        f"channel={channel}",
    ]
    if channel != 14:
        lines += ["ieee80211n=1", "wmm_enabled=1"]
    lines += [
        "auth_algs=1",
        "ignore_broadcast_ssid=0",
        "ap_isolate=1",
        "wpa=2",
        "wpa_key_mgmt=WPA-PSK",
        "rsn_pairwise=CCMP",
        f"wpa_psk={psk(ssid, passphrase)}",
        "",
    ]
    return "\n".join(lines)


def switch_channel(interface: str, freq: int, ctrl_dir: Path = CTRL_DIR, announce: bool = True) -> str:
    """Move the running access point on ``interface`` to ``freq`` (MHz, 2.4 GHz). Where the
    driver can, the switch is announced in the beacons (CSA: the inverters follow without
    leaving); else hostapd restarts the access point on the new channel (the inverters associate
    again, as after any outage). Returns "announced" or "restarted"; ``ctrl.CtrlError`` when it
    did not happen (a refused CSA, e.g. while the radio scans, is tried again by the caller).
    ``announce=False``: restart even where CSA exists (the caller's answer to refusals that last).

    mac80211 drivers (``mac80211_hwsim`` too) announce (hostapd's driver flag ``AP_CSA``); the Pi's
    brcmfmac has no channel switch operation, so there the restart is the way.
    """
    channel = channel_of(freq)
    if channel is None:
        raise ValueError(f"{freq} MHz is not a 2.4 GHz channel")
    if announce and "AP_CSA" in ctrl.request(ctrl_dir, interface, "DRIVER_FLAGS").split():
        mode = "" if channel == 14 else " ht"
        ctrl.request(ctrl_dir, interface, f"CHAN_SWITCH {CSA_BEACONS} {freq}{mode}")
        return "announced"
    ctrl.request(ctrl_dir, interface, "DISABLE")
    ctrl.request(ctrl_dir, interface, f"SET channel {channel}")
    ctrl.request(ctrl_dir, interface, "SET hw_mode " + ("b" if channel == 14 else "g"))
    ctrl.request(ctrl_dir, interface, "ENABLE")
    return "restarted"
