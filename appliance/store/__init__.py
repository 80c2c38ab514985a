"""The readings store (see :mod:`appliance.store.core` for the design and its figures).

- ``core``: :class:`Store`, the API both services and the web app use;
- ``schema``: the tables of the card database and of the RAM working copy;
- ``card``: the card database, opened read-only when its file system is;
- ``journal``: the redo journal on the card (one record per loss window);
- ``flush``: the write-behind (journal records, database commits, health, the flusher thread);
- ``history``: the history tables on the card (per day, then per month);
- ``codec``: how history rows keep their fields on the card.
"""
from appliance.store.batch import CHANGES_KEPT
from appliance.store.card import StoreError
from appliance.store.core import (
    COMPACT_EVERY_SECONDS, FLUSH_SECONDS, HISTORY_SECONDS, QUEUE_LIMIT, REJECTED_KEPT, Store,
    local_day, ram_path,
)
from appliance.store.flush import FRAMES_KEPT
from appliance.store.history import BUCKET_SECONDS
from appliance.store.records import InverterInfo, LatestReading, Recorded, RejectedFrame, StoreHealth
from appliance.store.schema import DB_NAME, RAM_DB_NAME

__all__ = [
    "BUCKET_SECONDS", "CHANGES_KEPT", "COMPACT_EVERY_SECONDS", "DB_NAME", "FLUSH_SECONDS", "FRAMES_KEPT",
    "HISTORY_SECONDS", "QUEUE_LIMIT", "RAM_DB_NAME", "REJECTED_KEPT", "InverterInfo", "LatestReading",
    "Recorded", "RejectedFrame", "Store", "StoreError", "StoreHealth", "local_day", "ram_path",
]
