"""A local stand-in for PVOutput's Add Status and Add Batch Status services, on loopback.

It checks what PVOutput's API specification documents (see :mod:`appliance.pvoutput.api`)
and answers as the real service does:

- POST to ``/service/r2/addstatus.jsp`` or ``/service/r2/addbatchstatus.jsp``;
- ``X-Pvoutput-Apikey`` must be the account's key (else ``Unauthorized 401: Invalid API Key``)
  and ``X-Pvoutput-SystemId`` one of its systems (else ``Unauthorized 401: Invalid System ID``);
- 60 requests per clock hour and key (then ``Forbidden 403: Exceeded number of requests per
  hour allowed``), with ``X-Rate-Limit-Remaining/-Limit/-Reset`` when ``X-Rate-Limit: 1`` is sent;
- ``d`` a real date ``yyyymmdd``, ``t`` a real time ``hh:mm``, not in the future and not older
  than 14 days (in the system's time zone), ``v1``/``v2`` whole numbers, ``v5``/``v6`` decimals,
  at least one of ``v1``..``v4``; a batch holds at most 30 statuses of ``d,t,v1,v2,v3,v4,v5,v6``
  and is answered ``d,t,1`` per status (``0`` for one it did not take).

It is stricter than PVOutput in one way: any other parameter is refused (``Bad request 400``),
so the uploader is held to the documented ones. A status for a (system, d, t) it already holds
replaces it; every accepted submission is also logged, so a test can count repeats.

Time comes from a clock passed in (simulated time in the tests), and ``down`` makes it drop
every connection without an answer, like an unreachable server.
"""
from __future__ import annotations

import re
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone, tzinfo
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

LIMIT = 60
MAX_BATCH = 30
MAX_AGE_DAYS = 14
STATUS_KEYS = {"d", "t", "v1", "v2", "v3", "v4", "v5", "v6"}


class Refused(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code, self.message = code, message


@dataclass
class Submission:
    """One status PVOutput took: which system, its fields, the clock time it arrived, which service."""

    system_id: int
    fields: dict[str, str]
    at: float
    service: str

    @property
    def key(self) -> tuple[str, str]:
        return self.fields["d"], self.fields["t"]


@dataclass
class FakePVOutput:
    api_key: str = "0123456789abcdef0123456789abcdef01234567"
    systems: tuple[int, ...] = (4321,)
    clock: Callable[[], float] = time.time
    tz: tzinfo = timezone.utc
    limit: int = LIMIT
    down: bool = False
    answer_delay: float = 0.0
    """Seconds (real time) to wait before answering, after the status was taken."""
    statuses: dict[tuple[int, str, str], dict[str, str]] = field(default_factory=dict)
    log: list[Submission] = field(default_factory=list)
    requests: list[tuple[float, str, int]] = field(default_factory=list)
    """Every request that reached the service: (clock time, service, HTTP code answered)."""
    used: dict[int, int] = field(default_factory=dict)
    """Requests counted per clock hour (``int(time // 3600)``)."""
    dropped: list[float] = field(default_factory=list)
    """Clock times of the requests dropped while ``down``."""

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                fake._serve(self)

            def do_GET(self) -> None:  # noqa: N802
                self.send_response(405)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/service/r2"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> "FakePVOutput":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- serving ----------------------------------------------------------------------------
    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        if self.down:
            self.dropped.append(self.clock())
            handler.close_connection = True
            return  # no status line: the client sees the connection drop
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length).decode("utf-8", "replace")
        service = handler.path.split("?")[0].rsplit("/", 1)[-1]
        now = self.clock()
        hour = int(now // 3600)
        headers: dict[str, str] = {}
        with self._lock:
            try:
                if not handler.path.startswith("/service/r2/") or service not in ("addstatus.jsp",
                                                                                   "addbatchstatus.jsp"):
                    raise Refused(404, "Not Found 404")
                if handler.headers.get("X-Pvoutput-Apikey") != self.api_key:
                    raise Refused(401, "Unauthorized 401: Invalid API Key")
                try:
                    system = int(handler.headers.get("X-Pvoutput-SystemId", ""))
                except ValueError:
                    raise Refused(401, "Unauthorized 401: Invalid System ID") from None
                if system not in self.systems:
                    raise Refused(401, "Unauthorized 401: Invalid System ID")
                self.used[hour] = self.used.get(hour, 0) + 1
                if handler.headers.get("X-Rate-Limit") == "1":
                    headers = {"X-Rate-Limit-Remaining": str(max(0, self.limit - self.used[hour])),
                               "X-Rate-Limit-Limit": str(self.limit),
                               "X-Rate-Limit-Reset": str((hour + 1) * 3600)}
                if self.used[hour] > self.limit:
                    raise Refused(403, "Forbidden 403: Exceeded number of requests per hour allowed")
                form = urllib.parse.parse_qs(body, keep_blank_values=True, strict_parsing=bool(body))
                if any(len(v) != 1 for v in form.values()):
                    raise Refused(400, "Bad request 400: Repeated parameter")
                params = {k: v[0] for k, v in form.items()}
                if service == "addstatus.jsp":
                    answer = self._add_status(system, params, now)
                else:
                    answer = self._add_batch(system, params, now)
                code = 200
            except Refused as refused:
                code, answer = refused.code, refused.message
            self.requests.append((now, service, code))
        if self.answer_delay:
            time.sleep(self.answer_delay)
        payload = answer.encode()
        try:
            handler.send_response(code)
            for name, value in headers.items():
                handler.send_header(name, value)
            handler.send_header("Content-Type", "text/plain")
            handler.send_header("Content-Length", str(len(payload)))
            handler.end_headers()
            handler.wfile.write(payload)
        except OSError:
            pass  # the client gave up waiting (a timeout test)

    def _check(self, fields: dict[str, str], now: float) -> None:
        """PVOutput's rules for one status; raises Refused(400, ...)."""
        unknown = set(fields) - STATUS_KEYS
        if unknown:
            raise Refused(400, f"Bad request 400: Unknown parameter {sorted(unknown)}")
        if not re.fullmatch(r"\d{8}", fields.get("d", "")):
            raise Refused(400, f"Bad request 400: Invalid date format [{fields.get('d', '')}]")
        if not re.fullmatch(r"\d{2}:\d{2}", fields.get("t", "")):
            raise Refused(400, f"Bad request 400: Invalid time format [{fields.get('t', '')}]")
        try:
            when = datetime.strptime(fields["d"] + fields["t"], "%Y%m%d%H:%M").replace(tzinfo=self.tz)
        except ValueError:
            raise Refused(400, f"Bad request 400: Invalid date or time [{fields['d']} {fields['t']}]") from None
        local_now = datetime.fromtimestamp(now, self.tz)
        if when > local_now:
            raise Refused(400, f"Bad request 400: Date is in the future [{fields['d']} {fields['t']}]")
        if when.date() < local_now.date() - timedelta(days=MAX_AGE_DAYS):
            raise Refused(400, f"Bad request 400: Date is older than {MAX_AGE_DAYS} days [{fields['d']}]")
        if not any(fields.get(k) for k in ("v1", "v2", "v3", "v4")):
            raise Refused(400, "Bad request 400: Missing required data (v1, v2, v3 or v4)")
        for key in ("v1", "v2", "v3", "v4"):
            if fields.get(key) and not re.fullmatch(r"-?\d+", fields[key]):
                raise Refused(400, f"Bad request 400: Could not read [{key}]")
        for key in ("v5", "v6"):
            if fields.get(key) and not re.fullmatch(r"-?\d+(\.\d+)?", fields[key]):
                raise Refused(400, f"Bad request 400: Could not read [{key}]")

    def _take(self, system: int, fields: dict[str, str], now: float, service: str) -> None:
        kept = {k: v for k, v in fields.items() if v != ""}
        self.statuses[(system, fields["d"], fields["t"])] = kept
        self.log.append(Submission(system, kept, now, service))

    def _add_status(self, system: int, params: dict[str, str], now: float) -> str:
        self._check(params, now)
        self._take(system, params, now, "addstatus.jsp")
        return "OK 200: Added Status"

    def _add_batch(self, system: int, params: dict[str, str], now: float) -> str:
        if set(params) - {"data", "c1", "n"}:
            raise Refused(400, f"Bad request 400: Unknown parameter {sorted(set(params) - {'data', 'c1', 'n'})}")
        items = [item for item in params.get("data", "").split(";") if item]
        if not items:
            raise Refused(400, "Bad request 400: Missing required data")
        if len(items) > MAX_BATCH:
            raise Refused(400, f"Bad request 400: Maximum of {MAX_BATCH} statuses per request")
        answers = []
        for item in items:
            values = item.split(",")
            if len(values) < 3 or len(values) > 8:
                raise Refused(400, f"Bad request 400: Could not read [{item}]")
            fields = dict(zip(("d", "t", "v1", "v2", "v3", "v4", "v5", "v6"), values))
            try:
                self._check(fields, now)
            except Refused as refused:
                if "older than" in refused.message or "future" in refused.message:
                    answers.append(f"{fields['d']},{fields['t']},0")
                    continue
                raise
            self._take(system, fields, now, "addbatchstatus.jsp")
            answers.append(f"{fields['d']},{fields['t']},1")
        return ";".join(answers)

    # -- for assertions -----------------------------------------------------------------------
    def keys(self, system: int | None = None) -> list[tuple[str, str]]:
        return sorted((d, t) for (s, d, t) in self.statuses if system is None or s == system)

    def repeats(self) -> list[tuple[int, str, str]]:
        """(system, d, t) taken more than once."""
        seen: dict[tuple[int, str, str], int] = {}
        for sub in self.log:
            key = (sub.system_id, *sub.key)
            seen[key] = seen.get(key, 0) + 1
        return sorted(key for key, n in seen.items() if n > 1)


class SimClock:
    """Simulated Unix time for the uploader and the fake server."""

    def __init__(self, start: float):
        self.now = float(start)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def at(self, when: datetime) -> None:
        self.now = when.timestamp()


def day_of(when: float, tz: tzinfo) -> date:
    return datetime.fromtimestamp(when, tz).date()
