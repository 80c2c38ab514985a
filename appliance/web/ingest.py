"""Inverter ingest: ``POST /i.php``, ``POST /t.php`` and any other inverter POST.

The reply never depends on the body: ``200``, ``text/html``, the local time as
14 digits ``YYYYMMDDHHMMSS``. An inverter that gets anything else retries and
its clock drifts, so garbage, oversize bodies and internal errors get the same
answer; they are counted and kept for diagnostics through ``store.reject``.

Which POSTs are ingested: ``/i.php``, ``/t.php`` and every path no other rule
claims (werkzeug prefers specific rules over this catch-all), except paths
under the UI's prefixes (:data:`UI_PREFIXES`), which get a 404 so that a
mistyped form post is not mistaken for an inverter report.

Size: inverters send 45 or 69 bytes. A body over :data:`MAX_BODY` bytes is not
read (a declared Content-Length over the limit is refused at once; a chunked
body is read at most ``MAX_BODY + 1`` bytes) and still gets the timestamp
``200`` (not ``413``: the inverter contract has one answer), counted as a
reject. gunicorn then drains or closes the connection within its own bounds.
"""
from __future__ import annotations

import logging
import time

from flask import Blueprint, Response, abort, request

from appliance.protocols import nep
from appliance.reading import FrameError
from appliance.web.services import services

log = logging.getLogger(__name__)

bp = Blueprint("ingest", __name__)

MAX_BODY = 4096
UI_PREFIXES = frozenset({
    "api", "ui-api", "login", "logout", "setup", "settings", "inverter", "inverters", "events", "static",
    "metrics", "data.json",
})
"""First path segments that belong to the UI and API, never to an inverter."""


def timestamp_reply(now: float | None = None) -> Response:
    """The inverter's expected answer: local time as ``YYYYMMDDHHMMSS``.

    (The seed server formatted ``%Y%d%m...``, day before month: a bug.)
    """
    stamp = time.strftime("%Y%m%d%H%M%S", time.localtime(now))
    return Response(stamp, status=200, content_type="text/html")


def read_bounded(limit: int = MAX_BODY) -> bytes | None:
    """The request body, or None when it is over ``limit`` bytes (never read whole)."""
    declared = request.content_length
    if declared is not None and declared > limit:
        return None
    stream = request.stream
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = stream.read(limit + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return None if size > limit else b"".join(chunks)


@bp.post("/i.php", defaults={"path": "i.php"})
@bp.post("/t.php", defaults={"path": "t.php"})
@bp.post("/", defaults={"path": ""})
@bp.post("/<path:path>")
def report(path: str) -> Response:
    if path.split("/", 1)[0] in UI_PREFIXES:
        abort(404)
    received = time.time()
    try:
        _ingest(read_bounded(), "/" + path, received)
    except Exception:  # the reply must go out whatever happened
        log.exception("ingest failed for a POST to /%s from %s", path, request.remote_addr)
    return timestamp_reply(received)


def _model_setting(store, serial: str | None) -> str:
    model = store.model_setting(serial) if serial else "auto"
    return model if model in nep.MODELS else "auto"  # a stale setting must not lose the report


def _ingest(body: bytes | None, path: str, received: float) -> None:
    """Decode, record, publish and relay one POST body (None: over the size limit)."""
    svc = services()
    pipeline = svc.pipeline
    source = request.remote_addr or ""
    if body is None:
        declared = request.content_length
        size = f"Content-Length {declared}" if declared is not None else "no Content-Length"
        pipeline.reject(frame=b"", family="nep", source=source, timestamp=received,
                        reason=f"body over {MAX_BODY} bytes ({size}), not read ({path})")
        return
    relay = svc.relay
    if relay is not None and relay.is_loop(body, source, request.environ.get("REMOTE_PORT")):
        svc.store.count("relay_looped", "nep")
        log.warning("a relayed body came back from %s: not recorded again, not relayed", source)
        return
    try:
        reading = nep.decode(body, model=_model_setting(svc.store, nep.peek_serial(body)), received_at=received)
    except FrameError as exc:
        pipeline.reject(frame=body, family="nep", source=source, timestamp=received, reason=f"{exc} ({path})")
        return
    if relay is not None:  # well-framed reports only, checksum or not: the portal does not check
        relay.note_port(request.environ.get("SERVER_PORT"))
        relay.submit(path, body)
    pipeline.handle(reading, source=source)
    svc.report_status()
