"""The energy ledger where it lives: the store's columns, and the real gunicorn collector over HTTP."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import requests

from appliance.sim import nep_inverters
from appliance.energy import LEDGER_FIELDS
from appliance.protocols import nep
from appliance.store import Store
from factories import nep_reading
from server import running_web

T0 = 1_750_000_000.0


def test_a_database_from_before_the_mark_gets_the_new_columns_and_keeps_counting(tmp_path: Path):
    db = sqlite3.connect(tmp_path / "solargw.db")
    db.executescript(
        "CREATE TABLE ledger (serial TEXT PRIMARY KEY, total_wh REAL NOT NULL,"
        " last_counter_wh REAL, last_timestamp REAL);"
        f"INSERT INTO ledger VALUES ('12345678', 1150.0, 950.0, {T0});"
    )
    db.commit()
    db.close()
    store = Store(tmp_path)
    with sqlite3.connect(tmp_path / "solargw.db") as db:
        columns = [row[1] for row in db.execute("PRAGMA table_info(ledger)")]
    assert columns == ["serial", *LEDGER_FIELDS]
    recorded = store.record(nep_reading(today_wh=1000.0, timestamp=T0 + 300))
    assert (recorded.lifetime_wh, recorded.delta_wh) == (1200.0, 50.0)  # from the old last counter
    recorded = store.record(nep_reading(today_wh=0.0, timestamp=T0 + 600))
    recorded = store.record(nep_reading(today_wh=1010.0, timestamp=T0 + 900))
    assert recorded.lifetime_wh == 1210.0
    Store(tmp_path).close()  # opening it again changes nothing
    store.close()


# --- through HTTP: the cases of issue 14 on the real collector -----------------------------

CASES = {
    # name: (daily counter values posted in order, true lifetime total)
    "glitch to zero": ([100, 110, 0, 115], 115),
    "late older frame": ([100, 120, 110, 130], 130),
    "alternating forgeries": ([0, 130] * 50, 130),
    "real restart": ([100, 110, 0, 2, 5, 9], 119),
    "duplicates": ([100, 100, 110, 110, 110, 120], 120),
}
SERIALS = {name: f"{0x7E000000 + i:08x}" for i, name in enumerate(CASES)}


@pytest.fixture(scope="module")
def posted(tmp_path_factory):
    """One collector; every case posted by its own inverter, frame by frame, as an inverter does."""
    with running_web(tmp_path_factory.mktemp("ledger")) as web:
        for name, (values, _) in CASES.items():
            for wh in values:
                body = nep.encode_i(serial=SERIALS[name], model="bdm400", ac_power_w=200.0, energy_today_wh=wh)
                reply = nep_inverters.post(web.url, "/i.php", body)
                assert reply.status == 200 and len(reply.body) == 14, (reply, web.log())
        data = requests.get(web.url + "data.json", timeout=10).json()
        api = {inv["serial"]: inv for inv in requests.get(web.url + "api/inverters", timeout=10).json()}
        yield data, api, web.store().counters()


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_the_lifetime_total_over_http_is_exact(posted, name):
    data, api, counters = posted
    values, truth = CASES[name]
    serial = SERIALS[name]
    assert data[serial]["lifetime_wh"] == pytest.approx(truth)
    assert api[serial]["lifetime_wh"] == pytest.approx(truth)
    assert data[serial]["energy_today_wh"] == pytest.approx(truth)  # all posted today
    assert data[serial]["fields"]["energy_today_wh"] == pytest.approx(values[-1])  # the last frame, decoded


@pytest.mark.slow
def test_every_frame_was_recorded(posted):
    _, _, counters = posted
    assert counters[("readings_recorded", "nep")] == sum(len(values) for values, _ in CASES.values())
