"""The PVOutput uploader: makes a status per system every interval, queues it, sends the queue.

Everything is in :meth:`Uploader.step`, one pass at a time on a clock passed in, so
tests drive hours of simulated time without sleeping; :meth:`Uploader.start` runs
the passes on a background thread on the real clock.

A pass:

1. makes the statuses of the current interval boundary for the systems that have
   an inverter online and have none for it yet, and queues them (the store's
   ``pvoutput_queue``: made once per system, date and time, even across restarts);
2. once a local day, settles as expired the queued statuses too old for PVOutput;
3. sends at most one request: the oldest queued status of a system with Add Status,
   or its oldest queued statuses (up to the batch size) with Add Batch Status when
   there are several, which is how the gap after an outage is filled. A status is
   settled only on PVOutput's answer: after a timeout it stays queued and goes again
   (harmless, see :mod:`appliance.pvoutput.api`).

Limits: never more than :data:`~appliance.pvoutput.api.REQUESTS_PER_HOUR` requests in
any hour (a sliding window: it also holds for PVOutput's clock hours), at least
:data:`SPACING_SECONDS` apart; when PVOutput says the hour's requests are used up
(403, or ``X-Rate-Limit-Remaining: 0``) nothing is sent until its
``X-Rate-Limit-Reset`` (the next full hour without one). A refused key or system id
(401) stops that system for :data:`AUTH_RETRY_SECONDS`; its statuses stay queued. A
network failure or server error retries after a growing pause (1 minute doubling to
15). A batch PVOutput refuses (400) is sent again one status at a time, so only the
status at fault is dropped.
"""
from __future__ import annotations

import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zoneinfo
from collections import deque
from datetime import datetime, timedelta, timezone, tzinfo
from typing import TYPE_CHECKING, Any, Callable, Mapping

from appliance.pvoutput import aggregate, api

if TYPE_CHECKING:
    from appliance.settings import Settings
    from appliance.store import Store

log = logging.getLogger(__name__)

POLL_SECONDS = 30.0
"""How often a pass runs when nothing else is due (an inverter waking mid-interval gets its status then)."""
SPACING_SECONDS = 10.0
"""The least time between two requests."""
AUTH_RETRY_SECONDS = 3600.0
"""After a refused key or system id, the next try (the user may fix it on PVOutput's side)."""
RETRY_FIRST_SECONDS, RETRY_MAX_SECONDS = 60.0, 900.0
TIMEOUT_SECONDS = 30.0

Transport = Callable[[str, Mapping[str, str], Mapping[str, str], float], tuple[int, str, Mapping[str, str]]]
"""``(url, form, headers, timeout) -> (HTTP code, body, answer headers)``; raises OSError when there is no answer."""


def http_post(url: str, form: Mapping[str, str], headers: Mapping[str, str],
              timeout: float) -> tuple[int, str, Mapping[str, str]]:
    """POST a form with urllib (standard library: no extra package in the web service's memory)."""
    request = urllib.request.Request(url, data=urllib.parse.urlencode(form).encode(), method="POST",
                                     headers={**headers, "Content-Type": "application/x-www-form-urlencoded",
                                              "User-Agent": "solargw"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return reply.status, reply.read(4096).decode("utf-8", "replace"), dict(reply.headers.items())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read(4096).decode("utf-8", "replace"), dict(error.headers.items())


def _zone(name: str) -> tzinfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        return timezone.utc


class Uploader:
    def __init__(self, settings: "Settings", store: "Store", *, clock: Callable[[], float] = time.time,
                 transport: Transport = http_post):
        self.config = settings.pvoutput
        self.tz = _zone(settings.system.timezone)
        self.stale_seconds = settings.web.stale_seconds
        self.store = store
        self.clock = clock
        self.transport = transport
        self._made: set[tuple[int, str, str]] = set()
        self._expired_on = ""
        self._requests: deque[float] = deque()
        self._paused_until = 0.0
        self._pause_reason = ""
        self._auth_paused: dict[int, float] = {}
        self._failures = 0
        self._one_by_one: dict[int, tuple[str, str]] = {}
        self._last_success: float | None = None
        self._last_error = ""
        self._last_error_at: float | None = None
        self._rate = api.RateLimit()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- one pass ---------------------------------------------------------------------------
    def step(self) -> float:
        """One pass (make, expire, send one request); returns the clock time the next one is due."""
        now = self.clock()
        at = aggregate.boundary(now, self.tz, self.config.interval_minutes)
        self._make(now, at)
        self._expire(now)
        more = self._send(now)
        due = min(at.timestamp() + self.config.interval_minutes * 60, now + POLL_SECONDS)
        if more:
            due = min(due, max(now + SPACING_SECONDS, self._paused_until, self._budget_free(now)))
        return due

    def _make(self, now: float, at: datetime) -> None:
        date, hhmm = at.strftime("%Y%m%d"), at.strftime("%H:%M")
        energy = self.store.energy_of_day(at.date().isoformat())
        latest = self.store.latest()
        inverters = [
            aggregate.InverterNow(
                serial=info.serial, energy_today_wh=energy.get(info.serial, 0.0),
                online=info.serial in latest and 0 <= now - latest[info.serial].timestamp < self.stale_seconds,
                fields=latest[info.serial].fields if info.serial in latest else {},
            )
            for info in self.store.inverters()
        ]
        fresh = [s for s in aggregate.statuses(at, inverters, self.config.system_id, self.config.inverters)
                 if (s.system_id, date, hhmm) not in self._made]
        if fresh:
            self.store.pvoutput_enqueue(fresh, made=now)
            self._made = {key for key in self._made if key[1:] == (date, hhmm)}
            self._made.update((s.system_id, date, hhmm) for s in fresh)

    def _expire(self, now: float) -> None:
        today = datetime.fromtimestamp(now, self.tz).date()
        if self._expired_on == today.isoformat():
            return
        self._expired_on = today.isoformat()
        oldest = (today - timedelta(days=api.MAX_AGE_DAYS - 1)).strftime("%Y%m%d")
        expired = self.store.pvoutput_expire(oldest, when=now)
        if expired:
            log.warning("PVOutput: %d queued statuses were older than PVOutput takes and are dropped", expired)

    def _budget_free(self, now: float) -> float:
        """When the next request fits in the hourly budget."""
        while self._requests and self._requests[0] <= now - 3600:
            self._requests.popleft()
        if len(self._requests) < api.REQUESTS_PER_HOUR:
            return now
        return self._requests[0] + 3600

    def _send(self, now: float) -> bool:
        """Send at most one request; True when statuses stay queued for a system that may send now."""
        if now < self._paused_until or self._budget_free(now) > now:
            return bool(self.store.pvoutput_queued())
        waiting = [system for system in sorted(self.store.pvoutput_queued())
                   if self._auth_paused.get(system, 0.0) <= now]
        if not waiting:
            return False
        system = waiting[0]
        pending = self.store.pvoutput_pending(system, api.BATCH_SIZE)
        one_by_one = self._one_by_one.get(system)
        if len(pending) == 1 or (one_by_one is not None and pending[0].key <= one_by_one):
            sent = pending[:1]
            service, form = api.ADD_STATUS, api.add_status_form(sent[0])
        else:
            self._one_by_one.pop(system, None)
            sent = pending
            service, form = api.ADD_BATCH_STATUS, api.batch_form(sent)
        self._requests.append(now)
        url = self.config.base_url.rstrip("/") + "/" + service
        try:
            code, body, headers = self.transport(url, form, api.headers(self.config.api_key, system), TIMEOUT_SECONDS)
        except OSError as exc:  # no answer: refused, unreachable, timed out
            self._transient(now, f"cannot reach PVOutput ({getattr(exc, 'reason', None) or exc})")
            return True
        answer = api.classify(code, body, headers)
        self._handle(now, system, sent, service, answer, body)
        return True

    def _handle(self, now: float, system: int, sent: list[api.Status], service: str, answer: api.Answer,
                body: str) -> None:
        if answer.rate.limit is not None or answer.rate.remaining is not None:
            self._rate = answer.rate
        if answer.rate.remaining == 0 and answer.rate.reset and answer.rate.reset > now:
            self._pause(answer.rate.reset, "rate limit")
        if answer.kind == api.OK:
            self._failures = 0
            self._last_success = now
            if service == api.ADD_STATUS:
                self.store.pvoutput_settle(system, [sent[0].key], "sent", when=now)
            else:
                results = api.batch_results(body) or {s.key: True for s in sent}
                added = [s.key for s in sent if results.get(s.key)]
                refused = [s.key for s in sent if s.key in results and not results[s.key]]
                self.store.pvoutput_settle(system, added, "sent", when=now)
                self.store.pvoutput_settle(system, refused, "refused", "PVOutput did not add it", when=now)
            if self._auth_paused.pop(system, None) is not None or self._last_error:
                self._last_error = ""
        elif answer.kind == api.REJECTED:
            self._failures = 0
            self._error(now, f"system {system}: {api.explain(answer)}")
            if service == api.ADD_STATUS:
                self.store.pvoutput_settle(system, [sent[0].key], "refused", answer.message, when=now)
            else:
                self._one_by_one[system] = sent[-1].key
        elif answer.kind == api.AUTH:
            self._auth_paused[system] = now + AUTH_RETRY_SECONDS
            self._error(now, f"system {system}: {api.explain(answer)}")
        elif answer.kind == api.RATE_LIMITED:
            reset = answer.rate.reset if answer.rate.reset and answer.rate.reset > now else (now // 3600 + 1) * 3600
            self._pause(reset, "rate limit")
            self._error(now, api.explain(answer))
        else:
            self._transient(now, api.explain(answer))

    def _transient(self, now: float, message: str) -> None:
        self._failures += 1
        self._pause(now + min(RETRY_FIRST_SECONDS * 2 ** (self._failures - 1), RETRY_MAX_SECONDS), "retry")
        self._error(now, message)

    def _pause(self, until: float, reason: str) -> None:
        if until > self._paused_until:
            self._paused_until, self._pause_reason = until, reason

    def _error(self, now: float, message: str) -> None:
        if message != self._last_error:
            log.warning("PVOutput: %s", message)
        self._last_error, self._last_error_at = message, now

    # -- what the status page shows ---------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """The uploader's state: queue per system (from the store), the last success and error, pauses."""
        now = self.clock()  # read without a lock: a pass may be waiting on PVOutput for its answer
        return {
            "systems": self.store.pvoutput_summary(),
            "last_success": self._last_success,
            "last_error": self._last_error,
            "last_error_at": self._last_error_at,
            "paused_until": self._paused_until if self._paused_until > now else None,
            "pause_reason": self._pause_reason if self._paused_until > now else "",
            "auth_paused": {system: until for system, until in list(self._auth_paused.items()) if until > now},
            "requests_last_hour": sum(1 for t in list(self._requests) if t > now - 3600),
            "rate_remaining": self._rate.remaining,
            "rate_limit": self._rate.limit,
        }

    # -- the background thread ------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="pvoutput", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        log.info("PVOutput uploader started (%d-minute statuses)", self.config.interval_minutes)
        while not self._stop.is_set():
            try:
                due = self.step()
            except Exception:  # a database hiccup or a bug must not end uploads for good
                log.exception("PVOutput uploader pass failed")
                due = self.clock() + POLL_SECONDS
            self._stop.wait(min(max(1.0, due - self.clock()), POLL_SECONDS))

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
