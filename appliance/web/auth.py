"""One admin account, a signed session cookie and CSRF tokens for the web UI.

- The password hash lives in ``settings.admin.password_hash`` (werkzeug's
  scrypt hash). It comes from the first-boot settings, or is set on the first
  visit when empty: there is no shared default password.
- Sessions are Flask's signed cookie, keyed by ``settings.admin.secret_key``
  (generated and saved on first start when empty). A session remembers a
  fingerprint of the hash, so changing the password logs every other session out,
  and a session id that the server-side registry (:mod:`appliance.web.sessions`)
  must still know, so logging out ends it for good (an old copy of the cookie
  no longer works).
- The cookie is ``HttpOnly`` and ``SameSite=Lax``: a browser never sends it with
  another site's form post or script request (the CSRF token is checked as well),
  but does with a plain link to the appliance (Home Assistant's "Visit" link),
  which ``Strict`` would turn into a logged-out first page.
- Every state-changing request to a UI blueprint (any method but GET/HEAD/OPTIONS)
  must carry the session's CSRF token, as the ``csrf_token`` form field or the
  ``X-CSRF-Token`` header. Machine endpoints (inverter ingest, /metrics,
  /data.json) are other blueprints and never see this check.
"""
from __future__ import annotations

import dataclasses
import hmac
import logging
import secrets
from datetime import timedelta
from functools import wraps
from typing import Any, Callable
from urllib.parse import urlsplit

from flask import Blueprint, Flask, abort, g, redirect, request, session, url_for
from werkzeug.security import check_password_hash, generate_password_hash

from appliance.settings import Settings, SettingsError, save_sections
from appliance.web.services import services
from appliance.web.sessions import LIFETIME_SECONDS

log = logging.getLogger(__name__)

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class CsrfError(Exception):
    """A state-changing request without the session's CSRF token."""


def init_app(app: Flask) -> None:
    """Give the app its session key: the stored one, or a new one saved to the settings file."""
    svc = app.extensions["solargw"]
    settings: Settings = svc.settings
    key = settings.admin.secret_key
    if not key:
        key = secrets.token_hex(32)
        with_key = dataclasses.replace(settings, admin=dataclasses.replace(settings.admin, secret_key=key))
        if settings.path is not None and not svc.follower.error:  # a broken file is not written here
            try:  # edit the file as it is (never write environment overrides into it)
                save_sections(with_key, ("admin",), settings.path)
            except (OSError, SettingsError) as exc:  # sessions then last until the process restarts
                log.warning("cannot save the new session key to %s: %s", settings.path, exc)
        svc.apply_settings(with_key)
    app.secret_key = key
    app.config["SESSION_COOKIE_HTTPONLY"] = True
    app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    app.config["PERMANENT_SESSION_LIFETIME"] = timedelta(seconds=LIFETIME_SECONDS)


def _fingerprint(password_hash: str) -> str:
    return password_hash[-16:]


def password_is_set() -> bool:
    return bool(services().settings.admin.password_hash)


def logged_in() -> bool:
    svc = services()
    stored = svc.settings.admin.password_hash
    return (bool(stored) and hmac.compare_digest(str(session.get("admin", "")), _fingerprint(stored))
            and svc.sessions.valid(session.get("sid")))


def check_password(password: str) -> bool:
    stored = services().settings.admin.password_hash
    return bool(stored) and check_password_hash(stored, password)


def log_in(*, end_others: bool = False) -> None:
    """A fresh session (and CSRF token, no fixation); ``end_others``: every other one ends."""
    svc = services()
    svc.sessions.end(session.get("sid"))
    session.clear()
    session["sid"] = svc.sessions.start()
    session["admin"] = _fingerprint(svc.settings.admin.password_hash)
    session.permanent = True
    if end_others:
        svc.sessions.end_all_but(session["sid"])


def log_out() -> None:
    services().sessions.end(session.get("sid"))
    session.clear()


def hash_password(password: str) -> str:
    return generate_password_hash(password)


def save_password(password: str) -> None:
    """Make ``password`` the admin password (its hash goes to the settings file's ``[admin]``)."""
    svc = services()
    current = svc.settings
    svc.save_settings(dataclasses.replace(current, admin=dataclasses.replace(
        current.admin, password_hash=hash_password(password))), ("admin",))


def csrf_token() -> str:
    token = session.get("csrf")
    if not token:
        token = session["csrf"] = secrets.token_urlsafe(32)
    return token


def check_csrf() -> None:
    if request.method in SAFE_METHODS:
        return
    sent = request.headers.get("X-CSRF-Token") or request.form.get("csrf_token", "")
    expected = session.get("csrf", "")
    if not expected or not sent or not hmac.compare_digest(sent, expected):
        raise CsrfError()


def safe_next(target: str | None) -> str:
    """A local path to go back to after login, never another site."""
    if not target:
        return url_for("inverters.dashboard")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return url_for("inverters.dashboard")
    return target


def login_required(view: Callable[..., Any]) -> Callable[..., Any]:
    """Pages and actions for the admin only; first visit goes to the password set-up."""

    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if not password_is_set():
            return redirect(url_for("login.setup", next=request.full_path.rstrip("?")))
        if not logged_in():
            if request.method not in SAFE_METHODS or request.accept_mimetypes.best == "application/json":
                abort(401)
            return redirect(url_for("login.login", next=request.full_path.rstrip("?")))
        return view(*args, **kwargs)

    return wrapped


def protect(bp: Blueprint) -> None:
    """Install the CSRF check on every request a UI blueprint handles."""

    @bp.before_request
    def _csrf() -> None:
        check_csrf()
        g.csrf_checked = True
