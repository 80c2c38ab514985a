"""What the web app's views share: the settings (followed), the store, the MQTT publisher,
the pipeline, the relay and the PVOutput uploader, as one ``Services`` object in
``app.extensions["solargw"]``.

Blueprints reach it through :func:`services`; nothing here imports a blueprint or the
app factory. Network clients (the MQTT publisher, the relay's thread) are made lazily,
once per process, so they appear in gunicorn's worker after the fork, never in the arbiter.
"""
from __future__ import annotations

import os
import threading
import time
from typing import TYPE_CHECKING, Any, Iterable

from flask import current_app

from appliance.pipeline import Pipeline
from appliance.runtime import PublisherHolder, SettingsFollower, StatusReporter
from appliance.settings import Settings, save_sections

if TYPE_CHECKING:
    from appliance.store import Store

STATUS_CHECK_SECONDS = 10.0
"""How often an ingested report may look at the appliance status (it costs two store reads)."""
STATUS_HEARTBEAT_SECONDS = 60.0


def _make_publisher(store: "Store"):
    def make(settings: Settings) -> Any:
        if not settings.mqtt.enabled:
            return None
        from appliance.mqtt import make_publisher

        return make_publisher(settings, service="web", store=store)

    return make


class Services:
    """The web process's shared state. ``publisher``: an object with ``publish(recorded)``...
    given by a test (never replaced), else the MQTT publisher made from the settings."""

    def __init__(self, settings: Settings, store: "Store", publisher: Any = None) -> None:
        self.store = store
        self.follower = SettingsFollower(settings.path, self._settings_changed, settings=settings)
        if publisher is not None:
            self.mqtt = PublisherHolder(lambda _settings: publisher, settings, follow_settings=False)
        else:
            self.mqtt = PublisherHolder(_make_publisher(store), settings)
        self.pipeline = Pipeline(store, self.mqtt)
        self.status_reporter = StatusReporter("web", publish=self.mqtt.publish_status, heartbeat=STATUS_HEARTBEAT_SECONDS)
        self._status_checked = float("-inf")
        self._relay: Any = None
        self._relay_pid = 0
        self._uploader: Any = None
        self._uploader_pid = 0
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
        if self.mqtt.update(new):
            self.status_reporter.force()  # the new broker hears the status at the next report
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

    def report_status(self, now: float | None = None) -> None:
        """Tell Home Assistant's appliance device what this side knows (all inverters, the access
        point): looked at after an ingested report at most every STATUS_CHECK_SECONDS, published
        when it changed or once a minute."""
        now = time.monotonic() if now is None else now
        if now - self._status_checked < STATUS_CHECK_SECONDS:
            return
        self._status_checked = now
        if self.publisher is None:
            return
        net = self.store.status().get("net")
        self.status_reporter.report({
            "inverters": len(self.store.inverters()),
            "wifi": net[1].get("state", "unknown") if net else "not running",
        })

    def close(self) -> None:
        self._stop_uploader()
        with self._lock:
            relay, self._relay = self._relay, None
        if relay is not None:
            relay.close()
        self.mqtt.close()


def services() -> Services:
    """The running app's services (inside a request or app context)."""
    return current_app.extensions["solargw"]
