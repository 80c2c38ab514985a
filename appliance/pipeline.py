"""The one path from a decoded frame to everything downstream.

Both services (the web collector for NEP, the Zigbee service for Enecsys) call
``Pipeline.handle`` with a ``Reading``: it is stored (latest, history, energy
ledger), then published over MQTT. Live UI events need no call of their own:
the web process watches the store's change log, which also sees the other
process's writes. Publishing never raises into the caller and never blocks it:
the inverter's reply must not wait for a broker.

A reading of a serial the store does not know yet passes :class:`~appliance.admission.Admission`
first (new inverters per hour and in total); a refused one is kept with the rejected frames and
counted as ``inverters_refused``.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Protocol

from appliance.admission import Admission, Limits
from appliance.lograte import RateLimitedLog
from appliance.reading import Reading
from appliance.store import Recorded, Store

log = logging.getLogger(__name__)
refused_log = RateLimitedLog(log, "new inverters refused")
RECEIVED = ("packets_received",)


class Publisher(Protocol):
    def publish(self, recorded: Recorded) -> None: ...
    def publish_status(self, status: dict[str, Any]) -> None: ...
    def remove(self, serial: str) -> None: ...
    def close(self) -> None: ...


class Pipeline:
    def __init__(self, store: Store, publisher: Publisher | None = None, limits: Callable[[], Any] = Limits):
        """``limits()``: the new-inverter caps in use (``settings.data``; the defaults when not given)."""
        self.store = store
        self.publisher = publisher
        self.admission = Admission(store, limits)

    def handle(self, reading: Reading, source: str = "") -> Recorded | None:
        """Record and publish a reading; a frame that failed its checksum is rejected instead.
        Either way the packet costs one database transaction, or joins the store's open batch
        (``Store.batch``: then it is published once the batch is committed)."""
        if not reading.checksum_ok:
            self.store.reject(
                frame=reading.frame, family=reading.family, source=source,
                reason="checksum mismatch", timestamp=reading.timestamp, also_count=RECEIVED,
            )
            return None
        refused = self.admission.admit(reading.serial)
        if refused:
            refused_log.warning("%s (from %s)", refused, source or "?")
            self.store.reject(frame=reading.frame, family=reading.family, source=source, reason=refused,
                              timestamp=reading.timestamp, also_count=RECEIVED + ("inverters_refused",))
            return None
        recorded = self.store.record(reading, source=source, also_count=RECEIVED)
        if self.publisher is not None:
            self.store.after_commit(lambda: self._publish(recorded))  # inside a batch: once it is committed
        return recorded

    def _publish(self, recorded: Recorded) -> None:
        try:
            self.publisher.publish(recorded)  # type: ignore[union-attr]
        except Exception:  # a publisher bug must not lose the stored reading
            log.exception("publishing %s failed", recorded.reading.serial)

    def reject(self, frame: bytes, family: str | None, source: str, reason: str,
               timestamp: float | None = None, also_count: tuple[str, ...] = ()) -> None:
        """Count and keep a frame that could not be decoded at all (or must not be recorded);
        ``also_count`` names counters of the reason."""
        self.store.reject(frame=frame, family=family, source=source, reason=reason,
                          timestamp=time.time() if timestamp is None else timestamp,
                          also_count=(*RECEIVED, *also_count))

    def remove(self, serial: str) -> None:
        """Hide an inverter and clear its Home Assistant discovery."""
        self.store.remove(serial)
        self.admission.forget(serial)
        if self.publisher is not None:
            try:
                self.publisher.remove(serial)
            except Exception:
                log.exception("clearing discovery of %s failed", serial)
