"""Checks shared by the access point (hostapd) and the upstream client (wpa_supplicant):
WPA2-PSK credentials and the key both daemons derive from them."""
from __future__ import annotations

import hashlib

from appliance.net.addressing import NetConfigError


def check_ssid(ssid: str, key: str) -> bytes:
    """An SSID is 1-32 bytes (UTF-8 here) without control characters."""
    if not ssid:
        raise NetConfigError(f"{key}: not set")
    raw = ssid.encode("utf-8")
    if not 1 <= len(raw) <= 32:
        raise NetConfigError(f"{key}: an SSID is 1 to 32 bytes, {ssid!r} is {len(raw)}")
    if any(ord(c) < 32 or ord(c) == 127 for c in ssid):
        raise NetConfigError(f"{key}: the SSID contains a control character")
    return raw


def check_passphrase(passphrase: str, key: str) -> str:
    """WPA2 passphrases are 8-63 printable ASCII characters (IEEE 802.11i)."""
    if not 8 <= len(passphrase) <= 63:
        raise NetConfigError(f"{key}: a WPA2 passphrase is 8 to 63 characters, not {len(passphrase)}")
    if not all(32 <= ord(c) <= 126 for c in passphrase):
        raise NetConfigError(f"{key}: the passphrase may only use printable ASCII characters")
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
