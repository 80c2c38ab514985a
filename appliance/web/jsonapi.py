"""JSON: ``GET /data.json`` (the seed server's shape, extended) and ``/api/...`` for the UI.

``/data.json`` is keyed by serial. Every entry keeps the seed's keys, so
scripts written for it keep working:

- ``timestamp``: local time of the last report, ISO 8601 with offset
  (``timestamp_unix`` beside it is the same instant as a number);
- ``datapoint``: ``{"serial_number": ..., "watt": ...}``;
- ``payload``: the last frame in hex.

Beside them: ``family``, ``model``, ``name``, ``lifetime_wh``,
``energy_today_wh`` (the ledger's), ``fields`` (every decoded field) and, for
Enecsys inverters, the seed PoC's telemetry.json names at the top level
(:data:`ENECSYS_POC_FIELDS`).
"""
from __future__ import annotations

import math
import time
from datetime import datetime
from typing import Any, Callable

from flask import Blueprint, Response, abort, jsonify, request

from appliance.web.services import services

bp = Blueprint("jsonapi", __name__)

MAX_HISTORY_SECONDS = 31 * 86400
MAX_DAYS = 3660


def _lifetime_part(unit: int) -> Callable[[dict[str, Any]], Any]:
    def part(fields: dict[str, Any]) -> Any:
        lifetime = fields.get("lifetime_wh")
        if not isinstance(lifetime, (int, float)):
            return None
        return int(lifetime) // 1000 if unit == 1000 else int(lifetime) % 1000
    return part


ENECSYS_POC_FIELDS: dict[str, Callable[[dict[str, Any]], Any]] = {
    # seed PoC name -> value from the canonical fields
    "mac": lambda f: f.get("ieee"),
    "state": lambda f: f.get("state_code"),
    "dc_current": lambda f: f.get("dc_current_a"),
    "dc_watts": lambda f: f.get("dc_power_w"),
    "dc_volt": lambda f: f.get("dc_voltage_v"),
    "efficiency": lambda f: f.get("efficiency_ratio"),
    "ac_freq": lambda f: f.get("ac_frequency_hz"),
    "ac_volt": lambda f: f.get("ac_voltage_v"),
    "ac_watts": lambda f: f.get("ac_power_w"),
    "temp": lambda f: f.get("temperature_c"),
    "wh": _lifetime_part(1),
    "kwh": _lifetime_part(1000),
    "lifetime_wh": lambda f: f.get("lifetime_wh"),
}


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp).astimezone().isoformat(timespec="seconds")


def data_json_document(store) -> dict[str, Any]:
    inverters = {inv.serial: inv for inv in store.inverters()}
    document: dict[str, Any] = {}
    for serial, latest in sorted(store.latest().items()):
        inv = inverters.get(serial)
        fields = latest.fields
        entry: dict[str, Any] = {
            "timestamp": _iso(latest.timestamp),
            "timestamp_unix": latest.timestamp,
            "datapoint": {"serial_number": serial, "watt": fields.get("ac_power_w")},
            "payload": latest.frame_hex,
            "family": inv.family if inv else "",
            "model": latest.model,
            "model_guessed": latest.model_guessed,
            "name": inv.name if inv else "",
            "lifetime_wh": inv.lifetime_wh if inv else None,
            "energy_today_wh": inv.energy_today_wh if inv else None,
            "fields": fields,
        }
        if inv is not None and inv.family == "enecsys":
            entry["serial"] = serial
            for name, value in ENECSYS_POC_FIELDS.items():
                if name == "lifetime_wh":
                    continue  # the ledger's total above is the one to trust
                entry[name] = value(fields)
        document[serial] = entry
    return document


@bp.get("/data.json")
def data_json() -> Response:
    return jsonify(data_json_document(services().store))


def _inverter_json(inv) -> dict[str, Any]:
    return {
        "serial": inv.serial, "family": inv.family, "model": inv.model, "model_setting": inv.model_setting,
        "name": inv.name, "display_name": inv.display_name, "firmware": inv.firmware,
        "first_seen": inv.first_seen, "last_seen": inv.last_seen,
        "lifetime_wh": inv.lifetime_wh, "energy_today_wh": inv.energy_today_wh,
    }


@bp.get("/api/inverters")
def api_inverters() -> Response:
    svc = services()
    stale = svc.settings.web.stale_seconds
    now = time.time()
    return jsonify([
        dict(_inverter_json(inv), online=now - inv.last_seen <= stale) for inv in svc.store.inverters()
    ])


@bp.get("/api/latest")
def api_latest() -> Response:
    return jsonify({
        serial: {
            "timestamp": latest.timestamp, "kind": latest.kind, "model": latest.model,
            "model_guessed": latest.model_guessed, "fields": latest.fields, "raw": latest.raw,
            "frame_hex": latest.frame_hex,
        }
        for serial, latest in services().store.latest().items()
    })


def _float_arg(name: str, default: float) -> float:
    text = request.args.get(name)
    if text is None or text == "":
        return default
    try:
        value = float(text)
    except ValueError:
        abort(400, description=f"{name} must be a Unix time in seconds")
    if not math.isfinite(value):
        abort(400, description=f"{name} must be a finite number")
    return value


@bp.get("/api/inverters/<serial>/history")
def api_history(serial: str) -> Response:
    store = services().store
    if store.inverter(serial) is None:
        abort(404, description=f"no inverter {serial}")
    end = _float_arg("end", time.time())
    start = _float_arg("start", end - 86400)
    if start > end:
        abort(400, description="start must not be after end")
    start = max(start, end - MAX_HISTORY_SECONDS)
    points = store.history(serial, start, end)
    return jsonify({
        "serial": serial, "start": start, "end": end,
        "points": [{"timestamp": ts, "fields": fields} for ts, fields in points],
    })


@bp.get("/api/energy/daily")
def api_energy_daily() -> Response:
    serial = request.args.get("serial") or None
    try:
        days = int(request.args.get("days", "30"))
    except ValueError:
        abort(400, description="days must be a whole number")
    if not 1 <= days <= MAX_DAYS:
        abort(400, description=f"days must be between 1 and {MAX_DAYS}")
    rows = services().store.energy_per_day(serial=serial, days=days)
    return jsonify({"serial": serial, "days": days, "energy": [{"day": day, "wh": wh} for day, wh in rows]})


@bp.errorhandler(400)
@bp.errorhandler(404)
def json_error(error) -> tuple[Response, int]:
    return jsonify({"error": error.description}), error.code
