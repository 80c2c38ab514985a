"""Checks shared by the access point (hostapd) and the upstream client (wpa_supplicant):
WPA2-PSK credentials and the key both daemons derive from them."""
from __future__ import annotations

import hashlib

from appliance.net.addressing import require
from appliance.settings import rules


def check_ssid(ssid: str, key: str) -> bytes:
    """An SSID is 1-32 bytes (UTF-8 here) without control characters."""
    require(key, rules.ssid_error(ssid))
    return ssid.encode("utf-8")


def check_passphrase(passphrase: str, key: str) -> str:
    """WPA2 passphrases are 8-63 printable ASCII characters (IEEE 802.11i)."""
    require(key, rules.passphrase_error(passphrase))
    return passphrase


def psk(ssid: bytes, passphrase: str) -> str:
    """The 256-bit pre-shared key (PBKDF2-SHA1, 4096 rounds, salted with the SSID), as 64 hex
    digits: the files hold the key instead of the passphrase and need no quoting rules."""
    return hashlib.pbkdf2_hmac("sha1", passphrase.encode("ascii"), ssid, 4096, 32).hex()


def ssid_line(ssid: bytes, quoted: bool) -> str:
    """The value of an ``ssid`` option: plain (hostapd) or quoted (wpa_supplicant) when printable
    ASCII without quotes, else hex (both daemons accept hex and it needs no escaping)."""
    text = ssid.decode("utf-8")
    if text.isascii() and text.isprintable() and '"' not in text and text == text.strip():
        return f'"{text}"' if quoted else text
    return ssid.hex()
