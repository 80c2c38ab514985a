"""The web UI's shared part: templates, static files, template helpers and the CSRF refusal page.

The pages themselves are blueprints of their own: :mod:`~appliance.web.inverters`
(dashboard, inverter pages), :mod:`~appliance.web.status` (status, logs),
:mod:`~appliance.web.settings_pages` and :mod:`~appliance.web.login`. Read-only pages are
open to anyone on the LAN; the settings pages and every action need the admin session and
a CSRF token (see :mod:`appliance.web.auth`).
"""
from __future__ import annotations

from typing import Any

from flask import Blueprint, render_template

from appliance.web import auth
from appliance.web.formatting import ago, energy_text, format_value, local_time, power_text, storage_problem, timezone
from appliance.web.services import services

bp = Blueprint("ui", __name__, template_folder="templates", static_folder="static", static_url_path="/static")
auth.protect(bp)


@bp.app_template_filter("localtime")
def _localtime_filter(ts: float | None) -> str:
    return local_time(ts, timezone(services().settings))


@bp.app_template_filter("ago")
def _ago_filter(ts: float | None) -> str:
    return ago(ts)


@bp.app_context_processor
def _template_globals() -> dict[str, Any]:
    svc = services()
    return {
        "csrf_token": auth.csrf_token,
        "logged_in": auth.logged_in(),
        "password_is_set": auth.password_is_set(),
        "settings_problem": svc.follower.error,
        "storage_problem": storage_problem(svc.store.health(), timezone(svc.settings)),
        "format_value": format_value,
        "energy_text": energy_text,
        "power_text": power_text,
    }


@bp.app_errorhandler(auth.CsrfError)
def _csrf_refused(_exc: Exception) -> tuple[str, int]:
    return render_template(
        "message.html", title="Request refused",
        message="This form has expired or was sent from another site (the security token is missing or wrong). "
        "Go back, reload the page and try again.",
    ), 400
