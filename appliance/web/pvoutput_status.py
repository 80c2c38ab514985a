"""What the status page says about the PVOutput upload: its state in words, the last success and
error, the queue of each system. Times stay Unix times; the template formats them."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from appliance.pvoutput.api import REQUESTS_PER_HOUR

if TYPE_CHECKING:
    from appliance.settings import Settings
    from appliance.store import Store


def _when(entry: dict[str, Any] | None) -> str:
    if not entry:
        return ""
    d, t = entry["date"], entry["time"]
    return f"{d[:4]}-{d[4:6]}-{d[6:]} {t}"


def view(settings: "Settings", uploader: Any, store: "Store", now: float) -> dict[str, Any] | None:
    """The PVOutput panel's content; None when the upload is off and nothing was ever queued."""
    snapshot = uploader.snapshot() if uploader is not None else None
    systems = snapshot["systems"] if snapshot else store.pvoutput_summary()
    if not settings.pvoutput.enabled and not systems:
        return None
    sent = [s["last_sent"]["settled"] for s in systems.values() if s["last_sent"]]
    last_success = max([t for t in [*sent, snapshot and snapshot["last_success"]] if t], default=None)
    next_try = None
    if not settings.pvoutput.enabled:
        state = "off"
    elif snapshot is None:
        state = "not running (see the logs)"
    elif snapshot["auth_paused"]:
        state = "stopped: PVOutput refuses the API key or system id (see the error below)"
        next_try = min(snapshot["auth_paused"].values())
    elif snapshot["pause_reason"] == "rate limit":
        state = "waiting for PVOutput's hourly request limit to reset"
        next_try = snapshot["paused_until"]
    elif snapshot["pause_reason"] == "retry":
        state = "PVOutput did not answer; statuses wait in the queue"
        next_try = snapshot["paused_until"]
    else:
        state = f"uploading every {settings.pvoutput.interval_minutes} minutes"
    return {
        "state": state,
        "next_try": next_try,
        "last_success": last_success,
        "error": snapshot["last_error"] if snapshot else "",
        "error_at": snapshot["last_error_at"] if snapshot else None,
        "requests": snapshot["requests_last_hour"] if snapshot else 0,
        "budget": REQUESTS_PER_HOUR,
        "systems": [
            {"id": system, "queued": s["queued"], "last_sent": _when(s["last_sent"]),
             "last_refused": _when(s["last_refused"]),
             "refused_why": s["last_refused"]["note"] if s["last_refused"] else ""}
            for system, s in sorted(systems.items())
        ],
    }
