"""Live inverter updates as server-sent events (``GET /events``).

Both services write the same SQLite file, so the web process learns of a new
reading by polling ``store.changes_since(cursor)`` once a second; the cursor
is the event id, so a reconnecting browser (``Last-Event-ID``) misses nothing.

Under gunicorn's gthread worker every open stream holds a thread. Streams are
kept cheap and bounded: a comment heartbeat every ``HEARTBEAT`` seconds (so
dead clients are noticed), an end after ``MAX_LIFETIME`` seconds (the browser
reconnects on its own), and at most ``max_streams()`` at once so inverter
posts always find a free thread. A refused stream gets a 503 and the page's
script retries later.
"""
from __future__ import annotations

import json
import threading
import time
from typing import Any, Iterator

from flask import Blueprint, Response, request

from appliance.web.cards import all_cards, totals
from appliance.web.services import services

bp = Blueprint("events", __name__)

POLL_SECONDS = 1.0
HEARTBEAT = 5.0
"""A closed tab is only noticed when a write fails: keep this short."""
MAX_LIFETIME = 300.0
RETRY_MS = 2000

_open = 0
_open_lock = threading.Lock()


def max_streams() -> int:
    """Leave at least two threads for inverter posts and page loads (5 streams with the default 8)."""
    return max(2, services().settings.web.threads - 3) if services().settings.web.threads > 3 else 1


def _message(event: str, data: Any, event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def _updates(svc: Any, cursor: int | None) -> Iterator[str]:
    """The stream's body. It runs after the view returned, outside the request: it only uses ``svc``."""
    yield f"retry: {RETRY_MS}\n\n"
    cursor, changed = svc.store.changes_since(cursor)
    if changed:  # a reconnect after missed updates: send them first
        yield from _changed_cards(svc, cursor, set(changed))
    started = last_sent = time.monotonic()
    while time.monotonic() - started < MAX_LIFETIME:
        time.sleep(POLL_SECONDS)
        cursor, changed = svc.store.changes_since(cursor)
        if changed:
            yield from _changed_cards(svc, cursor, set(changed))
            last_sent = time.monotonic()
        elif time.monotonic() - last_sent >= HEARTBEAT:
            yield ": heartbeat\n\n"
            last_sent = time.monotonic()
    yield _message("bye", {"reconnect": True}, cursor)


def _changed_cards(svc: Any, cursor: int, serials: set[str]) -> Iterator[str]:
    cards = all_cards(svc.store, svc.settings)
    known = {c["serial"] for c in cards}
    for card in cards:
        if card["serial"] in serials:
            yield _message("inverter", card)
    for serial in sorted(serials - known):  # removed
        yield _message("removed", {"serial": serial})
    yield _message("totals", totals(cards), cursor)


@bp.get("/events")
def events() -> Response:
    global _open
    with _open_lock:
        if _open >= max_streams():
            return Response("too many live views open; retrying later\n", status=503,
                            mimetype="text/plain", headers={"Retry-After": "30"})
        _open += 1
    released = threading.Event()

    def release() -> None:  # the server closes every response, even one never iterated
        global _open
        if not released.is_set():
            released.set()
            with _open_lock:
                _open -= 1

    last = request.headers.get("Last-Event-ID") or request.args.get("cursor")
    cursor = int(last) if last and last.isdigit() else None
    response = Response(_updates(services(), cursor), mimetype="text/event-stream",
                        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    response.call_on_close(release)
    return response
