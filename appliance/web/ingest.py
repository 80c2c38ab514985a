"""Inverter ingest: one path from an inverter's POST to the pipeline, for both entry points.

The front receiver (:mod:`appliance.web.receiver`) reads the inverters' requests itself and
the Flask route below serves the same POSTs when the app runs without it (a test client, a
WSGI server of one's own); both hand an :class:`InverterPost` to :func:`accept`.

The reply never depends on the body: ``200``, ``text/html``, the local time as 14 digits
``YYYYMMDDHHMMSS``. An inverter that gets anything else retries and its clock drifts, so
garbage, oversize or malformed bodies, reports from a refused address and internal errors
all get the same answer; they are counted and kept for diagnostics through ``store.reject``,
with the reason.

Which POSTs are an inverter's: every path whose first segment is not one of the UI's
(:data:`UI_PREFIXES`), whatever bytes it holds (``/i.php``, ``/t.php``, ``/``, a path with a
newline in it); a POST under a UI prefix is the UI's (a mistyped form post is not taken for
a report). Every other POST route of the app lies under a UI prefix (a test checks), so this
one rule decides in the receiver without asking the router.

Who may post: ``[web] nep_sources`` (:mod:`appliance.web.sources`): the access point's
subnet and loopback by default.

Size: inverters send 45 or 69 bytes. A body over :data:`MAX_BODY` bytes is not read (a
declared Content-Length over the limit is refused at once, a chunked body is read at most
``MAX_BODY + 1`` bytes) and still gets the timestamp ``200`` (not ``413``: the inverter
contract has one answer), counted as a reject.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flask import Blueprint, Response, abort, request
from werkzeug.routing import PathConverter

from appliance.lograte import RateLimitedLog
from appliance.protocols import nep
from appliance.reading import FrameError
from appliance.web.http1 import stamp
from appliance.web.services import services
from appliance.web.sources import source_filter

if TYPE_CHECKING:
    from appliance.web.services import Services

log = logging.getLogger(__name__)
malformed_log = RateLimitedLog(log, "malformed inverter requests")
refused_log = RateLimitedLog(log, "reports from refused addresses")
failure_log = RateLimitedLog(log, "ingest failures")
batch_log = RateLimitedLog(log, "failed batches")

MAX_BODY = 4096
UI_PREFIXES = frozenset({
    "api", "ui-api", "login", "logout", "setup", "settings", "inverter", "inverters", "events", "static",
    "metrics", "data.json",
})
"""First path segments that belong to the UI and API, never to an inverter."""


def is_inverter_path(path: str) -> bool:
    """True for a POST path that is an inverter's (``path`` percent-decoded, with its leading /)."""
    return path.lstrip("/").split("/", 1)[0] not in UI_PREFIXES


@dataclass(frozen=True)
class InverterPost:
    """One inverter POST as an entry point read it."""

    path: str
    source: str
    """The peer's address."""
    body: bytes | None
    """None when it was not read: over :data:`MAX_BODY`, or ``problem`` says why."""
    received: float
    problem: str = ""
    """Why the request could not be read whole (a malformed chunked body, a broken head...)."""
    source_port: int | None = None
    server_port: int | None = None


def accept(svc: "Services", post: InverterPost) -> None:
    """Decode, check, record, publish and relay one POST; never raises (the reply must go out)."""
    try:
        _accept(svc, post)
    except Exception as exc:  # noqa: BLE001 - logged (a bug or a storage failure), the reply goes out
        if failure_log.error("ingest failed for a POST to %s from %s: %r", post.path, post.source, exc):
            log.debug("ingest failure", exc_info=True)


def accept_all(svc: "Services", posts: list[InverterPost]) -> None:
    """:func:`accept` each post, in order, all in one store transaction (``Store.batch``): a burst
    costs one commit; never raises. When a write fails inside the batch nothing of it is kept, and
    each post is accepted again on its own: one bad report never loses the others. What leaves the
    process (MQTT, the relay) happens once the batch is committed."""
    if len(posts) > 1:
        try:
            with svc.store.batch():
                for post in posts:
                    accept(svc, post)
            return
        except Exception as exc:  # noqa: BLE001 - the batch was rolled back whole: one by one now
            batch_log.warning("%d reports could not be stored together (%r): storing each on its own",
                              len(posts), exc)
    for post in posts:
        accept(svc, post)


def _accept(svc: "Services", post: InverterPost) -> None:
    pipeline, where = svc.pipeline, f"({post.path[:100]!r})"
    allowed = source_filter(svc.settings)
    if not allowed.allows(post.source):
        refused_log.warning("a report from %s refused: [web] nep_sources allows %s", post.source, allowed.description)
        pipeline.reject(frame=post.body or b"", family="nep", source=post.source, timestamp=post.received,
                        reason=f"from {post.source}: not an allowed source ([web] nep_sources: "
                               f"{allowed.description}) {where}", also_count=("reports_refused_source",))
        return
    if post.body is None:
        problem = post.problem or f"body over {MAX_BODY} bytes, not read"
        malformed_log.warning("malformed request from %s: %s %s", post.source, problem, where)
        pipeline.reject(frame=b"", family="nep", source=post.source, timestamp=post.received,
                        reason=f"{problem} {where}")
        return
    body = post.body
    relay = svc.relay
    if relay is not None and relay.is_loop(body, post.source, post.source_port):
        svc.store.count("relay_looped", "nep")
        log.warning("a relayed body came back from %s: not recorded again, not relayed", post.source)
        return
    try:
        reading = nep.decode(body, model=_model_setting(svc.store, nep.peek_serial(body)), received_at=post.received)
    except FrameError as exc:
        pipeline.reject(frame=body, family="nep", source=post.source, timestamp=post.received, reason=f"{exc} {where}")
        return
    if relay is not None:  # well-framed reports only, checksum or not: the portal does not check
        svc.store.after_commit(lambda: _relay(relay, post))
    pipeline.handle(reading, source=post.source)
    svc.store.after_commit(svc.report_status)


def _relay(relay, post: InverterPost) -> None:
    relay.note_port(post.server_port)
    relay.submit(post.path, post.body)


def _model_setting(store, serial: str | None) -> str:
    model = store.model_setting(serial) if serial else "auto"
    return model if model in nep.MODELS else "auto"  # a stale setting must not lose the report


# --- the Flask entry point ---------------------------------------------------------------------

bp = Blueprint("ingest", __name__)


class AnyPathConverter(PathConverter):
    """Like ``path`` but matching every character, newlines too (``/i%0a.php`` is a POST like any)."""

    regex = "[^/][\\s\\S]*?"


@bp.record_once
def _register_converter(state) -> None:
    state.app.url_map.converters.setdefault("anypath", AnyPathConverter)


def timestamp_reply(now: float | None = None) -> Response:
    """The inverter's expected answer: local time as ``YYYYMMDDHHMMSS``."""
    return Response(stamp(now), status=200, content_type="text/html")


def read_bounded(limit: int = MAX_BODY) -> tuple[bytes | None, str]:
    """(the request body, "") or (None, why it was not read): over ``limit`` bytes, or malformed."""
    declared = request.content_length
    if declared is not None and declared > limit:
        return None, f"body over {limit} bytes (Content-Length {declared}), not read"
    stream = request.stream
    chunks: list[bytes] = []
    size = 0
    try:
        while size <= limit:
            chunk = stream.read(limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except Exception as exc:  # noqa: BLE001 - the WSGI server's reader refused the body (bad chunking...)
        return None, f"malformed body: {exc.__class__.__name__}: {str(exc)[:120]}".rstrip(": ")
    if size > limit:
        return None, f"body over {limit} bytes ({'no Content-Length' if declared is None else 'longer than declared'}), not read"
    return b"".join(chunks), ""


@bp.post("/i.php", defaults={"path": "i.php"})
@bp.post("/t.php", defaults={"path": "t.php"})
@bp.post("/", defaults={"path": ""})
@bp.post("/<anypath:path>")
def report(path: str) -> Response:
    if not is_inverter_path(path):
        abort(404)
    received = time.time()
    body, problem = read_bounded()
    accept(services(), InverterPost("/" + path, request.remote_addr or "", body, received, problem,
                                    source_port=_int(request.environ.get("REMOTE_PORT")),
                                    server_port=_int(request.environ.get("SERVER_PORT"))))
    return timestamp_reply(received)


def _int(value: object) -> int | None:
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
