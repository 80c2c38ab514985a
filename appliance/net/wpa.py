"""The upstream Wi-Fi client, for a Pi without Ethernet: a wpa_supplicant configuration for a
second, station-mode virtual interface on the access point's radio.

One radio serving an access point and a client must stay on one channel: the access point follows
the home network's channel, whatever ``[access_point] channel`` says (a limit of the hardware).
"""
from __future__ import annotations

from appliance.net.addressing import require
from appliance.net.interface import InterfaceError
from appliance.net.wifi import check_passphrase, check_ssid, psk, ssid_line
from appliance.settings import Settings, rules


def render(settings: Settings) -> str:
    """The wpa_supplicant.conf text for ``[upstream_wifi]``; ``NetConfigError`` names the bad key."""
    up = settings.upstream_wifi
    require("[upstream_wifi] interface", rules.upstream_interface_error(up.interface, settings.access_point.interface))
    ssid = check_ssid(up.ssid, "[upstream_wifi] ssid")
    country = settings.access_point.country.strip().upper()
    lines = [
        "# Rendered by solargw (solargw net render wpa_supplicant); edits are overwritten.",
        "ctrl_interface=DIR=/run/wpa_supplicant GROUP=netdev",
        "update_config=0",
        f"country={country}",
        "",
        "network={",
        f"\tssid={ssid_line(ssid, quoted=True)}",
        "\tscan_ssid=1",
    ]
    if up.passphrase:
        passphrase = check_passphrase(up.passphrase, "[upstream_wifi] passphrase")
        lines += ["\tkey_mgmt=WPA-PSK", "\tproto=RSN WPA", f"\tpsk={psk(ssid, passphrase)}"]
    else:
        lines.append("\tkey_mgmt=NONE")
    lines += ["}", ""]
    return "\n".join(lines)


def ensure_station_interface(parent: str, name: str) -> bool:
    """Create ``name`` as a station interface on ``parent``'s radio; False if it already exists."""
    from pyroute2 import IW  # here: every command imports this module (net.plan), few need netlink
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        with IW() as iw:
            interfaces = iw.get_interfaces_dict()
            if name in interfaces:
                return False
            if parent not in interfaces:
                raise InterfaceError(f"{parent} is not a Wi-Fi interface; cannot add {name}")
            iw.add_interface(name, "station", dev=interfaces[parent][0])
    except NetlinkError as exc:
        raise InterfaceError(f"cannot add Wi-Fi interface {name}: {exc}") from None
    return True
