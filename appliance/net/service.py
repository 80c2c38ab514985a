"""``solargw net run``: keep the access point's address, firewall and dnsmasq in line with the
settings, and dnsmasq alive.

One loop, one thread. It wakes on a signal (through ``signal.set_wakeup_fd``), on dnsmasq's log
output, or every second. Then:
- SIGTERM/SIGINT: stop dnsmasq (SIGTERM, then SIGKILL) and return. The address and the firewall
  stay in place: the access point must not open up because its service stopped.
- SIGHUP, a changed settings file (polled every second) or every few seconds: rebuild the plan
  (which also picks up new LAN resolvers: dnsmasq gets those with a SIGHUP of its own, no
  restart). The settings file is followed by the shared runtime
  (:class:`appliance.runtime.SettingsFollower`: a file that does not load or validate leaves the
  last good settings in use). A new plan is checked whole (``dnsmasq --test``, then nft) before
  anything changes; if any step refuses, the old configuration keeps serving and the error is
  logged once and reported in the status.
- dnsmasq died: restart it after a backoff (0.5 s doubling to 30 s; reset once it ran 30 s).
- ``[upstream_wifi]``: the station interface, its wpa_supplicant child and the channel follower
  (``upstream.UpstreamWifi``: applied with the settings, ticked with the loop).
Status (dnsmasq state, leases and stations, last error) goes to the store as ``net``, when it
changed or once a minute (:class:`appliance.runtime.StatusReporter`).
"""
from __future__ import annotations

import logging
import os
import select
import signal
import time
from pathlib import Path
from typing import Any

from appliance import settings as settings_module
from appliance.atomic import write_atomic
from appliance.net import clients, dnsmasq, firewall
from appliance.net.addressing import NetConfigError
from appliance.net.interface import InterfaceError, ensure_address
from appliance.net.plan import NetPlan, RuntimePaths, build, with_interface
from appliance.net.upstream import UpstreamWifi
from appliance.runtime import ServiceError, SettingsFollower, StatusReporter

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0
REFRESH_SECONDS = 5.0
STATUS_HEARTBEAT_SECONDS = 60.0
FIREWALL_CHECK_SECONDS = 15.0
BACKOFF_FIRST, BACKOFF_MAX, STABLE_SECONDS = 0.5, 30.0, 30.0
BIND_GRACE_SECONDS = 5.0
"""How long dnsmasq may run with the access point's address present but no DNS socket on it.
``bind-dynamic`` should open it on the address's netlink event; in the booted image that event was
once missed while hostapd reset the interface, and the inverters got leases but no DNS answer."""

_CONFIG_ERRORS = (settings_module.SettingsError, NetConfigError, dnsmasq.DnsmasqConfigError,
                  firewall.FirewallError, OSError)


class NetService:
    def __init__(
        self,
        settings_path: Path,
        paths: RuntimePaths,
        *,
        interface: str | None = None,
        dnsmasq_binary: str = "dnsmasq",
        wpa_supplicant_binary: str = "wpa_supplicant",
        nft_binary: str = "nft",
        use_firewall: bool = True,
    ) -> None:
        """Loads and validates the settings; a bad file gives the last good settings (the
        problem in ``config_error``, logged once)."""
        self.settings_path = settings_path
        self.paths = paths
        self.interface_override = interface
        self.dnsmasq_binary = dnsmasq_binary
        self.nft_binary = nft_binary
        self.use_firewall = use_firewall
        self.child = dnsmasq.DnsmasqProcess(paths.dnsmasq_conf, dnsmasq_binary)
        self.upstream = UpstreamWifi(paths.run_dir, wpa_supplicant_binary)
        self.follower = SettingsFollower(settings_path, adjust=lambda s: with_interface(s, interface), recover=True)
        self.reporter = StatusReporter("net", self._status_store, heartbeat=STATUS_HEARTBEAT_SECONDS)
        self._store: Any = None
        self._store_dir: Path | None = None

        self.current: NetPlan | None = None
        self.config_error = ""
        self.plan_error = ""
        self.interface_error = ""
        self.firewall_state = "not applied"
        self.dnsmasq_error = ""
        self.restarts = 0
        self.failures = 0
        self.restart_at: float | None = None
        self.last_exit: int | None = None

        self._stop_signal: int | None = None
        self._next_refresh = 0.0
        self._next_firewall_check = 0.0
        self._unbound_since: float | None = None
        self._status_checked = 0.0
        self._last_log_line = ""
        self._dirty = True

    @property
    def settings(self) -> settings_module.Settings:
        """The settings in use (the last good version of the file)."""
        return self.follower.settings

    # -- signals ---------------------------------------------------------------------------
    def _install_signals(self) -> int:
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        os.set_blocking(write_fd, False)
        signal.set_wakeup_fd(write_fd)

        def stop(signum: int, _frame: Any) -> None:
            self._stop_signal = signum

        def reload(_signum: int, _frame: Any) -> None:
            self.follower.request_reload("SIGHUP")

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, reload)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes the loop when dnsmasq dies
        return read_fd

    # -- main loop -------------------------------------------------------------------------
    def run(self) -> int:
        for noisy in ("pyroute2", "asyncio"):  # netlink chatter would drown the service's log
            logging.getLogger(noisy).setLevel(logging.WARNING)
        wake_fd = self._install_signals()
        self.paths.run_dir.mkdir(parents=True, exist_ok=True)
        dnsmasq.reap_stale(self.paths.dnsmasq_pid, self.paths.dnsmasq_conf)
        try:
            while self._stop_signal is None:
                self._tick()
                watched = [wake_fd] + [fd for fd in (self.child.log_fd(), self.upstream.log_fd())
                                       if fd is not None]
                try:
                    select.select(watched, [], [], self._timeout())
                except InterruptedError:
                    pass
                try:
                    while os.read(wake_fd, 512):
                        pass
                except BlockingIOError:
                    pass
                self._pump_log()
        finally:
            self._shutdown()
        return 0

    def _timeout(self) -> float:
        timeout = POLL_SECONDS
        if self.restart_at is not None:
            timeout = min(timeout, max(0.0, self.restart_at - time.monotonic()))
        return timeout

    def _tick(self) -> None:
        now = time.monotonic()
        if self.follower.check() or now >= self._next_refresh:
            self._next_refresh = now + REFRESH_SECONDS
            self.reconfigure()
        self._watch_child(now)
        self._watch_dns_socket(now)
        self._dirty |= self.upstream.tick(now)
        if self.use_firewall and self.current and now >= self._next_firewall_check:
            self._next_firewall_check = now + FIREWALL_CHECK_SECONDS
            if not firewall.present(self.nft_binary):
                log.warning("the solargw nftables table disappeared; loading it again")
                self._apply_firewall(self.current.ruleset)
        self._write_status()

    # -- configuration ---------------------------------------------------------------------
    def reconfigure(self) -> None:
        """Build a plan from the settings in use; apply it if it differs, or keep the old one on error."""
        settings = self.follower.settings
        try:
            candidate = build(settings, self.paths)
            if candidate != self.current:
                self._apply(candidate)
            plan_error = ""
        except Exception as exc:  # noqa: BLE001 - whatever went wrong, the old configuration serves on
            plan_error = str(exc) if isinstance(exc, _CONFIG_ERRORS) else f"unexpected error: {exc!r}"
            if not isinstance(exc, _CONFIG_ERRORS):
                log.exception("while applying the settings")
            if plan_error != self.plan_error:
                kept = "keeping the previous configuration" if self.current else "not serving yet"
                log.error("%s (%s)", plan_error, kept)
        if self.plan_error and not plan_error:
            log.info("configuration accepted again")
        self.plan_error = plan_error
        error = self.follower.error or plan_error  # a refused settings file, else a refused plan
        if error != self.config_error:
            self.config_error, self._dirty = error, True
        if plan_error:
            return
        self._ensure_address(self.current)
        self._dirty |= self.upstream.apply(settings)

    def _apply(self, new: NetPlan) -> None:
        old = self.current
        staged = self.paths.dnsmasq_conf.with_name(self.paths.dnsmasq_conf.name + ".new")
        staged.write_text(new.dnsmasq_conf)
        try:
            dnsmasq.validate(staged, self.dnsmasq_binary)  # (it does not read the servers file)
            if old is None or old.dnsmasq_servers != new.dnsmasq_servers:
                self._write_servers(new.dnsmasq_servers)
            if self.use_firewall and (old is None or old.ruleset != new.ruleset):
                firewall.apply(new.ruleset, self.nft_binary)
                self.firewall_state = "applied"
        except Exception:
            staged.unlink(missing_ok=True)
            raise
        new.leases.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, self.paths.dnsmasq_conf)
        self.current = new
        self._dirty = True
        ap = new.access_point
        if not new.serving:
            if old is None or old.serving:
                log.info("the access point is disabled ([access_point] enabled = false): no address, "
                         "DHCP or DNS on %s; the firewall stays", ap.interface)
            self.child.stop()
            self.restart_at = None
            return
        if old is None or not old.serving or old.access_point != ap:
            log.info("access point %s on %s, DHCP %s-%s%s", ap.address, ap.interface, ap.dhcp_start,
                     ap.dhcp_end, ", LAN DNS mode" if ap.lan_dns_mode else "")
        if old is None or not old.serving or new.upstreams != old.upstreams:
            log.info("other names go to: %s",
                     ", ".join(map(str, new.upstreams)) or "nobody (answered REFUSED)")
        self._ensure_address(new)
        if old is None or not old.serving or old.dnsmasq_conf != new.dnsmasq_conf:
            self._restart_dnsmasq("configuration changed" if old and old.serving else "starting")
        elif old.dnsmasq_servers != new.dnsmasq_servers and self.child.reread_servers():
            log.info("dnsmasq reads its servers again (SIGHUP): no restart")

    def _write_servers(self, text: str) -> None:
        """The servers file, readable by dnsmasq as ``nobody`` (it names only the LAN's resolvers);
        modes set outright: the unit's umask (0007) would keep ``nobody`` out."""
        self.paths.dns_dir.mkdir(parents=True, exist_ok=True)
        self.paths.dns_dir.chmod(0o755)
        write_atomic(self.paths.dnsmasq_servers, text, durable=False)  # /run: RAM
        self.paths.dnsmasq_servers.chmod(0o644)

    def _apply_firewall(self, ruleset: str) -> None:
        try:
            firewall.apply(ruleset, self.nft_binary)
            self.firewall_state = "applied"
        except firewall.FirewallError as exc:
            self.firewall_state = f"error: {exc}"
            log.error("firewall: %s", exc)

    def _ensure_address(self, plan: NetPlan | None) -> None:
        if plan is None or not plan.serving:
            return
        try:
            for change in ensure_address(plan.access_point.interface, plan.access_point.address):
                log.info("%s", change)
            self.interface_error = ""
        except InterfaceError as exc:
            if str(exc) != self.interface_error:
                log.warning("%s; dnsmasq will serve it once it appears", exc)
            self.interface_error = str(exc)

    # -- the dnsmasq child -----------------------------------------------------------------
    def _restart_dnsmasq(self, reason: str) -> None:
        if self.child.process is not None:
            log.info("restarting dnsmasq: %s", reason)
            self.child.stop()
        self.failures = 0
        self.restart_at = None
        self._start_dnsmasq()

    def _start_dnsmasq(self) -> None:
        self.dnsmasq_error = ""
        self._last_log_line = ""
        self._dirty = True
        try:
            self.child.start()
        except OSError as exc:
            self.dnsmasq_error = f"cannot start {self.dnsmasq_binary}: {exc.strerror}"
            log.error("%s", self.dnsmasq_error)
            self._schedule_restart(time.monotonic(), ran=0.0)

    def _watch_child(self, now: float) -> None:
        if self.child.process is not None:
            status = self.child.exited()
            if status is None:
                return
            ran = now - self.child.started_at
            self._pump_log()
            self.last_exit = status
            if status < 0:
                self.dnsmasq_error = f"dnsmasq was killed by {signal.Signals(-status).name}"
            else:  # dnsmasq's last words say why (a port in use, a missing interface...)
                detail = f": {self._last_log_line}" if self._last_log_line else ""
                self.dnsmasq_error = f"dnsmasq exited with status {status}{detail}"
            log.error("%s", self.dnsmasq_error)
            self._dirty = True
            self.child.stop()
            self._schedule_restart(now, ran)
        elif self.restart_at is not None and now >= self.restart_at and self.current and self.current.serving:
            self.restart_at = None
            self.restarts += 1
            log.info("starting dnsmasq again (restart %d)", self.restarts)
            self._start_dnsmasq()

    def _watch_dns_socket(self, now: float) -> None:
        """Restart a dnsmasq that runs but does not listen on the access point's address."""
        plan = self.current
        if (plan is None or not plan.serving or self.interface_error or not self.child.running()
                or dnsmasq.listening(plan.access_point.ip)):
            self._unbound_since = None
            return
        if self._unbound_since is None:
            self._unbound_since = now
        elif now - self._unbound_since >= BIND_GRACE_SECONDS and now - self.child.started_at >= BIND_GRACE_SECONDS:
            log.warning("dnsmasq has no DNS socket on %s:53 after %.0f s; restarting it",
                        plan.access_point.ip, now - self._unbound_since)
            self._unbound_since = None
            self.restarts += 1
            self._restart_dnsmasq("not listening on the access point's address")

    def _schedule_restart(self, now: float, ran: float) -> None:
        if ran >= STABLE_SECONDS:
            self.failures = 0
        self.failures += 1
        delay = min(BACKOFF_FIRST * 2 ** (self.failures - 1), BACKOFF_MAX)
        self.restart_at = now + delay
        log.info("dnsmasq restarts in %.1f s", delay)

    def _pump_log(self) -> None:
        for line in self.child.read_log():
            self._last_log_line = line
            log.info("dnsmasq: %s", line)

    # -- status and shutdown ---------------------------------------------------------------
    def status(self, state: str | None = None) -> dict[str, Any]:
        plan = self.current
        running = self.child.process is not None and self.child.exited() is None
        if state is None and plan is not None and not plan.serving:
            state = "disabled"
        if state is None:
            state = "running" if running and not self.config_error else (
                "degraded" if running else "error" if self.current else "waiting")
        result: dict[str, Any] = {
            "state": state,
            "dnsmasq": {"running": running, "pid": self.child.pid if running else None,
                        "restarts": self.restarts, "last_exit": self.last_exit,
                        "error": self.dnsmasq_error},
            "config_error": self.config_error,
            "interface_error": self.interface_error,
            "upstream_wifi": self.upstream.status(),
            "firewall": self.firewall_state if self.use_firewall else "disabled",
        }
        if plan is not None and plan.serving:
            ap = plan.access_point
            result.update(
                interface=ap.interface,
                address=str(ap.address),
                dhcp_range=[str(ap.dhcp_start), str(ap.dhcp_end)],
                upstream_dns=[str(s) for s in plan.upstreams],
                lan_dns_mode=ap.lan_dns_mode,
            )
            connected = clients.clients(plan.leases, ap.interface)
            result.update(clients=connected["clients"], stations_note=connected["stations_note"])
        return result

    def _write_status(self, state: str | None = None) -> None:
        now = time.monotonic()
        if state is None and not self._dirty and now < self._status_checked + REFRESH_SECONDS:
            return
        self._dirty, self._status_checked = False, now
        self.reporter.report(self.status(state))

    def _status_store(self) -> Any:
        """The store of the settings in use (opened again when ``[data] dir`` changes)."""
        settings = self.follower.settings
        if self._store is None or self._store_dir != settings.data_dir:
            from appliance.store import Store

            self._store, self._store_dir = Store.from_settings(settings), settings.data_dir
        return self._store

    def _shutdown(self) -> None:
        if self._stop_signal is not None:
            log.info("%s: stopping dnsmasq", signal.Signals(self._stop_signal).name)
        self.child.stop()
        self.upstream.stop()
        self._write_status("stopped")
        signal.set_wakeup_fd(-1)


def serve(settings_path: Path, paths: RuntimePaths, *, interface: str | None = None,
          dnsmasq_binary: str = "dnsmasq", use_firewall: bool = True) -> int:
    """``solargw net run``: load the settings (a broken file: the last good settings, so the access
    point keeps serving what the inverters know), check the plan, then run until SIGTERM/SIGINT."""
    try:
        service = NetService(settings_path, paths, interface=interface, dnsmasq_binary=dnsmasq_binary,
                             use_firewall=use_firewall)
        build(service.settings, paths)
    except (settings_module.SettingsError, NetConfigError) as exc:
        raise ServiceError(str(exc)) from None
    if os.geteuid() != 0:
        raise ServiceError("net run configures interfaces and runs dnsmasq: it needs root")
    return service.run()
