"""The web UI's pages: dashboard, inverter, status, settings, logs, login.

Read-only pages are open to anyone on the LAN; the settings pages and every
action need the admin session and a CSRF token (see :mod:`appliance.web.auth`).
The numbers a page shows and the ones the live events push are made by the
same functions (:func:`inverter_card`, :func:`totals`), so a value never looks
different after an update.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import tempfile
import time
import tomllib
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Mapping
from zoneinfo import ZoneInfo

import tomli_w
from flask import Blueprint, Response, abort, flash, redirect, render_template, request, send_file, url_for

from appliance.reading import COMMON_FIELDS, unit_for
from appliance.settings import Settings, SettingsError, from_dict, load, save
from appliance.web import auth, charts, pvoutput_status, settings_form
from appliance.web.app import services

bp = Blueprint("ui", __name__, template_folder="templates", static_folder="static", static_url_path="/static")
auth.protect(bp)

FAILED_LOGINS: dict[str, list[float]] = {}
LOGIN_WINDOW, LOGIN_ATTEMPTS = 300, 5

# --- formatting -----------------------------------------------------------------------------

LABELS = {
    "ac_power_w": "AC power", "ac_voltage_v": "AC voltage", "ac_frequency_hz": "AC frequency",
    "dc_current_a": "DC current", "dc_current_1_a": "DC current, input 1", "dc_current_2_a": "DC current, input 2",
    "dc_voltage_v": "DC voltage", "dc_power_w": "DC power", "temperature_c": "Temperature",
    "efficiency_ratio": "Efficiency", "energy_today_wh": "Energy today (inverter's counter)",
    "lifetime_wh": "Lifetime energy (inverter's counter)", "state": "State", "alarms": "Alarms",
}


def label_for(name: str) -> str:
    return LABELS.get(name) or name.replace("_", " ").capitalize()


def format_value(name: str, value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value) if value else "none"
    if name == "efficiency_ratio" and isinstance(value, (int, float)):
        return f"{value * 100:.1f} %"
    if name == "state" and isinstance(value, str):
        return value.replace("_", " ")
    unit = unit_for(name)
    if isinstance(value, float):
        text = f"{value:.2f}".rstrip("0").rstrip(".") if abs(value) < 1000 else f"{value:.0f}"
    else:
        text = str(value)
    return f"{text} {unit}".strip()


def energy_text(wh: float) -> str:
    return f"{wh / 1000:.2f} kWh" if wh >= 1000 else f"{wh:.0f} Wh"


def power_text(watts: float | None) -> str:
    return "–" if watts is None else f"{watts:.0f} W" if watts >= 10 else f"{watts:.1f} W"


def timezone(settings: Settings | None = None) -> ZoneInfo:
    try:
        return ZoneInfo((settings or services().settings).system.timezone)
    except Exception:  # noqa: BLE001 - a bad zone in the file must not take the pages down
        return ZoneInfo("UTC")


def local_time(ts: float | None, tz: ZoneInfo | None = None) -> str:
    if not ts:
        return "never"
    return datetime.fromtimestamp(ts, tz or timezone()).strftime("%Y-%m-%d %H:%M:%S")


def ago(ts: float | None, now: float | None = None) -> str:
    if not ts:
        return "never"
    seconds = max(0, int((now or time.time()) - ts))
    if seconds < 90:
        return f"{seconds} s ago"
    if seconds < 5400:
        return f"{seconds // 60} min ago"
    if seconds < 172800:
        return f"{seconds // 3600} h ago"
    return f"{seconds // 86400} days ago"


@bp.app_template_filter("localtime")
def _localtime_filter(ts: float | None) -> str:
    return local_time(ts)


@bp.app_template_filter("ago")
def _ago_filter(ts: float | None) -> str:
    return ago(ts)


@bp.app_context_processor
def _template_globals() -> dict[str, Any]:
    return {
        "csrf_token": auth.csrf_token,
        "logged_in": auth.logged_in(),
        "password_is_set": auth.password_is_set(),
        "format_value": format_value,
        "energy_text": energy_text,
        "power_text": power_text,
    }


# --- data shared by pages and live events ------------------------------------------------------

def inverter_card(info: Any, latest: Any, now: float, settings: Settings) -> dict[str, Any]:
    """What the dashboard shows for one inverter, as JSON-ready values and display text."""
    fields = dict(latest.fields) if latest is not None else {}
    online = bool(latest) and now - info.last_seen < settings.web.stale_seconds
    power = fields.get("ac_power_w") if online else None
    state = fields.get("state") if online else "offline"
    alarms = fields.get("alarms") or ()
    return {
        "serial": info.serial,
        "name": info.display_name,
        "family": info.family,
        "family_text": "NEP (Wi-Fi)" if info.family == "nep" else "Enecsys (Zigbee)",
        "model": (latest.model if latest is not None and latest.model else info.model) or "unknown model",
        "power_w": power,
        "power_text": power_text(power if isinstance(power, (int, float)) else None),
        "state": state or "unknown",
        "state_text": format_value("state", state or "unknown"),
        "online": online,
        "last_seen": info.last_seen,
        "last_seen_text": local_time(info.last_seen, timezone(settings)),
        "alarms": list(alarms) if isinstance(alarms, (list, tuple)) else [str(alarms)],
        "energy_today_wh": info.energy_today_wh,
        "energy_today_text": energy_text(info.energy_today_wh),
        "lifetime_wh": info.lifetime_wh,
        "lifetime_text": energy_text(info.lifetime_wh),
        "fields": {name: format_value(name, value) for name, value in fields.items()},
    }


def all_cards(svc: Any = None) -> list[dict[str, Any]]:
    """Every inverter's card; ``svc`` (the app's Services) lets a stream call this outside a request."""
    svc = svc or services()
    latest = svc.store.latest()
    now = time.time()
    return [inverter_card(info, latest.get(info.serial), now, svc.settings) for info in svc.store.inverters()]


def totals(cards: list[dict[str, Any]]) -> dict[str, Any]:
    power = sum(c["power_w"] for c in cards if isinstance(c["power_w"], (int, float)))
    today = sum(c["energy_today_wh"] for c in cards)
    lifetime = sum(c["lifetime_wh"] for c in cards)
    return {
        "power_w": power, "power_text": power_text(power),
        "energy_today_wh": today, "energy_today_text": energy_text(today),
        "lifetime_wh": lifetime, "lifetime_text": energy_text(lifetime),
        "online": sum(1 for c in cards if c["online"]), "count": len(cards),
    }


# --- settings: apply without a reboot ----------------------------------------------------------

def save_sections(new: Settings, sections: tuple[str, ...]) -> None:
    """Write ``sections`` of ``new`` to the settings file, then use what the file now says.

    The other sections are taken from the file as it is, not from memory, so values
    that came from environment overrides (``NEP_LISTEN_PORT``...) are never written.
    Without a file (an app built in a test), ``new`` is used as is.
    """
    path = services().settings.path
    if path is None:
        use_settings(new)
        return
    on_disk = load(path, env={})
    for name in sections:
        setattr(on_disk, name, getattr(new, name))
    save(on_disk, path)
    _remember_mtime(path)
    use_settings(load(path))


def use_settings(new: Settings) -> None:
    """Make this process use ``new`` now, without a restart (the MQTT publisher and the
    relay are made again when their sections changed, the time zone is set). The net
    service watches the file itself; the Zigbee service reads it only when it starts."""
    services().apply_settings(new)


_SEEN_MTIME: dict[str, float] = {}


def _remember_mtime(path: Path) -> None:
    try:
        _SEEN_MTIME[str(path)] = os.stat(path).st_mtime
    except OSError:
        pass


@bp.before_app_request
def _reread_settings_file() -> None:
    """Another process (the CLI, a text editor) changed the file: use it from this request on."""
    settings = services().settings
    if settings.path is None:
        return
    key = str(settings.path)
    try:
        mtime = os.stat(settings.path).st_mtime
    except OSError:
        return
    if key not in _SEEN_MTIME:
        _SEEN_MTIME[key] = mtime
    elif mtime != _SEEN_MTIME[key]:
        _SEEN_MTIME[key] = mtime
        try:
            use_settings(load(settings.path))
        except SettingsError:
            pass  # keep the settings in use; the status page of the service that owns it says why


# --- pages --------------------------------------------------------------------------------------

@bp.errorhandler(auth.CsrfError)
def _csrf_refused(_exc: Exception) -> tuple[str, int]:
    return render_template(
        "message.html", title="Request refused",
        message="This form has expired or was sent from another site (the security token is missing or wrong). "
        "Go back, reload the page and try again.",
    ), 400


@bp.get("/")
def dashboard() -> str:
    cards = all_cards()
    return render_template("dashboard.html", cards=cards, totals=totals(cards))


@bp.get("/ui-api/cards")
def cards_json() -> Response:
    cards = all_cards()
    return {"totals": totals(cards), "inverters": cards}


def _inverter_or_404(serial: str) -> Any:
    info = services().store.inverter(serial)
    if info is None:
        abort(404)
    return info


def _day_bounds(day: date, tz: ZoneInfo) -> tuple[float, float]:
    start = datetime.combine(day, datetime.min.time(), tz)
    return start.timestamp(), (start + timedelta(days=1)).timestamp()


def _filled_days(rows: list[tuple[str, float]], days: int, today: date) -> list[tuple[str, float]]:
    values = dict(rows)
    first = today - timedelta(days=days - 1)
    return [((first + timedelta(days=i)).isoformat(), values.get((first + timedelta(days=i)).isoformat(), 0.0))
            for i in range(days)]


@bp.get("/inverter/<serial>")
def inverter(serial: str) -> str:
    svc = services()
    info = _inverter_or_404(serial)
    tz = timezone()
    today = datetime.now(tz).date()
    try:
        day = date.fromisoformat(request.args.get("day", "")) if request.args.get("day") else today
    except ValueError:
        day = today
    try:
        weeks = min(52, max(1, int(request.args.get("weeks", "4"))))
    except ValueError:
        weeks = 4
    start, end = _day_bounds(day, tz)
    samples = [(ts, float(f["ac_power_w"])) for ts, f in svc.store.history(serial, start, end)
               if isinstance(f.get("ac_power_w"), (int, float))]
    energy = _filled_days(svc.store.energy_per_day(serial, days=weeks * 7), weeks * 7, today)
    latest = svc.store.latest(include_removed=True).get(serial)
    card = inverter_card(info, latest, time.time(), svc.settings)
    fields = sorted((latest.fields if latest else {}).items(), key=lambda kv: (kv[0] not in COMMON_FIELDS, kv[0]))
    models: tuple[str, ...] = ()
    if info.family == "nep":
        from appliance.protocols.nep import MODELS

        models = MODELS
    return render_template(
        "inverter.html", info=info, card=card, latest=latest, fields=fields, unit_for=unit_for, label_for=label_for,
        power_chart=charts.power_over_day(samples, start, end, tz), energy_chart=charts.energy_per_day(energy),
        day=day, today=today, weeks=weeks, frames=svc.store.recent_frames(serial, limit=20), models=models,
        prev_day=(day - timedelta(days=1)).isoformat(), next_day=(day + timedelta(days=1)).isoformat(),
    )


@bp.post("/inverter/<serial>/rename")
@auth.login_required
def rename(serial: str) -> Response:
    _inverter_or_404(serial)
    name = request.form.get("name", "").strip()
    if len(name) > 64:
        flash("A name can have at most 64 characters.", "error")
    else:
        services().store.rename(serial, name)
        flash("Renamed." if name else "Name cleared.", "ok")
    return redirect(url_for("ui.inverter", serial=serial))


@bp.post("/inverter/<serial>/model")
@auth.login_required
def set_model(serial: str) -> Response:
    info = _inverter_or_404(serial)
    from appliance.protocols.nep import MODELS

    model = request.form.get("model", "")
    if info.family != "nep" or model not in MODELS:
        flash(f"Choose one of: {', '.join(MODELS)}.", "error")
    else:
        services().store.set_model(serial, model)
        flash(f"Model scale set to {model}; it applies from the next report.", "ok")
    return redirect(url_for("ui.inverter", serial=serial))


@bp.post("/inverter/<serial>/remove")
@auth.login_required
def remove(serial: str) -> Response:
    info = _inverter_or_404(serial)
    svc = services()
    svc.store.remove(serial)
    publisher = svc.publisher
    if publisher is not None:
        try:
            publisher.remove(serial)
        except Exception:  # noqa: BLE001 - broker down: the inverter is removed here all the same
            flash("Removed here, but the MQTT broker could not be told; Home Assistant keeps the old device.", "error")
    flash(f"{info.display_name} removed. It comes back if it reports again.", "ok")
    return redirect(url_for("ui.dashboard"))


# --- status ---------------------------------------------------------------------------------------

def memory() -> dict[str, int]:
    values: dict[str, int] = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("MemTotal", "MemAvailable"):
                values[key] = int(rest.split()[0]) * 1024
    except OSError:
        pass
    return values


def time_sync() -> str:
    if shutil.which("timedatectl"):
        try:
            out = subprocess.run(["timedatectl", "show", "-p", "NTPSynchronized", "--value"],
                                 capture_output=True, text=True, timeout=3)
            if out.returncode == 0 and out.stdout.strip() in ("yes", "no"):
                return "synchronised" if out.stdout.strip() == "yes" else "not synchronised yet"
        except (OSError, subprocess.TimeoutExpired):
            pass
    if Path("/run/systemd/timesync/synchronized").exists():
        return "synchronised"
    return "unknown (no systemd-timesyncd here)"


def mqtt_state() -> str:
    svc = services()
    if not svc.settings.mqtt.enabled:
        return "off"
    publisher = svc.publisher
    if publisher is None:
        return "not running (see the logs)"
    connected = getattr(getattr(publisher, "connection", publisher), "connected", None)
    if callable(connected):
        connected = connected()
    target = f"{svc.settings.mqtt.host}:{svc.settings.mqtt.port}"
    if connected is None:
        return f"publishing to {target}"
    return f"connected to {target}" if connected else f"not connected to {target} (retrying)"


@bp.get("/status")
def status() -> str:
    svc = services()
    components = sorted(svc.store.status().items())
    disk = shutil.disk_usage(svc.settings.data_dir) if svc.settings.data_dir.exists() else None
    counters = sorted(svc.store.counters().items())
    return render_template(
        "status.html", components=components, disk=disk, memory=memory(), time_sync=time_sync(),
        mqtt=mqtt_state(), rejected=svc.store.rejected(limit=50), counters=counters, now=time.time(),
        inverters=svc.store.inverters(),
        pvoutput=pvoutput_status.view(svc.settings, svc.uploader, svc.store, time.time()),
    )


# --- logs ---------------------------------------------------------------------------------------------

def recent_logs(lines: int = 200) -> tuple[str, str]:
    """(where the lines come from, the text): the journal when it has our units, else the log file."""
    if shutil.which("journalctl"):
        try:
            out = subprocess.run(["journalctl", "-u", "solargw-*", "-n", str(lines), "--no-pager", "-o", "short-iso"],
                                 capture_output=True, text=True, timeout=10)
            text = out.stdout.strip()
            if out.returncode == 0 and text and not text.startswith("-- No entries --") and "No journal files" not in text:
                return "journalctl -u solargw-* (systemd journal)", text
        except (OSError, subprocess.TimeoutExpired):
            pass
    log_file = os.environ.get("SOLARGW_LOG_FILE") or str(services().settings.data_dir / "solargw.log")
    try:
        with open(log_file, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 256 * 1024))
            text = handle.read().decode("utf-8", "replace")
        return f"the log file {log_file} (no systemd journal here)", "\n".join(text.splitlines()[-lines:])
    except OSError:
        return "nowhere: no systemd journal and no log file " + log_file, ""


@bp.get("/logs")
def logs() -> str:
    source, text = recent_logs()
    return render_template("logs.html", source=source, text=text)


# --- login -----------------------------------------------------------------------------------------

def _too_many_failures(address: str) -> bool:
    now = time.time()
    recent = [t for t in FAILED_LOGINS.get(address, []) if now - t < LOGIN_WINDOW]
    FAILED_LOGINS[address] = recent
    return len(recent) >= LOGIN_ATTEMPTS


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    if not auth.password_is_set():
        return redirect(url_for("ui.setup", next=request.args.get("next")))
    error = None
    if request.method == "POST":
        address = request.remote_addr or "?"
        if _too_many_failures(address):
            error = "Too many wrong passwords: wait five minutes."
        elif auth.check_password(request.form.get("password", "")):
            FAILED_LOGINS.pop(address, None)
            auth.log_in()
            return redirect(auth.safe_next(request.form.get("next")))
        else:
            FAILED_LOGINS.setdefault(address, []).append(time.time())
            error = "Wrong password."
    return render_template("login.html", error=error, next=request.values.get("next", "")), 401 if error else 200


@bp.post("/logout")
def logout() -> Response:
    auth.log_out()
    return redirect(url_for("ui.dashboard"))


@bp.route("/setup", methods=["GET", "POST"])
def setup() -> Any:
    """First visit: choose the admin password (only while none is set)."""
    if auth.password_is_set():
        return redirect(url_for("ui.login"))
    errors: dict[str, str] = {}
    if request.method == "POST":
        password, errors = settings_form.parse_password_change(request.form)
        if not errors:
            _save_password(password)
            auth.log_in()
            flash("Admin password set. You are logged in.", "ok")
            return redirect(auth.safe_next(request.form.get("next")))
    return render_template("setup.html", errors=errors, next=request.values.get("next", ""))


def _save_password(password: str) -> None:
    current = services().settings
    updated = dataclasses.replace(current, admin=dataclasses.replace(current.admin, password_hash=auth.hash_password(password)))
    updated.path = current.path
    save_sections(updated, ("admin",))


# --- settings ---------------------------------------------------------------------------------------

SECTION_TITLES = {
    "access_point": "Wi-Fi access point (for the inverters)",
    "upstream_wifi": "Upstream Wi-Fi (home network, for a Pi without Ethernet)",
    "mqtt": "MQTT broker (Home Assistant)",
    "relay": "Relay to the NEP portal",
    "system": "Time zone",
    "pvoutput": "PVOutput upload",
}


def _render_settings(errors: Mapping[str, Mapping[str, str]] | None = None, form: Mapping[str, Mapping[str, str]] | None = None,
                     status_code: int = 200) -> tuple[str, int]:
    settings = services().settings
    return render_template(
        "settings.html", settings=settings, errors=errors or {}, form=form or {}, titles=SECTION_TITLES,
        timezones=sorted(settings_form.zoneinfo.available_timezones()), inverters=services().store.inverters(),
    ), status_code


@bp.get("/settings")
@auth.login_required
def settings_page() -> Any:
    return _render_settings()


@bp.post("/settings/<section>")
@auth.login_required
def save_section(section: str) -> Any:
    if section == "admin":
        return _change_password()
    if section not in settings_form.SECTION_FIELDS:
        abort(404)
    updated, errors = settings_form.parse_section(section, request.form, services().settings)
    if errors:
        return _render_settings({section: errors}, {section: request.form}, 400)
    try:
        save_sections(updated, (section,))
    except OSError as exc:
        return _render_settings({section: {"_": f"cannot write the settings file: {exc.strerror}"}}, {section: request.form}, 500)
    flash(f"{SECTION_TITLES[section]}: saved and applied.", "ok")
    return redirect(url_for("ui.settings_page") + f"#{section}")


def _change_password() -> Any:
    errors: dict[str, str] = {}
    if not auth.check_password(request.form.get("current_password", "")):
        errors["current_password"] = "wrong password"
    password, more = settings_form.parse_password_change(request.form)
    errors.update(more)
    if errors:
        return _render_settings({"admin": errors}, None, 400)
    _save_password(password)
    auth.log_in()  # the hash changed: this session carries on, every other one is logged out
    flash("Admin password changed; other sessions are logged out.", "ok")
    return redirect(url_for("ui.settings_page") + "#admin")


@bp.get("/settings/export.toml")
@auth.login_required
def export_settings() -> Response:
    data = services().settings.to_dict()
    data["admin"].pop("secret_key", None)  # sessions stay bound to this appliance
    stamp = datetime.now(timezone()).strftime("%Y%m%d-%H%M")
    return Response(tomli_w.dumps(data), mimetype="application/toml",
                    headers={"Content-Disposition": f'attachment; filename="solargw-settings-{stamp}.toml"'})


@bp.post("/settings/import")
@auth.login_required
def import_settings() -> Any:
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        return _render_settings({"import": {"file": "choose a .toml file exported from solargw"}}, None, 400)
    raw = upload.read(256 * 1024 + 1)
    if len(raw) > 256 * 1024:
        return _render_settings({"import": {"file": "this file is too big to be a settings file"}}, None, 400)
    current = services().settings
    try:
        data = tomllib.loads(raw.decode("utf-8"))
        updated = from_dict(data, base=current)
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        return _render_settings({"import": {"file": f"not a valid TOML file: {exc}"}}, None, 400)
    except SettingsError as exc:
        return _render_settings({"import": {"file": str(exc)}}, None, 400)
    if not updated.admin.secret_key:
        updated.admin = dataclasses.replace(updated.admin, secret_key=current.admin.secret_key)
    updated.path = current.path
    errors = settings_form.check(updated)
    if errors:
        listed = "; ".join(f"{key}: {message}" for key, message in errors.items())
        return _render_settings({"import": {"file": f"nothing imported: {listed}"}}, None, 400)
    save_sections(updated, tuple(name for name in data if name != "admin") + ("admin",))
    if updated.admin.password_hash != current.admin.password_hash:
        auth.log_out()
        flash("Settings imported; the admin password came from the file: log in with it.", "ok")
        return redirect(url_for("ui.login"))
    flash("Settings imported and applied.", "ok")
    return redirect(url_for("ui.settings_page"))


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
    stamp = datetime.now(timezone()).strftime("%Y%m%d-%H%M")
    return send_file(handle, mimetype="application/vnd.sqlite3", as_attachment=True,
                     download_name=f"solargw-history-{stamp}.sqlite")


def blueprints() -> list[Blueprint]:
    """The UI's blueprints, for :func:`appliance.web.app.blueprints`."""
    from appliance.web import events

    return [bp, events.bp]


@bp.record_once
def _init(state: Any) -> None:
    auth.init_app(state.app)
