"""Logged-in sessions, kept server-side so that logging out ends one for good.

The session cookie is Flask's signed cookie; on its own it stays valid until it expires, so a
copy taken before a logout would still work. Each login therefore gets a random session id,
and the cookie is honoured only while this registry knows the id: logging out forgets it.

The registry lives in the web worker's memory and in ``<data dir>/web-sessions.json`` (written
at login and logout only, never per request; it holds digests, not the ids), so sessions survive
a restart. At most :data:`MAX_SESSIONS` are kept (the oldest is forgotten first) and none
longer than the session lifetime.
"""
from __future__ import annotations

import hashlib
import json
import logging
import secrets
import threading
import time
from pathlib import Path
from typing import Callable

from appliance.atomic import write_atomic

log = logging.getLogger(__name__)

FILE_NAME = "web-sessions.json"
MAX_SESSIONS = 32
LIFETIME_SECONDS = 30 * 24 * 3600


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8", "replace")).hexdigest()


class Sessions:
    def __init__(self, path: Path, lifetime: float, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.lifetime = lifetime
        self.clock = clock
        self._lock = threading.Lock()
        self._started: dict[str, float] = self._read()

    def _read(self) -> dict[str, float]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return {str(k): float(v) for k, v in data.items()}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, AttributeError, TypeError) as exc:
            log.warning("%s: unreadable (%s): every session has to log in again", self.path, exc)
            return {}

    def _write(self) -> None:
        try:
            write_atomic(self.path, json.dumps(self._started), 0o600)
        except OSError as exc:  # sessions then last until the worker restarts
            log.warning("cannot save the sessions to %s: %s", self.path, exc.strerror or exc)

    def _prune(self, now: float) -> None:
        self._started = {k: t for k, t in self._started.items() if now - t < self.lifetime}
        while len(self._started) > MAX_SESSIONS:
            self._started.pop(min(self._started, key=self._started.__getitem__))

    def start(self) -> str:
        """A new session id (for the cookie)."""
        session_id = secrets.token_urlsafe(24)
        with self._lock:
            now = self.clock()
            self._started[_digest(session_id)] = now
            self._prune(now)
            self._write()
        return session_id

    def valid(self, session_id: object) -> bool:
        if not isinstance(session_id, str) or not session_id:
            return False
        started = self._started.get(_digest(session_id))
        return started is not None and self.clock() - started < self.lifetime

    def end(self, session_id: object) -> None:
        if not isinstance(session_id, str):
            return
        with self._lock:
            if self._started.pop(_digest(session_id), None) is not None:
                self._write()

    def end_all_but(self, session_id: object = None) -> None:
        """Log every other session out (the password changed)."""
        with self._lock:
            keep = _digest(session_id) if isinstance(session_id, str) else None
            self._started = {k: t for k, t in self._started.items() if k == keep}
            self._write()
