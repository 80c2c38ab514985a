"""The dashboard and the inverter pages: cards, charts, the latest report, rename, model, remove."""
from __future__ import annotations

import time
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from flask import Blueprint, Response, abort, flash, redirect, render_template, request, url_for

from appliance.fields import BY_KEY
from appliance.protocols.nep import MODELS
from appliance.web import auth, charts
from appliance.web.cards import all_cards, inverter_card, totals
from appliance.web.formatting import label_for, timezone, unit_for
from appliance.web.services import services

bp = Blueprint("inverters", __name__)
auth.protect(bp)


@bp.get("/")
def dashboard() -> str:
    svc = services()
    cards = all_cards(svc.store, svc.settings)
    return render_template("dashboard.html", cards=cards, totals=totals(cards))


@bp.get("/ui-api/cards")
def cards_json() -> Response:
    svc = services()
    cards = all_cards(svc.store, svc.settings)
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
    tz = timezone(svc.settings)
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
    fields = sorted((latest.fields if latest else {}).items(), key=lambda kv: (kv[0] not in BY_KEY, kv[0]))
    return render_template(
        "inverter.html", info=info, card=card, latest=latest, fields=fields, unit_for=unit_for, label_for=label_for,
        power_chart=charts.power_over_day(samples, start, end, tz), energy_chart=charts.energy_per_day(energy),
        day=day, today=today, weeks=weeks, frames=svc.store.recent_frames(serial, limit=20),
        models=MODELS if info.family == "nep" else (),
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
    return redirect(url_for("inverters.inverter", serial=serial))


@bp.post("/inverter/<serial>/model")
@auth.login_required
def set_model(serial: str) -> Response:
    info = _inverter_or_404(serial)
    model = request.form.get("model", "")
    if info.family != "nep" or model not in MODELS:
        flash(f"Choose one of: {', '.join(MODELS)}.", "error")
    else:
        services().store.set_model(serial, model)
        flash(f"Model scale set to {model}; it applies from the next report.", "ok")
    return redirect(url_for("inverters.inverter", serial=serial))


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
    return redirect(url_for("inverters.dashboard"))
