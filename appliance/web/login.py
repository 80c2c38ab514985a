"""Logging in and out, and the first visit's password set-up."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, flash, redirect, render_template, request, url_for

from appliance.settings import SettingsError
from appliance.web import auth, settings_form
from appliance.web.throttle import LoginThrottle

bp = Blueprint("login", __name__)
auth.protect(bp)

throttle = LoginThrottle(attempts=5, window=300.0)


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    if not auth.password_is_set():
        return redirect(url_for("login.setup", next=request.args.get("next")))
    error = None
    if request.method == "POST":
        address = request.remote_addr or "?"
        if not throttle.attempt(address):
            error = "Too many wrong passwords: wait five minutes."
        elif auth.check_password(request.form.get("password", "")):
            throttle.succeeded(address)
            auth.log_in()
            return redirect(auth.safe_next(request.form.get("next")))
        else:
            error = "Wrong password."
    return render_template("login.html", error=error, next=request.values.get("next", "")), 401 if error else 200


@bp.post("/logout")
def logout() -> Response:
    auth.log_out()
    return redirect(url_for("inverters.dashboard"))


@bp.route("/setup", methods=["GET", "POST"])
def setup() -> Any:
    """First visit: choose the admin password (only while none is set)."""
    if auth.password_is_set():
        return redirect(url_for("login.login"))
    errors: dict[str, str] = {}
    if request.method == "POST":
        password, errors = settings_form.parse_password_change(request.form)
        if not errors:
            try:
                auth.save_password(password)
            except (OSError, SettingsError) as exc:
                errors["new_password"] = f"cannot save it: {getattr(exc, 'strerror', None) or exc}"
            else:
                auth.log_in()
                flash("Admin password set. You are logged in.", "ok")
                return redirect(auth.safe_next(request.form.get("next")))
    return render_template("setup.html", errors=errors, next=request.values.get("next", ""))
