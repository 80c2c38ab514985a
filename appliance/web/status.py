"""The status page (services, storage, disk, memory, clock, MQTT, PVOutput, rejected frames) and the logs page."""
from __future__ import annotations

import os
import shutil
import time

from flask import Blueprint, render_template

from appliance.web import auth, host, pvoutput_status
from appliance.web.formatting import readings_waiting, timezone
from appliance.web.services import services

bp = Blueprint("status", __name__)
auth.protect(bp)


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
    storage = svc.store.health()
    return render_template(
        "status.html", storage=storage, storage_waiting=readings_waiting(storage, timezone(svc.settings)),
        components=components, disk=disk, memory=host.memory(), time_sync=host.time_sync(),
        mqtt=mqtt_state(), rejected=svc.store.rejected(limit=50), counters=counters, now=time.time(),
        inverters=svc.store.inverters(),
        pvoutput=pvoutput_status.view(svc.settings, svc.uploader, svc.store, time.time()),
    )


@bp.get("/logs")
def logs() -> str:
    log_file = os.environ.get("SOLARGW_LOG_FILE") or str(services().settings.data_dir / "solargw.log")
    source, text = host.recent_logs(log_file)
    return render_template("logs.html", source=source, text=text)
