"""hostapd configuration for the inverters' access point: WPA2-PSK only (the inverters' old Wi-Fi
modules do not do WPA3), 2.4 GHz only, stations isolated from each other."""
from __future__ import annotations

from appliance.net.addressing import NetConfigError, check_interface_name, require
from appliance.net.wifi import check_passphrase, check_ssid, psk, ssid_line
from appliance.settings import AccessPointSettings, rules


def check_channel(channel: int, country: str) -> int:
    """2.4 GHz channels 1-13; 14 exists only in Japan (and only for 802.11b)."""
    require("[access_point] channel", rules.channel_error(channel, country))
    return channel


def render(ap: AccessPointSettings) -> str:
    """The hostapd.conf text; ``NetConfigError`` names the bad setting."""
    interface = check_interface_name(ap.interface, "[access_point] interface")
    ssid = check_ssid(ap.ssid, "[access_point] ssid")
    if not ap.passphrase:
        raise NetConfigError("[access_point] passphrase: not set (8 to 63 characters)")
    passphrase = check_passphrase(ap.passphrase, "[access_point] passphrase")
    require("[access_point] country", rules.country_error(ap.country))
    country = ap.country.strip().upper()
    channel = check_channel(ap.channel, country)
    lines = [
        "# Rendered by solargw (solargw net render hostapd); edits are overwritten.",
        f"interface={interface}",
        "driver=nl80211",
        "ctrl_interface=/run/hostapd",
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
