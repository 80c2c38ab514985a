"""The settings pages: one form per section, the admin password, export and import of the
settings file, and the history download. Everything here needs the admin session."""
from __future__ import annotations

import dataclasses
import os
import tempfile
import tomllib
from datetime import datetime
from typing import Any, Mapping

import tomli_w
from flask import Blueprint, Response, abort, flash, redirect, render_template, request, send_file, url_for

from appliance.settings import SettingsError, from_dict, validate
from appliance.settings.rules import time_zones
from appliance.web import auth, settings_form
from appliance.web.formatting import timezone
from appliance.web.services import services

bp = Blueprint("settings", __name__)
auth.protect(bp)

SECTION_TITLES = {
    "access_point": "Wi-Fi access point (for the inverters)",
    "upstream_wifi": "Upstream Wi-Fi (home network, for a Pi without Ethernet)",
    "mqtt": "MQTT broker (Home Assistant)",
    "relay": "Relay to the NEP portal",
    "gateway": "Genuine Enecsys gateway",
    "system": "Time zone",
    "pvoutput": "PVOutput upload",
}
IMPORT_LIMIT = 256 * 1024


def _render(errors: Mapping[str, Mapping[str, str]] | None = None, form: Mapping[str, Mapping[str, str]] | None = None,
            status_code: int = 200) -> tuple[str, int]:
    return render_template(
        "settings.html", settings=services().settings, errors=errors or {}, form=form or {}, titles=SECTION_TITLES,
        timezones=sorted(time_zones()), inverters=services().store.inverters(),
    ), status_code


def _save_failed(exc: Exception) -> str:
    if isinstance(exc, OSError):
        return f"cannot write the settings file: {exc.strerror}"
    return f"not saved: {exc}"


@bp.get("/settings")
@auth.login_required
def page() -> Any:
    return _render()


@bp.post("/settings/<section>")
@auth.login_required
def save_section(section: str) -> Any:
    if section == "admin":
        return _change_password()
    if section not in settings_form.SECTION_FIELDS:
        abort(404)
    updated, errors = settings_form.parse_section(section, request.form, services().settings)
    if errors:
        return _render({section: errors}, {section: request.form}, 400)
    try:
        services().save_settings(updated, (section,))
    except (OSError, SettingsError) as exc:
        return _render({section: {"_": _save_failed(exc)}}, {section: request.form}, 500)
    flash(f"{SECTION_TITLES[section]}: saved and applied.", "ok")
    return redirect(url_for("settings.page") + f"#{section}")


def _change_password() -> Any:
    errors: dict[str, str] = {}
    if not auth.check_password(request.form.get("current_password", "")):
        errors["current_password"] = "wrong password"
    password, more = settings_form.parse_password_change(request.form)
    errors.update(more)
    if errors:
        return _render({"admin": errors}, None, 400)
    try:
        auth.save_password(password)
    except (OSError, SettingsError) as exc:
        return _render({"admin": {"_": _save_failed(exc)}}, None, 500)
    auth.log_in(end_others=True)  # the hash changed: this session carries on, every other one is logged out
    flash("Admin password changed; other sessions are logged out.", "ok")
    return redirect(url_for("settings.page") + "#admin")


@bp.get("/settings/export.toml")
@auth.login_required
def export_settings() -> Response:
    data = services().settings.to_dict()
    data["admin"].pop("secret_key", None)  # sessions stay bound to this appliance
    stamp = datetime.now(timezone(services().settings)).strftime("%Y%m%d-%H%M")
    return Response(tomli_w.dumps(data), mimetype="application/toml",
                    headers={"Content-Disposition": f'attachment; filename="solargw-settings-{stamp}.toml"'})


@bp.post("/settings/import")
@auth.login_required
def import_settings() -> Any:
    """A settings file exported from solargw (or written by hand): every section it has, after
    the same checks as the forms; nothing is imported when one value breaks a rule."""
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        return _render({"import": {"file": "choose a .toml file exported from solargw"}}, None, 400)
    raw = upload.read(IMPORT_LIMIT + 1)
    if len(raw) > IMPORT_LIMIT:
        return _render({"import": {"file": "this file is too big to be a settings file"}}, None, 400)
    svc = services()
    current = svc.settings
    try:
        data = tomllib.loads(raw.decode("utf-8"))
        updated = from_dict(data, base=current)
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        return _render({"import": {"file": f"not a valid TOML file: {exc}"}}, None, 400)
    except SettingsError as exc:
        return _render({"import": {"file": str(exc)}}, None, 400)
    if not updated.admin.secret_key:
        updated.admin = dataclasses.replace(updated.admin, secret_key=current.admin.secret_key)
    updated.path = current.path
    problems = validate(updated)
    if problems:
        listed = "; ".join(f"{key}: {message}" for key, message in problems.items())
        return _render({"import": {"file": f"nothing imported: {listed}"}}, None, 400)
    try:
        svc.save_settings(updated, tuple(name for name in data if name != "admin") + ("admin",))
    except (OSError, SettingsError) as exc:
        return _render({"import": {"file": _save_failed(exc)}}, None, 500)
    if updated.admin.password_hash != current.admin.password_hash:
        auth.log_out()
        flash("Settings imported; the admin password came from the file: log in with it.", "ok")
        return redirect(url_for("login.login"))
    flash("Settings imported and applied.", "ok")
    return redirect(url_for("settings.page"))


@bp.get("/settings/history.sqlite")
@auth.login_required
def export_history() -> Response:
    """A consistent copy of the whole database (sqlite's online backup API)."""
    svc = services()
    with tempfile.NamedTemporaryFile(dir=svc.settings.data_dir, prefix=".export-", suffix=".sqlite", delete=False) as tmp:
        path = tmp.name
    try:
        svc.store.backup(path)
        handle = open(path, "rb")
    finally:
        os.unlink(path)  # the open handle keeps the data until the download ends
    stamp = datetime.now(timezone(svc.settings)).strftime("%Y%m%d-%H%M")
    return send_file(handle, mimetype="application/vnd.sqlite3", as_attachment=True,
                     download_name=f"solargw-history-{stamp}.sqlite")
