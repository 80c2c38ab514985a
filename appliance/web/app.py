"""The collector's Flask app factory.

``create_app`` puts one :class:`~appliance.web.services.Services` object (settings, store,
MQTT publisher, relay) in ``app.extensions["solargw"]`` and registers every blueprint from
:func:`blueprints`, the one place that lists them. Blueprints import
:mod:`appliance.web.services`, never this module.

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

from typing import TYPE_CHECKING, Any

from flask import Blueprint, Flask

from appliance import __version__
from appliance.settings import Settings, load
from appliance.web import auth, events, ingest, inverters, jsonapi, login, metrics, settings_pages, status, ui
from appliance.web.services import Services

if TYPE_CHECKING:
    from appliance.store import Store


def blueprints() -> list[Blueprint]:
    """Every blueprint of the app, in one list."""
    return [
        metrics.bp,
        jsonapi.bp,
        ui.bp,
        inverters.bp,
        status.bp,
        settings_pages.bp,
        login.bp,
        events.bp,
        ingest.bp,
    ]


def create_app(settings: Settings | None = None, store: "Store | None" = None, publisher: Any = None,
               settings_error: str = "") -> Flask:
    """The collector app. ``settings`` default to :func:`appliance.settings.load`;
    ``store`` to the store in ``settings.data_dir``; ``publisher`` (an object
    with ``publish(recorded)`` ...) to the MQTT publisher when MQTT is enabled,
    made on first use in the serving process. The process's local time becomes
    ``[system] timezone``, and follows the settings file from then on. With ``[pvoutput]
    enabled`` the PVOutput uploader starts on a background thread (gunicorn builds the app
    in its worker, after the fork). ``settings_error``: why ``settings`` are not what the file
    says (a broken file at start: shown on the status page)."""
    settings = settings if settings is not None else load()
    if store is None:
        from appliance.store import Store

        store = Store.from_settings(settings)
    app = Flask(__name__)
    app.config["SOLARGW_VERSION"] = __version__
    app.json.sort_keys = False
    shared = app.extensions["solargw"] = Services(settings, store, publisher, settings_error=settings_error)
    app.before_request(shared.follow_settings_file)
    auth.init_app(app)
    for blueprint in blueprints():
        app.register_blueprint(blueprint)
    shared.start_uploader()
    shared.start_gateway()  # [gateway] enabled: the Enecsys gateway's stream (appliance.gateway)
    return app
