"""What the kernel knows about the Wi-Fi radio, through nl80211 (pyroute2): which interfaces it
has and on which channel, the home network in its scan results, and the virtual interfaces it
can add and remove. Read-only apart from ``add_interface`` and ``delete_interface``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from appliance.net.follow import Sighting
from appliance.net.netlink import IFTYPE_NAMES, IW, NL80211_NAMES, NLM_F_DUMP, NLM_F_REQUEST, NetlinkError, nl80211cmd

_IFTYPE_BY_NUMBER = {number: name for name, number in IFTYPE_NAMES.items()}


class RadioError(RuntimeError):
    """No nl80211, no such interface, or the driver refused (the message says which)."""


@dataclass(frozen=True)
class WifiInterface:
    name: str
    ifindex: int
    phy: int
    kind: str
    """nl80211's interface type: ``station``, ``ap``, ``monitor``..."""
    freq: int | None
    """The operating frequency (MHz); None while it has no channel (a station not associated)."""


def interface_from_message(msg: Any) -> WifiInterface:
    """A ``WifiInterface`` from an nl80211 NEW_INTERFACE message."""
    has_channel = msg.get_attr("NL80211_ATTR_CHANNEL_WIDTH") is not None
    return WifiInterface(
        name=msg.get_attr("NL80211_ATTR_IFNAME"),
        ifindex=msg.get_attr("NL80211_ATTR_IFINDEX"),
        phy=msg.get_attr("NL80211_ATTR_WIPHY"),
        kind=_IFTYPE_BY_NUMBER.get(msg.get_attr("NL80211_ATTR_IFTYPE"), "unknown"),
        freq=(msg.get_attr("NL80211_ATTR_WIPHY_FREQ") or None) if has_channel else None,
    )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, NetlinkError):
        return str(exc.args[-1] if exc.args else exc)
    return str(exc)


def interfaces() -> dict[str, WifiInterface]:
    """Every Wi-Fi interface of this network namespace, by name."""
    try:
        with IW() as iw:
            return {i.name: i for i in map(interface_from_message, iw.get_interfaces_dump()) if i.name}
    except (NetlinkError, OSError) as exc:
        raise RadioError(f"no Wi-Fi radio ({_describe(exc)})") from None


def sighting(msg: Any, ssid: bytes) -> Sighting | None:
    """The ``Sighting`` in one scan-result message (NEW_SCAN_RESULTS) if it is ``ssid``'s."""
    bss = msg.get_attr("NL80211_ATTR_BSS")
    if bss is None or not bss.get_attr("NL80211_BSS_FREQUENCY"):
        return None
    elements = bss.get_attr("NL80211_BSS_INFORMATION_ELEMENTS") or {}
    if elements.get("SSID") != ssid:
        return None
    signal = bss.get_attr("NL80211_BSS_SIGNAL_MBM") or {}
    return Sighting(
        freq=bss.get_attr("NL80211_BSS_FREQUENCY"),
        signal_dbm=signal.get("VALUE", -10000) / 100.0,
        age_seconds=(bss.get_attr("NL80211_BSS_SEEN_MS_AGO") or 0) / 1000.0,
    )


def sightings(ifindex: int, ssid: bytes) -> list[Sighting]:
    """The access points named ``ssid`` in the radio's scan results (no new scan is started:
    wpa_supplicant scans while it looks for its network)."""
    request = nl80211cmd()
    request["cmd"] = NL80211_NAMES["NL80211_CMD_GET_SCAN"]
    request["attrs"] = [["NL80211_ATTR_IFINDEX", ifindex]]
    found = []
    try:
        with IW() as iw:
            for msg in iw.nlm_request(request, msg_type=iw.prid, msg_flags=NLM_F_REQUEST | NLM_F_DUMP):
                seen = sighting(msg, ssid)
                if seen is not None:
                    found.append(seen)
    except (NetlinkError, OSError) as exc:
        raise RadioError(f"cannot read the scan results: {_describe(exc)}") from None
    return found


def add_interface(parent: str, name: str, kind: str) -> None:
    """Add ``name`` (of type ``kind``, e.g. ``station``) on the radio of interface ``parent``."""
    found = interfaces()
    if parent not in found:
        raise RadioError(f"{parent} is not a Wi-Fi interface; cannot add {name}")
    try:
        with IW() as iw:
            iw.add_interface(name, kind, dev=found[parent].ifindex)
    except (NetlinkError, OSError) as exc:
        raise RadioError(f"cannot add Wi-Fi interface {name} on {parent}'s radio: {_describe(exc)}") from None


def delete_interface(name: str) -> bool:
    """Remove the virtual interface ``name``; False if there was none."""
    found = interfaces()
    if name not in found:
        return False
    try:
        with IW() as iw:
            iw.del_interface(found[name].ifindex)
    except (NetlinkError, OSError) as exc:
        raise RadioError(f"cannot remove Wi-Fi interface {name}: {_describe(exc)}") from None
    return True
