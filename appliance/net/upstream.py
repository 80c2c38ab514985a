"""The upstream Wi-Fi of ``solargw net run``: a Pi without Ethernet joins the home network as a
Wi-Fi client on the access point's own radio, and the access point follows its channel.

How the parts are arranged, and why:

- **The station interface** (``[upstream_wifi] interface``, default ``wlan1``) is added by this
  service on the access point's radio through nl80211 (``radio.add_interface``), and removed
  when the upstream Wi-Fi is switched off. The radio allows one access point and one station
  (``#channels <= 1``): a second virtual interface is the only way to be both.
- **wpa_supplicant** runs on it as this service's child, like dnsmasq, rather than as
  ``wpa_supplicant@wlan1.service``: the service already follows the settings file, so switching
  the upstream Wi-Fi on or off or changing the home network in the web UI takes effect within
  seconds, the interface name is a setting instead of a unit name fixed at provisioning, and
  wpa_supplicant's event lines (connected, network not found, wrong key) come back through the
  pipe to become the status page's words. A wrong passphrase is not a crash: wpa_supplicant
  keeps retrying with growing pauses, the status says "wrong passphrase", nothing restarts.
  A home network that is not there is looked for again every few seconds, forever.
- **DHCP, DNS and the default route** on the station are systemd-networkd's (a ``.network``
  file matching any Wi-Fi station, from the access_point role), the same client as the wired
  LAN, with systemd-resolved for the DNS servers it learns; its default route has a higher
  metric than Ethernet's, so a cable wins. avahi answers ``solargw.local`` there as on Ethernet,
  and the firewall treats the station as LAN: the web UI answers, the inverters' subnet stays
  unreachable from it.
- **The channel follower** runs every ``FOLLOW_SECONDS``: it reads the access point's and the
  station's channels and the home network's scan results from the kernel (``radio``), lets
  ``follow.decide`` choose, and moves hostapd through its control socket
  (``hostapd.switch_channel``: announced with CSA where the driver can, else, or when
  announcements keep being refused, a restart of the access point on the new channel). Reading the channels back from the kernel, instead of trusting what was asked
  for, also covers a driver (brcmfmac's firmware) that moves the access point by itself.
"""
from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

from appliance.net import ctrl, follow, hostapd, radio, wpa
from appliance.net.addressing import NetConfigError
from appliance.net.child import Backoff, Child
from appliance.net.interface import ipv4_addresses
from appliance.settings import Settings

log = logging.getLogger(__name__)

FOLLOW_SECONDS = 2.0
ANNOUNCE_TRIES = 3
"""Refused announcements (CSA) in a row before the access point is restarted on the channel
instead. One refusal is common (mac80211 refuses while the radio scans); lasting ones were seen
in hwsim after the station had followed the home router's own announcement alone."""


class UpstreamWifi:
    def __init__(self, run_dir: Path, binary: str = "wpa_supplicant",
                 hostapd_ctrl: Path = hostapd.CTRL_DIR) -> None:
        self.conf_path = run_dir / "wpa_supplicant.conf"
        self.ctrl_dir = run_dir / "wpa_supplicant"
        self.binary = binary
        self.hostapd_ctrl = hostapd_ctrl
        self.enabled = False
        """Running: set and usable (``error`` says why not when it is set)."""
        self.wanted = False
        self.interface = ""
        self.ap_interface = ""
        self.ap_serving = True
        self.ssid = b""
        self.conf_text = ""
        self.child: Child | None = None
        self.monitor: ctrl.Monitor | None = None
        self.backoff = Backoff()
        self.restart_at: float | None = None
        self.link = wpa.LinkState()
        self.error = ""
        self.daemon_error = ""
        self.follow_error = ""
        self.channels: tuple[int | None, int | None] = (None, None)
        self.moves = 0
        self.last_move = ""
        self._last_move_at: float | None = None
        self._moved_to: int | None = None
        self._refusals = 0
        self._next_follow = 0.0

    # -- following the settings -------------------------------------------------------------
    def apply(self, settings: Settings) -> bool:
        """Bring the station in line with ``settings``; True when the status changed."""
        before = self._summary()
        up = settings.upstream_wifi
        self.ap_interface = settings.access_point.interface
        self.ap_serving = settings.access_point.enabled
        self.wanted = up.enabled
        if not up.enabled:
            if self.enabled:
                log.info("upstream Wi-Fi switched off")
            self._stop()
            self._remove_interface(self.interface or up.interface)
            self.enabled, self.error, self.conf_text = False, "", ""
            return self._summary() != before
        try:
            ssid = wpa.check(settings)
            text = wpa.render(settings, self.ctrl_dir)
            if self.interface and self.interface != up.interface:
                self._stop()
                self._remove_interface(self.interface)
            self._ensure_interface(up.interface)
        except (NetConfigError, radio.RadioError) as exc:
            if str(exc) != self.error:
                log.error("upstream Wi-Fi: %s", exc)
            self.error = str(exc)
            return self._summary() != before
        if self.error:
            log.info("upstream Wi-Fi: the settings and the radio are usable again")
        self.enabled, self.error, self.interface, self.ssid = True, "", up.interface, ssid
        if text != self.conf_text:
            self._write_conf(text)
            if self.child is not None:
                log.info("upstream Wi-Fi settings changed: restarting wpa_supplicant")
            self._stop()
            self.link = wpa.LinkState()
            self.backoff.reset()
            self._start()
        elif self.child is None and self.restart_at is None:
            self._start()
        return self._summary() != before

    def _ensure_interface(self, name: str) -> None:
        found = radio.interfaces()
        if name not in found:
            radio.add_interface(self.ap_interface, name, "station")
            log.info("added the Wi-Fi client interface %s on %s's radio", name, self.ap_interface)
        elif found[name].kind != "station":
            raise radio.RadioError(f"{name} exists but is a Wi-Fi {found[name].kind} interface, not a station")

    def _remove_interface(self, name: str) -> None:
        """Remove the station ``name`` if it is the one this service adds: on the access point's
        radio. A station of the same name on another radio (a USB Wi-Fi adapter) is not ours."""
        try:
            found = radio.interfaces()
            ap = found.get(self.ap_interface)
            if (name in found and found[name].kind == "station" and name != self.ap_interface
                    and ap is not None and found[name].phy == ap.phy):
                radio.delete_interface(name)
                log.info("removed the Wi-Fi client interface %s", name)
        except radio.RadioError as exc:
            log.warning("upstream Wi-Fi: %s", exc)

    def _write_conf(self, text: str) -> None:
        self.conf_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.conf_path.with_name(self.conf_path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it holds the key
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, self.conf_path)
        self.conf_text = text

    # -- the wpa_supplicant child ------------------------------------------------------------
    def _start(self) -> None:
        self.restart_at = None
        self.child = Child("wpa_supplicant", [self.binary, "-i", self.interface, "-D", "nl80211",
                                              "-c", str(self.conf_path)])
        try:
            self.child.start()
            self.daemon_error = ""
        except OSError as exc:
            self.child = None
            self.daemon_error = f"cannot start {self.binary}: {exc.strerror or exc}"
            log.error("upstream Wi-Fi: %s", self.daemon_error)
            self.restart_at = time.monotonic() + self.backoff.delay(0.0)

    def _stop(self) -> None:
        if self.monitor is not None:
            self.monitor.close()
            self.monitor = None
        if self.child is not None:
            for line in self.child.stop():
                self._take_line(line)
            self.child = None
        self.restart_at = None

    def log_fd(self) -> int | None:
        return self.child.log_fd() if self.child else None

    def _take_line(self, line: str) -> bool:
        changed = self.link.feed(line)
        if changed or not any(noisy in line for noisy in wpa.NOISY_EVENTS):
            log.info("wpa_supplicant: %s", line)
        return changed

    def _take_events(self) -> bool:
        """Events from the attached control socket: the complete, ordered list (its output has
        only some of them), so they decide the state last."""
        if self.monitor is None:
            self.monitor = ctrl.Monitor(self.ctrl_dir, self.interface)
        if not self.monitor.attached:
            try:
                self.monitor.attach()
            except ctrl.CtrlError:
                return False  # not up yet: its output still tells the main events
        changed = False
        for event in self.monitor.events():
            if self.link.feed(event):
                changed = True
                if event.startswith("CTRL-EVENT-NETWORK-NOT-FOUND"):
                    log.info("upstream Wi-Fi: no network named %r in range (still looking)",
                             self.ssid.decode(errors="replace"))
        return changed

    def tick(self, now: float) -> bool:
        """Read wpa_supplicant's output, restart it if it died, follow the home network's
        channel; True when the status changed."""
        changed = False
        if self.child is not None:
            for line in self.child.read_log():
                changed |= self._take_line(line)
            changed |= self._take_events()
            status = self.child.exited()
            if status is not None:
                ran = now - self.child.started_at
                self._stop()
                how = f"killed by {signal.Signals(-status).name}" if status < 0 else f"exited with status {status}"
                self.daemon_error = f"wpa_supplicant {how}"
                delay = self.backoff.delay(ran)
                self.restart_at = now + delay
                log.error("upstream Wi-Fi: %s; starting it again in %.1f s", self.daemon_error, delay)
                changed = True
        elif self.enabled and self.restart_at is not None and now >= self.restart_at:
            self._start()
            changed = True
        if self.enabled and now >= self._next_follow:
            self._next_follow = now + FOLLOW_SECONDS
            changed |= self._follow(now)
        return changed

    def stop(self) -> None:
        """The service stops: wpa_supplicant with it (the interface stays)."""
        self._stop()

    # -- the channel follower ----------------------------------------------------------------
    def _follow(self, now: float) -> bool:
        before = (self.channels, self.follow_error)
        try:
            found = radio.interfaces()
            ap, station = found.get(self.ap_interface), found.get(self.interface)
            ap_freq = ap.freq if ap is not None and ap.kind == "ap" and self.ap_serving else None
            station_freq = station.freq if station is not None else None
            self.channels = (ap_freq, station_freq)
            seen = []
            if station is not None and not station_freq and ap_freq:
                seen = radio.sightings(station.ifindex, self.ssid)
            since = None if self._last_move_at is None else now - self._last_move_at
            target = follow.decide(ap_freq, station_freq, seen, since)
            if target is not None:
                try:
                    how = hostapd.switch_channel(self.ap_interface, target, self.hostapd_ctrl,
                                                 announce=self._refusals < ANNOUNCE_TRIES)
                except ctrl.CtrlError:
                    self._refusals += 1
                    raise
                self._refusals = 0
                old, new = follow.channel_of(ap_freq), follow.channel_of(target)
                why = "the station's channel" if station_freq else "where the home network was seen"
                self.moves += 1
                self._last_move_at, self._moved_to = now, target
                self.last_move = f"channel {old} -> {new} ({how}, {why}) at {time.strftime('%H:%M:%S')}"
                log.info("access point follows the home network: %s", self.last_move)
            elif self._moved_to is not None and ap_freq == self._moved_to:
                self._moved_to = None
                if not station_freq:
                    self._join_now()
            self.follow_error = ""
        except (radio.RadioError, ctrl.CtrlError) as exc:
            if str(exc) != self.follow_error:
                log.warning("upstream Wi-Fi channel follower: %s (trying again)", exc)
            self.follow_error = str(exc)
        return (self.channels, self.follow_error) != before

    def _join_now(self) -> None:
        """The access point has arrived on the home network's channel: ask wpa_supplicant to
        try now. Its attempts while the radio was held elsewhere failed, and it would otherwise
        sit out the pause it takes after failures (10 s, then longer); ``SELECT_NETWORK`` clears
        that pause and connects."""
        try:
            ctrl.request(self.ctrl_dir, self.interface, "SELECT_NETWORK 0")
        except ctrl.CtrlError as exc:
            log.info("upstream Wi-Fi: could not hurry wpa_supplicant (%s); it retries by itself", exc)

    # -- status ------------------------------------------------------------------------------
    def _summary(self) -> tuple:
        return (self.wanted, self.enabled, self.error, self.interface)

    def status(self) -> dict[str, Any]:
        if not self.wanted:
            return {"enabled": False}
        if not self.enabled:
            return {"enabled": True, "state": "not running", "error": self.error}
        ap_freq, station_freq = self.channels
        running = self.child is not None and self.child.running()
        return {
            "enabled": True,
            "interface": self.interface,
            "network": self.ssid.decode(errors="replace"),
            "state": self.link.state if running else "wpa_supplicant not running",
            "problem": self.link.problem,
            "error": self.error or self.daemon_error or self.follow_error,
            "address": ", ".join(ipv4_addresses(self.interface)) or None,
            "channel": follow.channel_of(station_freq) if station_freq else None,
            "access_point_channel": follow.channel_of(ap_freq) if ap_freq else None,
            "channel_moves": self.moves,
            "last_move": self.last_move or None,
        }


def held_channel(settings: Settings) -> int | None:
    """The channel the upstream station holds the radio on (it is associated), for hostapd's
    configuration: a mac80211 radio refuses to start the access point anywhere else. None when
    the upstream Wi-Fi is off, not associated, or there is no radio."""
    if not settings.upstream_wifi.enabled:
        return None
    try:
        station = radio.interfaces().get(settings.upstream_wifi.interface)
    except radio.RadioError:
        return None
    return follow.channel_of(station.freq) if station is not None and station.freq else None
