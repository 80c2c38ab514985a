"""PVOutput's r2 API as this uploader speaks it: requests built and answers read, no I/O.

The documented facts this module relies on (PVOutput's API specification,
``pvoutput.org/help/api_specification.html``; the limits also as client projects
and PVOutput's forum state them):

* Authentication: the headers ``X-Pvoutput-Apikey`` and ``X-Pvoutput-SystemId`` on
  every request. Requests here are POSTs, so the key never appears in a URL or a log.
* Add Status (``addstatus.jsp``): ``d`` date ``yyyymmdd`` and ``t`` time ``hh:mm``, both
  in the system's local time; ``v1`` energy generation (Wh), ``v2`` power generation (W),
  ``v5`` temperature (°C, decimal), ``v6`` voltage (V, decimal). Without ``c1``, ``v1`` is
  the energy generated so far *that day*. ``c1=1`` ("cumulative") says ``v1`` and ``v3``
  are lifetime counters instead: PVOutput then takes the day's energy as the counter
  minus its first value of the day (see :mod:`appliance.pvoutput.aggregate` for why
  we send energy-today and no ``c1``).
* Add Batch Status (``addbatchstatus.jsp``): one ``data`` parameter, statuses separated
  by ``;``, each ``d,t,v1,v2,v3,v4,v5,v6`` (a field may be empty); at most 30 statuses
  a request (100 in donation mode). The answer lists ``d,t,flag`` per status, ``;``
  separated: flag 1 when the status was added or updated, 0 when it was not.
* Age: statuses are taken for today and up to 14 days back (90 in donation mode),
  never for a time in the future.
* Rate limit: 60 requests an hour per API key, whatever the service (300 in donation
  mode). With the request header ``X-Rate-Limit: 1`` every answer carries
  ``X-Rate-Limit-Remaining``, ``X-Rate-Limit-Limit`` and ``X-Rate-Limit-Reset`` (Unix
  time, UTC, when the hour's count starts again).
* Answers are one line of plain text: ``OK 200: Added Status`` on success; errors
  ``Unauthorized 401: Invalid API Key`` (or ``Invalid System ID``, ``Disabled API Key``),
  ``Forbidden 403: Read only key``, ``Forbidden 403: Exceeded number of requests per hour
  allowed`` (the rate limit), ``Bad request 400: <why>`` for a status PVOutput will not
  take (too old, in the future, "Moon Powered" for generation it finds impossible...).

Not relied on: what PVOutput does with a second status for a (date, time) it already
holds (the batch answer's "added or updated" says it replaces it). Every status carries
absolute values (energy so far today, power now), never an increment, so a status
sent twice, such as the retry after a timeout whose request did arrive, counts nothing
twice whichever PVOutput does.

Only the standard (non-donation) limits are used: they hold for every account.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Mapping

ADD_STATUS = "addstatus.jsp"
ADD_BATCH_STATUS = "addbatchstatus.jsp"
DEFAULT_BASE_URL = "https://pvoutput.org/service/r2"

BATCH_SIZE = 30
"""Statuses in one Add Batch Status request."""
MAX_AGE_DAYS = 14
"""PVOutput takes statuses dated today and up to this many days back."""
REQUESTS_PER_HOUR = 60
"""Requests an hour per API key, every service together."""
INTERVALS_MINUTES = (5, 10, 15)
"""The status intervals a PVOutput system can be set to (its "Status Interval")."""


@dataclass(frozen=True)
class Status:
    """One status of one PVOutput system: what ``d,t,v1,v2,v5,v6`` say."""

    system_id: int
    date: str
    """``yyyymmdd``, the system's local date."""
    time: str
    """``hh:mm``, the system's local time (a multiple of the status interval)."""
    energy_wh: int
    """v1: energy generated so far that day."""
    power_w: int
    """v2: the inverters' AC power together."""
    temperature_c: float | None = None
    """v5: mean inverter temperature."""
    voltage_v: float | None = None
    """v6: mean AC voltage."""

    @property
    def key(self) -> tuple[str, str]:
        return self.date, self.time


def _decimal(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def headers(api_key: str, system_id: int) -> dict[str, str]:
    """The authentication headers, and the one asking for the rate-limit headers in the answer."""
    return {
        "X-Pvoutput-Apikey": api_key,
        "X-Pvoutput-SystemId": str(system_id),
        "X-Rate-Limit": "1",
    }


def add_status_form(status: Status) -> dict[str, str]:
    """The form fields of one Add Status request (empty optional values left out)."""
    form = {"d": status.date, "t": status.time, "v1": str(status.energy_wh), "v2": str(status.power_w)}
    if status.temperature_c is not None:
        form["v5"] = _decimal(status.temperature_c)
    if status.voltage_v is not None:
        form["v6"] = _decimal(status.voltage_v)
    return form


def batch_form(statuses: Iterable[Status]) -> dict[str, str]:
    """The form of one Add Batch Status request: ``data=d,t,v1,v2,,,v5,v6;...`` (v3, v4 empty)."""
    rows = [
        ",".join((s.date, s.time, str(s.energy_wh), str(s.power_w), "", "",
                  _decimal(s.temperature_c), _decimal(s.voltage_v)))
        for s in statuses
    ]
    if not rows:
        raise ValueError("a batch needs at least one status")
    if len(rows) > BATCH_SIZE:
        raise ValueError(f"a batch holds at most {BATCH_SIZE} statuses, not {len(rows)}")
    return {"data": ";".join(rows)}


# --- answers ----------------------------------------------------------------------------------

OK, REJECTED, AUTH, RATE_LIMITED, TRANSIENT = "ok", "rejected", "auth", "rate_limited", "transient"
"""What an answer means for the uploader:

* ``ok``: PVOutput took the request;
* ``rejected``: the status itself is refused (400): sending it again cannot help;
* ``auth``: the key or system id is wrong, disabled or read-only (401, 403 but the rate
  limit): nothing can be sent until the user fixes it;
* ``rate_limited``: the hour's requests are used up (403): wait for the reset;
* ``transient``: anything else (5xx, an unexpected answer): try again later.
"""


@dataclass(frozen=True)
class RateLimit:
    remaining: int | None = None
    limit: int | None = None
    reset: float | None = None
    """Unix time when the hour's count starts again."""


@dataclass(frozen=True)
class Answer:
    kind: str
    code: int
    message: str
    """PVOutput's text, e.g. ``Unauthorized 401: Invalid API Key``."""
    rate: RateLimit = RateLimit()


def _int(value: str | None) -> int | None:
    try:
        return int(str(value).strip()) if value is not None else None
    except ValueError:
        return None


def rate_limit(answer_headers: Mapping[str, str]) -> RateLimit:
    """The ``X-Rate-Limit-*`` headers (case-insensitive; absent or unreadable ones are None)."""
    lower = {k.lower(): v for k, v in answer_headers.items()}
    reset = _int(lower.get("x-rate-limit-reset"))
    return RateLimit(_int(lower.get("x-rate-limit-remaining")), _int(lower.get("x-rate-limit-limit")),
                     float(reset) if reset is not None else None)


def classify(code: int, body: str, answer_headers: Mapping[str, str]) -> Answer:
    """What an HTTP answer from PVOutput means (see the kinds above)."""
    message = " ".join(body.split())[:300] or f"HTTP {code}"
    rate = rate_limit(answer_headers)
    if code == 200:
        kind = OK
    elif code == 400:
        kind = REJECTED
    elif code == 401:
        kind = AUTH
    elif code == 403:
        kind = RATE_LIMITED if "exceeded" in message.lower() or rate.remaining == 0 else AUTH
    else:
        kind = TRANSIENT
    return Answer(kind, code, message, rate)


_BATCH_ITEM = re.compile(r"^(\d{8}),(\d{2}:\d{2}),([01])$")


def batch_results(body: str) -> dict[tuple[str, str], bool]:
    """``{(d, t): added or updated}`` from an Add Batch Status answer; items it cannot read are left out."""
    results = {}
    for item in body.strip().split(";"):
        match = _BATCH_ITEM.match(item.strip())
        if match:
            results[(match.group(1), match.group(2))] = match.group(3) == "1"
    return results


def explain(answer: Answer) -> str:
    """A short text for the status page: what is wrong, in the user's terms, then PVOutput's own words."""
    lower = answer.message.lower()
    if answer.kind == AUTH:
        if "system id" in lower:
            reason = "invalid system id"
        elif "read only" in lower:
            reason = "the API key is a read-only key"
        elif "disabled" in lower:
            reason = "API access is disabled on PVOutput (Settings, API Access)"
        else:
            reason = "invalid API key"
        return f"{reason} ({answer.message})"
    if answer.kind == RATE_LIMITED:
        return f"rate limit reached ({answer.message})"
    if answer.kind == REJECTED:
        return f"status refused ({answer.message})"
    return f"PVOutput answered {answer.message}"
