"""The collector's Flask app factory.

``create_app`` wires one ``Services`` object (settings, store, the MQTT
publisher, the relay) into ``app.extensions["solargw"]`` and registers every
blueprint from :func:`blueprints`, the one place that lists them.

Machine endpoints (inverters and scrapers cannot log in): the ``ingest``,
``metrics`` and ``jsonapi`` blueprints. The UI's login and CSRF checks are
hooks on the UI's own blueprints, so these never see them.

Routing rule for POSTs: werkzeug always prefers a specific rule
(``/settings``, ``/api/...``) over the ingest catch-all ``/<path:path>``, so a
UI form post never reaches ingest. A POST to an unknown path under a UI prefix
(``UI_PREFIXES`` in :mod:`appliance.web.ingest`) gets a plain 404 instead of
being taken for an inverter report; every other POST is an inverter report.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from flask import Blueprint, Flask, current_app

from appliance import __version__
from appliance.settings import Settings, apply_timezone, load

if TYPE_CHECKING:
    from appliance.store import Store

log = logging.getLogger(__name__)

STATUS_INTERVAL_SECONDS = 60


@dataclass
class Services:
    """What the views share. The publisher and relay are made lazily, once per process.

    Lazy creation keeps network clients (MQTT, the relay thread) out of the
    gunicorn arbiter: they appear in the worker, after fork, on first use.
    """

    settings: Settings
    store: "Store"
    publisher_factory: Callable[[], Any] | None = None
    _publisher: Any = None
    _publisher_made: bool = False
    _pipeline: Any = None
    _relay: Any = None
    _pid: int = 0
    _injected_publisher: Any = None
    _status_reported: float = 0.0
    _uploader: Any = None
    _uploader_pid: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _fresh(self) -> None:
        # A forked child must not reuse its parent's sockets or threads.
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._pipeline = self._relay = None
            self._publisher, self._publisher_made = None, False

    @property
    def publisher(self) -> Any:
        """The MQTT publisher (None when MQTT is off or could not start), made once per process."""
        with self._lock:
            self._fresh()
            if not self._publisher_made:
                self._publisher_made = True
                if self.publisher_factory is not None:
                    try:
                        self._publisher = self.publisher_factory()
                    except Exception:  # a broken MQTT setup must not stop ingest
                        log.exception("cannot start the MQTT publisher; readings are stored only")
            return self._publisher

    @property
    def pipeline(self) -> Any:
        publisher = self.publisher
        with self._lock:
            if self._pipeline is None:
                from appliance.pipeline import Pipeline

                self._pipeline = Pipeline(self.store, publisher)
            return self._pipeline

    @property
    def relay(self) -> Any:
        """The relay to the real NEP portal, or None when it is off."""
        if not self.settings.relay.enabled:
            return None
        with self._lock:
            self._fresh()
            if self._relay is None:
                from appliance.web.relay import Relay

                self._relay = Relay(self.settings.relay, self.store, own_ports=[self.settings.web.port])
            return self._relay

    @property
    def uploader(self) -> Any:
        """This process's PVOutput uploader, or None when ``[pvoutput]`` is off."""
        return self._uploader if self._uploader_pid == os.getpid() else None

    def start_uploader(self) -> None:
        """Run the PVOutput uploader on a background thread of this process when ``[pvoutput] enabled``
        (see :mod:`appliance.pvoutput` for why it lives in the web service)."""
        with self._lock:
            if self.uploader is not None or not self.settings.pvoutput.enabled:
                return
            from appliance.pvoutput.uploader import Uploader

            self._uploader, self._uploader_pid = Uploader(self.settings, self.store), os.getpid()
            self._uploader.start()

    def _stop_uploader(self) -> None:
        with self._lock:
            uploader, self._uploader = self.uploader, None
        if uploader is not None:
            uploader.stop()

    def report_status(self, now: float | None = None) -> None:
        """Tell Home Assistant's appliance device what this side knows (all inverters, the
        access point), at most once a minute: called after each ingested report."""
        now = time.time() if now is None else now
        if now - self._status_reported < STATUS_INTERVAL_SECONDS:
            return
        self._status_reported = now
        publisher = self.publisher
        if publisher is None:
            return
        net = self.store.status().get("net")
        publisher.publish_status({
            "inverters": len(self.store.inverters()),
            "wifi": net[1].get("state", "unknown") if net else "not running",
        })

    def apply_settings(self, new: Settings) -> None:
        """Use ``new`` from now on: the publisher and relay are made again if their sections changed,
        and the process's local time follows ``[system] timezone``."""
        old_publisher = old_relay = None
        apply_timezone(new)
        with self._lock:
            old, self.settings = self.settings, new
            if old.mqtt != new.mqtt and self._injected_publisher is None:
                old_publisher, self._publisher, self._publisher_made = self._publisher, None, False
                self._pipeline = None
                self.publisher_factory = _default_publisher_factory(new, self.store)
            if old.relay != new.relay:
                old_relay, self._relay = self._relay, None
        if (old.pvoutput, old.system.timezone, old.web.stale_seconds) != (
                new.pvoutput, new.system.timezone, new.web.stale_seconds):
            self._stop_uploader()
            self.start_uploader()
        if old_relay is not None:
            old_relay.close()
        if old_publisher is not None:
            try:
                old_publisher.close()
            except Exception:  # a broken old client must not block the new one
                log.exception("closing the old MQTT publisher")

    def close(self) -> None:
        self._stop_uploader()
        with self._lock:
            if self._relay is not None:
                self._relay.close()
            if self._publisher is not None:
                try:
                    self._publisher.close()
                except Exception:
                    log.exception("closing the MQTT publisher")
            self._relay = self._publisher = self._pipeline = None


def services() -> Services:
    """The running app's services (inside a request or app context)."""
    return current_app.extensions["solargw"]


def _default_publisher_factory(settings: Settings, store: "Store") -> Callable[[], Any] | None:
    if not settings.mqtt.enabled:
        return None

    def make() -> Any:
        from appliance.mqtt import make_publisher

        return make_publisher(settings, service="web", store=store)

    return make


def blueprints() -> list[Blueprint]:
    """Every blueprint of the app, in one list (the UI adds its own line here)."""
    from appliance.web import ingest, jsonapi, metrics, ui

    return [
        metrics.bp,
        jsonapi.bp,
        *ui.blueprints(),
        ingest.bp,
    ]


def create_app(settings: Settings | None = None, store: "Store | None" = None, publisher: Any = None) -> Flask:
    """The collector app. ``settings`` default to :func:`appliance.settings.load`;
    ``store`` to the store in ``settings.data_dir``; ``publisher`` (an object
    with ``publish(recorded)`` ...) to the MQTT publisher when MQTT is enabled,
    made on first use in the serving process. The process's local time becomes
    ``[system] timezone`` (:func:`appliance.settings.apply_timezone`). With ``[pvoutput] enabled``
    the PVOutput uploader starts on a background thread (gunicorn builds the app in its worker)."""
    settings = settings if settings is not None else load()
    apply_timezone(settings)
    if store is None:
        from appliance.store import Store

        store = Store.from_settings(settings)
    factory = (lambda: publisher) if publisher is not None else _default_publisher_factory(settings, store)
    app = Flask(__name__)
    app.config["SOLARGW_VERSION"] = __version__
    app.json.sort_keys = False
    app.extensions["solargw"] = Services(settings=settings, store=store, publisher_factory=factory,
                                         _injected_publisher=publisher)
    for blueprint in blueprints():
        app.register_blueprint(blueprint)
    app.extensions["solargw"].start_uploader()
    return app
