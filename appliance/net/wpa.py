"""The upstream Wi-Fi client, for a Pi without Ethernet: wpa_supplicant's configuration for the
station-mode interface on the access point's radio, and what its event lines say (pure).

No P2P (``p2p_disabled``: it would add a P2P device interface the radio's few interface slots
do not need). The station may only use 2.4 GHz channels (``freq_list``): the access point must
share its channel, and the inverters it serves only have 2.4 GHz radios. A home network that
sends the same name on 2.4 and 5 GHz is joined on 2.4 GHz; one on 5 GHz only is "not found".
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from appliance.net.addressing import require
from appliance.net.follow import freq_of
from appliance.net.wifi import check_passphrase, check_ssid, psk, ssid_line
from appliance.settings import Settings, rules

CTRL_DIR = Path("/run/solargw/wpa_supplicant")
"""Where its control socket goes (``wpa_cli -p /run/solargw/wpa_supplicant status``)."""


def check(settings: Settings) -> bytes:
    """The ``[upstream_wifi]`` checks that need no radio; returns the SSID's bytes."""
    up = settings.upstream_wifi
    require("[upstream_wifi] interface", rules.upstream_interface_error(up.interface, settings.access_point.interface))
    ssid = check_ssid(up.ssid, "[upstream_wifi] ssid")
    if up.passphrase:
        check_passphrase(up.passphrase, "[upstream_wifi] passphrase")
    return ssid


def allowed_freqs(country: str) -> list[int]:
    """The 2.4 GHz channels 1-13 (and 14 in Japan), as frequencies."""
    channels = range(1, 15) if country.strip().upper() == "JP" else range(1, 14)
    return [freq_of(channel) for channel in channels]


def render(settings: Settings, ctrl_dir: Path = CTRL_DIR) -> str:
    """The wpa_supplicant.conf text for ``[upstream_wifi]``; ``NetConfigError`` names the bad key."""
    ssid = check(settings)
    up = settings.upstream_wifi
    country = settings.access_point.country.strip().upper()
    freqs = " ".join(map(str, allowed_freqs(country)))
    lines = [
        "# Rendered by solargw (solargw net render wpa_supplicant); edits are overwritten.",
        f"ctrl_interface={ctrl_dir}",
        "update_config=0",
        "p2p_disabled=1",
        f"country={country}",
        f"freq_list={freqs}",
        "",
        "network={",
        f"\tssid={ssid_line(ssid, quoted=True)}",
        "\tscan_ssid=1",
        f"\tfreq_list={freqs}",
    ]
    if up.passphrase:
        lines += ["\tkey_mgmt=WPA-PSK", "\tproto=RSN WPA", f"\tpsk={psk(ssid, up.passphrase)}"]
    else:
        lines.append("\tkey_mgmt=NONE")
    lines += ["}", ""]
    return "\n".join(lines)


# -- what wpa_supplicant says -------------------------------------------------------------------

_EVENT = re.compile(r"(CTRL-EVENT-[A-Z-]+)(.*)")
_REASON = re.compile(r"\breason=(\w+)")
_PROBLEMS = {
    "WRONG_KEY": "wrong passphrase: the home network refused the key",
    "AUTH_FAILED": "the home network refused the authentication",
    "CONN_FAILED": "could not connect to the home network",
}


@dataclass
class LinkState:
    """The station's state as wpa_supplicant's event lines tell it. ``problem`` stays until the
    station connects (a wrong passphrase is retried with growing pauses, and the status must keep
    saying why it does not connect in between)."""
    state: str = "starting"
    problem: str = ""

    def feed(self, line: str) -> bool:
        """Take one output line of wpa_supplicant; True when the state or problem changed."""
        before = (self.state, self.problem)
        match = _EVENT.search(line)
        event, rest = (match.group(1), match.group(2)) if match else ("", line)
        if event == "CTRL-EVENT-CONNECTED":
            self.state, self.problem = "connected", ""
        elif event == "CTRL-EVENT-DISCONNECTED":
            self.state = "disconnected"
        elif event == "CTRL-EVENT-NETWORK-NOT-FOUND":
            self.state = "home network not found"
        elif event == "CTRL-EVENT-SSID-TEMP-DISABLED":
            reason = _REASON.search(rest)
            code = reason.group(1) if reason else ""
            self.state = "waiting to retry"
            self.problem = _PROBLEMS.get(code, f"connection failed ({code or 'no reason given'})")
        elif not event and ("Trying to associate" in line or "Trying to authenticate" in line):
            self.state = "connecting"
        return (self.state, self.problem) != before


NOISY_EVENTS = ("CTRL-EVENT-SCAN-STARTED", "CTRL-EVENT-SCAN-RESULTS", "CTRL-EVENT-NETWORK-NOT-FOUND",
                "CTRL-EVENT-BSS-ADDED", "CTRL-EVENT-BSS-REMOVED", "CTRL-EVENT-REGDOM-CHANGE",
                "CTRL-EVENT-DSCP-POLICY")
"""Lines repeated every few seconds while the home network is away, or that say nothing to an
owner: kept out of the journal (a state they change is logged once)."""
