"""Which channel the access point must be on while the upstream client shares its radio (pure).

The Pi's brcmfmac radio runs its access point and its station on one channel at a time (its
interface combinations say ``#channels <= 1``; ``mac80211_hwsim`` models the same), and the home
network decides that channel. So the access point follows:

- the station is associated: its channel is the one (the radio cannot be anywhere else);
- the station is not associated but the home network was seen in a recent scan: its channel,
  so that the station can join at all. On a mac80211 radio the station cannot authenticate on
  another channel while the access point holds the radio; brcmfmac's firmware may move the access
  point by itself, which this reads back from the kernel and then leaves alone. Of several access
  points of the home network seen in one scan, the strongest wins. After a move, scan sightings
  cannot move the access point again for ``HOLD_SECONDS``: two home access points on two channels
  must not make the inverters' network hop back and forth;
- nothing known (the home network is away): the access point stays where it is.

Only 2.4 GHz channels count: the inverters have 2.4 GHz radios, so the station is limited to
2.4 GHz too (``wpa.render``), and a home network on 5 GHz only is never a target.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

FRESH_SECONDS = 30.0
"""A sighting older than this says nothing (cfg80211 drops unseen networks after 30 s as well)."""
SAME_SCAN_SECONDS = 5.0
"""Sightings this close to the newest one come from the same scan; older ones may describe the
home network before it changed channel."""
HOLD_SECONDS = 20.0
SETTLE_SECONDS = 5.0
"""After a move nothing moves for this long: a switch announced over 5 beacons, or an access point
restarted, reads back as the old channel (or none) meanwhile."""


def channel_of(freq: int) -> int | None:
    """The 2.4 GHz channel number of a frequency in MHz; None outside the 2.4 GHz band."""
    if freq == 2484:
        return 14
    if 2412 <= freq <= 2472 and (freq - 2407) % 5 == 0:
        return (freq - 2407) // 5
    return None


def freq_of(channel: int) -> int:
    """The centre frequency (MHz) of a 2.4 GHz channel, 1-14."""
    if channel == 14:
        return 2484
    if 1 <= channel <= 13:
        return 2407 + 5 * channel
    raise ValueError(f"{channel} is not a 2.4 GHz channel")


@dataclass(frozen=True)
class Sighting:
    """One access point of the home network (the configured SSID) in the kernel's scan results."""
    freq: int
    signal_dbm: float
    age_seconds: float


def home_freq(station_freq: int | None, sightings: Iterable[Sighting]) -> int | None:
    """The frequency the radio must be on for the station: its own when associated, else the
    strongest home access point of the latest scan; None when nothing tells."""
    if station_freq:
        return station_freq
    fresh = [s for s in sightings if s.age_seconds <= FRESH_SECONDS and channel_of(s.freq)]
    if not fresh:
        return None
    newest = min(s.age_seconds for s in fresh)
    latest = [s for s in fresh if s.age_seconds <= newest + SAME_SCAN_SECONDS]
    return max(latest, key=lambda s: s.signal_dbm).freq


def decide(ap_freq: int | None, station_freq: int | None, sightings: Iterable[Sighting],
           since_last_move: float | None) -> int | None:
    """The frequency to move the access point to now, or None to leave it.

    ``ap_freq``: where the access point is (None: it is not running, nothing to follow).
    ``since_last_move``: seconds since the last move (None: never moved).
    """
    if ap_freq is None:
        return None
    target = home_freq(station_freq, sightings)
    if target is None or target == ap_freq or channel_of(target) is None:
        return None
    if since_last_move is not None:
        if since_last_move < SETTLE_SECONDS or (since_last_move < HOLD_SECONDS and not station_freq):
            return None
    return target
