"""What the web app's views share: the settings (followed), the store, the MQTT publisher,
the pipeline, the relay, the PVOutput uploader and the Enecsys gateway listener, as one
``Services`` object in ``app.extensions["solargw"]``.

Blueprints reach it through :func:`services`; nothing here imports a blueprint or the
app factory. Network clients (the MQTT publisher, the relay's thread) are made lazily,
once per process, so they appear in gunicorn's worker after the fork, never in the arbiter.
"""
from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any, Iterable

from flask import current_app

from appliance.pipeline import Pipeline
from appliance.runtime import PublisherHolder, SettingsFollower
from appliance.settings import Settings, save_sections

if TYPE_CHECKING:
    from appliance.store import Store
    from appliance.web.sessions import Sessions



def _make_publisher(store: "Store", status_source: Any):
    def make(settings: Settings) -> Any:
        if not settings.mqtt.enabled:
            return None
        from appliance.mqtt import make_publisher

        return make_publisher(settings, service="web", store=store, status_source=status_source)

    return make


class Services:
    """The web process's shared state. ``publisher``: an object with ``publish(recorded)``...
    given by a test (never replaced), else the MQTT publisher made from the settings."""

    def __init__(self, settings: Settings, store: "Store", publisher: Any = None, settings_error: str = "") -> None:
        self.store = store
        self.follower = SettingsFollower(settings.path, self._settings_changed, settings=settings,
                                         error=settings_error)
        if publisher is not None:
            self.mqtt = PublisherHolder(lambda _settings: publisher, settings, follow_settings=False)
        else:
            self.mqtt = PublisherHolder(_make_publisher(store, self.appliance_status), settings)
        self.pipeline = Pipeline(store, self.mqtt, limits=lambda: self.settings.data)
        self._relay: Any = None
        self._relay_pid = 0
        self._sessions: "Sessions | None" = None
        self._uploader: Any = None
        self._uploader_pid = 0
        self._gateway: Any = None
        self._gateway_pid = 0
        self._lock = threading.Lock()

    # -- settings ------------------------------------------------------------------------------
    @property
    def settings(self) -> Settings:
        return self.follower.settings

    def apply_settings(self, new: Settings) -> None:
        """Use ``new`` from now on (without writing it anywhere)."""
        self.follower.adopt(new)

    def follow_settings_file(self) -> None:
        """Another process (the CLI, a text editor) changed the file: use it from this request on."""
        self.follower.check()

    def save_settings(self, new: Settings, sections: Iterable[str]) -> None:
        """Write ``sections`` of ``new`` to the settings file and use what the file then says
        (``SettingsError`` when the result would break a rule; nothing is written then).
        Without a file (an app built in a test), ``new`` is used as is."""
        path = self.settings.path
        self.follower.adopt(new if path is None else save_sections(new, sections, path))

    def _settings_changed(self, old: Settings, new: Settings) -> None:
        """The publisher and the relay are made again when their sections changed."""
        self.mqtt.update(new)  # a new publisher reads the status itself (appliance_status)
        if old.gateway != new.gateway:
            self._stop_gateway()
            self.start_gateway()
        if old.relay != new.relay:
            with self._lock:
                old_relay, self._relay = self._relay, None
            if old_relay is not None:
                old_relay.close()
        if (old.pvoutput, old.system.timezone, old.web.stale_seconds) != (
                new.pvoutput, new.system.timezone, new.web.stale_seconds):
            self._stop_uploader()
            self.start_uploader()

    # -- clients ---------------------------------------------------------------------------------
    @property
    def sessions(self) -> "Sessions":
        """The logged-in sessions (kept in the data directory of the settings in use)."""
        directory = self.settings.data_dir
        with self._lock:
            if self._sessions is None or self._sessions.path.parent != directory:
                from appliance.web.sessions import FILE_NAME, LIFETIME_SECONDS, Sessions

                self._sessions = Sessions(directory / FILE_NAME, LIFETIME_SECONDS)
            return self._sessions

    @property
    def publisher(self) -> Any:
        """The MQTT publisher (None when MQTT is off or could not start)."""
        return self.mqtt.get()

    @property
    def relay(self) -> Any:
        """The relay to the real NEP portal, or None when it is off."""
        settings = self.settings
        if not settings.relay.enabled:
            return None
        with self._lock:
            if self._relay is None or self._relay_pid != os.getpid():
                from appliance.web.relay import Relay

                self._relay, self._relay_pid = Relay(settings.relay, self.store, own_ports=[settings.web.port]), os.getpid()
            return self._relay

    @property
    def uploader(self) -> Any:
        """This process's PVOutput uploader, or None when ``[pvoutput]`` is off."""
        return self._uploader if self._uploader_pid == os.getpid() else None

    def start_uploader(self) -> None:
        """Run the PVOutput uploader on a background thread of this process when ``[pvoutput] enabled``
        (:mod:`appliance.pvoutput` says why it lives in the web service)."""
        with self._lock:
            settings = self.settings
            if self.uploader is not None or not settings.pvoutput.enabled:
                return
            from appliance.pvoutput.uploader import Uploader

            self._uploader, self._uploader_pid = Uploader(settings, self.store), os.getpid()
            self._uploader.start()

    def _stop_uploader(self) -> None:
        with self._lock:
            uploader, self._uploader = self.uploader, None
        if uploader is not None:
            uploader.stop()

    def appliance_status(self) -> dict[str, Any]:
        """What Home Assistant's appliance device shows from this side: every inverter the store
        knows (both services'), the access point, the SD card (``storage``: the store's health state,
        ``storage_queued``: readings waiting in RAM for it), the gateway listener when it is on. The
        MQTT publisher reads it every few seconds on its own thread and publishes it when it changed."""
        net = self.store.status().get("net")
        health = self.store.health()
        status: dict[str, Any] = {
            "inverters": len(self.store.inverters()),
            "wifi": net[1].get("state", "unknown") if net else "not running",
            "storage": health.state,
            "storage_queued": health.queued,
        }
        gateway = self.gateway
        if gateway is not None:
            status["gateway"] = gateway.summary()
        return status

    def report_status(self) -> None:
        """A report was ingested: let the publisher look at the status now, not at its next poll."""
        publisher = self.publisher
        refresh = getattr(publisher, "refresh_status", None)
        if refresh is not None:
            refresh()

    # -- the genuine Enecsys gateway's stream (appliance.gateway) -----------------------------------
    @property
    def gateway(self) -> Any:
        """This process's gateway listener (a ``GatewayThread``), or None when ``[gateway]`` is off."""
        return self._gateway if self._gateway_pid == os.getpid() else None

    def start_gateway(self) -> None:
        """Listen for a genuine Enecsys gateway when ``[gateway] enabled`` (after gunicorn's fork)."""
        settings = self.settings.gateway
        with self._lock:
            if not settings.enabled or self.gateway is not None:
                return
            from appliance.gateway import GatewayThread

            self._gateway = GatewayThread(settings.listen_addr, settings.port, self.pipeline, self.store)
            self._gateway_pid = os.getpid()
        self._gateway.start()
        self.report_status()

    def _stop_gateway(self) -> None:
        with self._lock:
            gateway, self._gateway = self.gateway, None
        if gateway is not None:
            gateway.stop()

    def close(self) -> None:
        self._stop_uploader()
        self._stop_gateway()
        with self._lock:
            relay, self._relay = self._relay, None
        if relay is not None:
            relay.close()
        self.mqtt.close()


def services() -> Services:
    """The running app's services (inside a request or app context)."""
    return current_app.extensions["solargw"]
