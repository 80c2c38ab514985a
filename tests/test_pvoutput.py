"""PVOutput upload: the pure request building and aggregation, then the uploader against a local
fake PVOutput (tests/fake_pvoutput.py) on simulated time: upload, backfill after an outage,
restart with a queue, rate limits, a bad key, refused statuses, retries that count nothing twice."""
from __future__ import annotations

import math
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from appliance.pvoutput import aggregate, api, uploader as uploader_module
from appliance.pvoutput.api import Status
from appliance.pvoutput.uploader import Uploader
from appliance.reading import EnergyCounter, Reading
from appliance.settings import Settings, apply_timezone, from_dict
from appliance.store import Store
from fake_pvoutput import FakePVOutput, SimClock

TZ = ZoneInfo("Europe/Berlin")
SYSTEM = 4321
DAY = datetime(2026, 6, 15, tzinfo=TZ)


def at(hh: int, mm: int = 0, ss: int = 0) -> float:
    return DAY.replace(hour=hh, minute=mm, second=ss).timestamp()


def reading(serial: str, when: float, *, power: float, counter: EnergyCounter, temperature: float | None = None,
            voltage: float | None = None) -> Reading:
    fields = {"ac_power_w": power, "state": "producing"}
    if temperature is not None:
        fields["temperature_c"] = temperature
    if voltage is not None:
        fields["ac_voltage_v"] = voltage
    family = "nep" if counter.kind == "daily" else "enecsys"
    return Reading(family=family, serial=serial, model="", kind="report", fields=fields, raw={},
                   frame=serial.encode(), checksum_ok=True, timestamp=when, energy=counter)


def settings_for(fake: FakePVOutput, **pvoutput) -> Settings:
    settings = from_dict({
        "system": {"timezone": "Europe/Berlin"},
        "pvoutput": {"enabled": True, "api_key": fake.api_key, "system_id": SYSTEM, "base_url": fake.base_url,
                     **pvoutput},
    })
    apply_timezone(settings)  # the store's "today" is the process's local day, as in the services
    return settings


@pytest.fixture
def clock():
    return SimClock(at(6))


@pytest.fixture
def fake(clock):
    with FakePVOutput(clock=clock, tz=TZ, systems=(SYSTEM, 9876)) as server:
        yield server


@pytest.fixture
def store(tmp_path):
    store = Store(tmp_path)
    yield store
    store.close()


# --- pure parts -------------------------------------------------------------------------------

def test_add_status_form_has_the_documented_parameters():
    status = Status(SYSTEM, "20260615", "12:05", 2500, 612, 39.83, 231.04)
    assert api.add_status_form(status) == {"d": "20260615", "t": "12:05", "v1": "2500", "v2": "612",
                                           "v5": "39.8", "v6": "231.0"}
    assert api.add_status_form(Status(SYSTEM, "20260615", "12:05", 0, 0)) == {
        "d": "20260615", "t": "12:05", "v1": "0", "v2": "0"}
    assert api.headers("key", SYSTEM) == {"X-Pvoutput-Apikey": "key", "X-Pvoutput-SystemId": "4321",
                                          "X-Rate-Limit": "1"}


def test_batch_form_is_d_t_v1_to_v6_and_holds_at_most_30():
    one = Status(SYSTEM, "20260615", "12:05", 2500, 612, 39.8, None)
    two = Status(SYSTEM, "20260615", "12:10", 2550, 600, None, 230.0)
    assert api.batch_form([one, two]) == {"data": "20260615,12:05,2500,612,,,39.8,;20260615,12:10,2550,600,,,,230.0"}
    api.batch_form([one] * 30)
    with pytest.raises(ValueError):
        api.batch_form([one] * 31)
    with pytest.raises(ValueError):
        api.batch_form([])


@pytest.mark.parametrize("code,body,headers,kind", [
    (200, "OK 200: Added Status", {}, api.OK),
    (400, "Bad request 400: Date is older than 14 days [20260501]", {}, api.REJECTED),
    (401, "Unauthorized 401: Invalid API Key", {}, api.AUTH),
    (401, "Unauthorized 401: Invalid System ID", {}, api.AUTH),
    (403, "Forbidden 403: Read only key", {}, api.AUTH),
    (403, "Forbidden 403: Exceeded number of requests per hour allowed", {}, api.RATE_LIMITED),
    (403, "Forbidden", {"X-Rate-Limit-Remaining": "0"}, api.RATE_LIMITED),
    (500, "<html>oops</html>", {}, api.TRANSIENT),
    (503, "", {}, api.TRANSIENT),
])
def test_answers_are_classified(code, body, headers, kind):
    assert api.classify(code, body, headers).kind == kind


def test_rate_limit_headers_and_batch_answers_are_read():
    rate = api.rate_limit({"x-rate-limit-remaining": "12", "X-Rate-Limit-Limit": "60", "X-Rate-Limit-Reset": "1781532000"})
    assert rate == api.RateLimit(12, 60, 1781532000.0)
    assert api.rate_limit({"X-Rate-Limit-Remaining": "many"}) == api.RateLimit()
    assert api.batch_results("20260615,12:05,1;20260615,12:10,0;garbage") == {
        ("20260615", "12:05"): True, ("20260615", "12:10"): False}


def test_explain_says_what_is_wrong_in_the_users_terms():
    def explain(code, body):
        return api.explain(api.classify(code, body, {}))
    assert explain(401, "Unauthorized 401: Invalid API Key").startswith("invalid API key (")
    assert explain(401, "Unauthorized 401: Invalid System ID").startswith("invalid system id (")
    assert explain(403, "Forbidden 403: Read only key").startswith("the API key is a read-only key")
    assert explain(403, "Forbidden 403: Exceeded number of requests per hour allowed").startswith("rate limit")


def test_boundary_is_the_local_interval_start():
    assert aggregate.boundary(at(12, 7, 59), TZ, 5) == DAY.replace(hour=12, minute=5)
    assert aggregate.boundary(at(12, 10), TZ, 5) == DAY.replace(hour=12, minute=10)
    assert aggregate.boundary(at(12, 14, 59), TZ, 15) == DAY.replace(hour=12, minute=0)
    assert aggregate.boundary(at(12, 7), TZ, 5).strftime("%H:%M") == "12:05"  # local time, not UTC


def test_statuses_sum_energy_and_power_and_average_temperature_and_voltage():
    inverters = [
        aggregate.InverterNow("A", 1500.0, True, {"ac_power_w": 300.0, "temperature_c": 40.0, "ac_voltage_v": 230.0}),
        aggregate.InverterNow("B", 800.0, True, {"ac_power_w": 200.0, "temperature_c": 44.0, "ac_voltage_v": 232.0}),
        aggregate.InverterNow("C", 150.0, True, {"ac_power_w": 100.0, "temperature_c": 35.5}),
        aggregate.InverterNow("D", 50.0, False, {"ac_power_w": 999.0, "temperature_c": 99.0, "ac_voltage_v": 99.0}),
    ]
    when = DAY.replace(hour=12)
    (status,) = aggregate.statuses(when, inverters, SYSTEM, {})
    assert status == Status(SYSTEM, "20260615", "12:00", 2500, 600, 39.8, 231.0)
    by_system = aggregate.statuses(when, inverters, SYSTEM, {"C": 9876, "D": 0})
    assert by_system == [Status(SYSTEM, "20260615", "12:00", 2300, 500, 42.0, 231.0),
                         Status(9876, "20260615", "12:00", 150, 100, 35.5, None)]
    assert aggregate.statuses(when, inverters, 0, {}) == []  # no system: nothing uploaded
    asleep = [aggregate.InverterNow("A", 1500.0, False, {})]
    assert aggregate.statuses(when, asleep, SYSTEM, {}) == []  # nothing online: no status


# --- the uploader against the fake PVOutput ----------------------------------------------------

def record_noon(store: Store) -> None:
    """Four inverters around noon: three online, one (D) silent since 10:00."""
    store.record(reading("A", at(11), power=250, counter=EnergyCounter("daily", 1000), temperature=38, voltage=229))
    store.record(reading("A", at(12, 2), power=300, counter=EnergyCounter("daily", 1500), temperature=40, voltage=230))
    store.record(reading("B", at(12, 2, 30), power=200, counter=EnergyCounter("daily", 800), temperature=44,
                         voltage=232))
    store.record(reading("C", at(11, 50), power=90, counter=EnergyCounter("lifetime", 1_000_000)))
    store.record(reading("C", at(12), power=100, counter=EnergyCounter("lifetime", 1_000_150), temperature=35.5,
                         voltage=231))
    store.record(reading("D", at(9), power=10, counter=EnergyCounter("lifetime", 500_000)))
    store.record(reading("D", at(10), power=20, counter=EnergyCounter("lifetime", 500_050), temperature=30,
                         voltage=240))


def test_upload_sends_one_status_with_the_systems_values(fake, store, clock):
    record_noon(store)
    clock.at(DAY.replace(hour=12, minute=3, second=20))
    up = Uploader(settings_for(fake), store, clock=clock)
    up.step()
    assert fake.statuses == {(SYSTEM, "20260615", "12:00"): {
        "d": "20260615", "t": "12:00", "v1": "2500", "v2": "600", "v5": "39.8", "v6": "231.0"}}
    assert [(service, code) for _, service, code in fake.requests] == [("addstatus.jsp", 200)]
    summary = store.pvoutput_summary()[SYSTEM]
    assert summary["queued"] == 0 and (summary["last_sent"]["date"], summary["last_sent"]["time"]) == ("20260615", "12:00")
    snapshot = up.snapshot()
    assert snapshot["last_success"] == clock.now and snapshot["last_error"] == ""
    assert snapshot["rate_remaining"] == 59 and snapshot["requests_last_hour"] == 1
    up.step()  # the same interval: nothing new is made or sent
    assert len(fake.requests) == 1


def test_inverters_mapped_to_systems_upload_to_each(fake, store, clock):
    record_noon(store)
    clock.at(DAY.replace(hour=12, minute=3))
    up = Uploader(settings_for(fake, inverters={"C": 9876, "D": 0}), store, clock=clock)
    due = up.step()
    assert due == clock.now + uploader_module.SPACING_SECONDS  # the other system's status is next
    clock.now = due
    up.step()
    assert fake.statuses == {
        (SYSTEM, "20260615", "12:00"): {"d": "20260615", "t": "12:00", "v1": "2300", "v2": "500", "v5": "42.0",
                                        "v6": "231.0"},
        (9876, "20260615", "12:00"): {"d": "20260615", "t": "12:00", "v1": "150", "v2": "100", "v5": "35.5",
                                      "v6": "231.0"},
    }


class Plant:
    """Simulated inverters reporting every minute along a clear-sky curve (NEP daily counters and
    Enecsys lifetime counters), and the power each had at every report."""

    INVERTERS = (("N1", "daily", 400.0), ("N2", "daily", 300.0), ("E1", "lifetime", 220.0))

    def __init__(self, store: Store, clock: SimClock):
        self.store, self.clock = store, clock
        self.energy = {serial: (0.0 if kind == "daily" else 2_000_000.0) for serial, kind, _ in self.INVERTERS}
        self.power_log: dict[float, float] = {}
        self.last = None

    def power(self, serial_peak: float, when: float) -> float:
        hours = (when - at(6)) / 3600  # sunrise 06:00, sunset 20:00
        return round(serial_peak * max(0.0, math.sin(math.pi * hours / 14)), 1)

    def report(self) -> None:
        now = self.clock.now
        total = 0.0
        for serial, kind, peak in self.INVERTERS:
            power = self.power(peak, now)
            if self.last is not None:
                self.energy[serial] += power * (now - self.last) / 3600
            total += power
            self.store.record(reading(serial, now, power=power, counter=EnergyCounter(kind, self.energy[serial]),
                                      temperature=25 + power / 20, voltage=230 + power / 100))
        self.power_log[now] = total
        self.last = now


def run(up: Uploader, plant: Plant | None, clock: SimClock, until: float, fake: FakePVOutput | None = None,
        outage: tuple[float, float] | None = None) -> None:
    """Advance simulated time to ``until``: the plant reports every minute, the uploader runs when due."""
    next_report = clock.now
    due = clock.now
    while clock.now < until:
        if fake is not None and outage is not None:
            fake.down = outage[0] <= clock.now < outage[1]
        if plant is not None and clock.now >= next_report:
            plant.report()
            next_report = clock.now + 60
        if clock.now >= due:
            due = up.step()
        clock.now = min(due, next_report if plant is not None else due, until)


@pytest.mark.parametrize("hours", [2, 3])
def test_backfill_after_an_outage_fills_the_gap_with_batches(fake, store, clock, hours):
    clock.at(DAY.replace(hour=8))
    plant = Plant(store, clock)
    up = Uploader(settings_for(fake), store, clock=clock)
    outage = (at(10), at(10 + hours))
    run(up, plant, clock, at(10 + hours, 30), fake, outage)
    boundaries = [DAY.replace(hour=8) + timedelta(minutes=5 * i) for i in range((2 + hours) * 12 + 6)]
    expected = [(b.strftime("%Y%m%d"), b.strftime("%H:%M")) for b in boundaries]
    assert fake.keys(SYSTEM) == expected  # every interval of the morning, the outage's too
    assert fake.repeats() == []  # each sent once
    for b in boundaries:  # each status holds what was true at its own time, not at the upload
        status = fake.statuses[(SYSTEM, b.strftime("%Y%m%d"), b.strftime("%H:%M"))]
        assert abs(int(status["v2"]) - plant.power_log[b.timestamp()]) <= 0.5 + 1e-9
    energies = [int(fake.statuses[(SYSTEM, d, t)]["v1"]) for d, t in expected]
    assert energies == sorted(energies) and energies[-1] > 0
    batches = [sub for sub in fake.log if sub.service == "addbatchstatus.jsp"]
    gap = {key for key in expected if at(10) <= datetime.strptime(key[0] + key[1], "%Y%m%d%H:%M")
           .replace(tzinfo=TZ).timestamp() < at(10 + hours)}
    assert gap <= {sub.key for sub in batches}  # the gap went by the batch service
    batch_requests = [r for r in fake.requests if r[1] == "addbatchstatus.jsp"]
    assert len(batch_requests) == math.ceil((hours * 12 + 1) / api.BATCH_SIZE)  # 30 at most per request
    assert all(code == 200 for _, _, code in fake.requests)
    assert store.pvoutput_summary()[SYSTEM]["queued"] == 0
    # retries during the outage back off (1 minute doubling to 15), not one every pass
    assert 4 <= len(fake.dropped) <= 4 + hours * 4
    assert all(b - a >= uploader_module.RETRY_FIRST_SECONDS for a, b in zip(fake.dropped, fake.dropped[1:]))


def test_restart_with_a_queue_sends_every_status_once(fake, store, clock, tmp_path):
    clock.at(DAY.replace(hour=9))
    plant = Plant(store, clock)
    fake.down = True
    first = Uploader(settings_for(fake), store, clock=clock)
    run(first, plant, clock, at(9, 30, 10))
    assert store.pvoutput_summary()[SYSTEM]["queued"] == 7  # 09:00 ... 09:30
    assert fake.log == []
    del first  # stopped with statuses queued
    store.close()
    fake.down = False
    reopened = Store(tmp_path)
    second = Uploader(settings_for(fake), reopened, clock=clock)
    plant.store = reopened
    run(second, plant, clock, at(9, 40, 30))
    keys = fake.keys(SYSTEM)
    assert keys == [("20260615", f"09:{m:02d}") for m in range(0, 45, 5)]
    assert fake.repeats() == []  # 09:30 was made before the restart and not made again after it
    assert reopened.pvoutput_summary()[SYSTEM]["queued"] == 0
    sent = len(fake.requests)
    clock.advance(60)  # restarted again within the 09:40 interval, whose status is already sent
    third = Uploader(settings_for(fake), reopened, clock=clock)
    third.step()
    assert len(fake.requests) == sent and fake.repeats() == []
    reopened.close()


def test_a_retry_after_a_timeout_counts_nothing_twice(fake, store, clock, monkeypatch):
    monkeypatch.setattr(uploader_module, "TIMEOUT_SECONDS", 0.3)
    record_noon(store)
    clock.at(DAY.replace(hour=12, minute=3))
    up = Uploader(settings_for(fake), store, clock=clock)
    fake.answer_delay = 1.0  # PVOutput takes the status but the answer comes too late
    up.step()
    assert "cannot reach PVOutput" in up.snapshot()["last_error"]
    assert store.pvoutput_summary()[SYSTEM]["queued"] == 1  # not settled without an answer
    fake.answer_delay = 0.0
    clock.advance(uploader_module.RETRY_FIRST_SECONDS)
    up.step()
    sent = [sub.fields for sub in fake.log]
    assert len(sent) == 2 and sent[0] == sent[1]  # the same status twice: the same absolute values
    assert fake.statuses[(SYSTEM, "20260615", "12:00")]["v1"] == "2500"  # held once, not added up
    assert store.pvoutput_summary()[SYSTEM]["queued"] == 0
    assert up.snapshot()["last_error"] == ""


def test_rate_limit_answer_makes_the_uploader_wait_for_the_reset(fake, store, clock):
    record_noon(store)
    clock.at(DAY.replace(hour=12, minute=3))
    hour = int(clock.now // 3600)
    fake.used[hour] = api.REQUESTS_PER_HOUR  # another uploader on the same key used the hour up
    up = Uploader(settings_for(fake), store, clock=clock)
    up.step()
    assert fake.requests[-1][2] == 403
    snapshot = up.snapshot()
    assert snapshot["pause_reason"] == "rate limit" and snapshot["paused_until"] == (hour + 1) * 3600
    assert snapshot["last_error"].startswith("rate limit reached")
    tried = len(fake.requests)
    run(up, None, clock, (hour + 1) * 3600 - 1)
    assert len(fake.requests) == tried  # nothing sent before the reset
    run(up, None, clock, (hour + 1) * 3600 + 60)
    assert fake.requests[-1][2] == 200 and fake.keys(SYSTEM)
    assert store.pvoutput_summary()[SYSTEM]["queued"] == 0


def test_the_uploader_keeps_to_60_requests_in_any_hour(fake, store, clock):
    fake.limit = 10_000  # PVOutput would take more: the limit kept is the uploader's own
    clock.at(DAY.replace(hour=23, minute=30))
    start = DAY.replace(hour=0) - timedelta(days=6)
    backlog = [Status(SYSTEM, (start + timedelta(minutes=5 * i)).strftime("%Y%m%d"),
                      (start + timedelta(minutes=5 * i)).strftime("%H:%M"), i, 1) for i in range(65 * 30)]
    assert store.pvoutput_enqueue(backlog, made=clock.now) == len(backlog)
    up = Uploader(settings_for(fake), store, clock=clock)
    run(up, None, clock, clock.now + 2 * 3600 + 600)
    times = [when for when, _, _ in fake.requests]
    assert len(times) == 65
    assert max(sum(1 for t in times if first <= t < first + 3600) for first in times) == api.REQUESTS_PER_HOUR
    assert all(b - a >= uploader_module.SPACING_SECONDS for a, b in zip(times, times[1:]))
    assert len(fake.keys(SYSTEM)) == len(backlog) and fake.repeats() == []


def test_a_bad_api_key_is_reported_and_retried_hourly(fake, store, clock):
    record_noon(store)
    clock.at(DAY.replace(hour=12, minute=3))
    settings = settings_for(fake, api_key="not-the-right-key")
    up = Uploader(settings, store, clock=clock)
    up.step()
    assert [code for _, _, code in fake.requests] == [401]
    snapshot = up.snapshot()
    assert snapshot["last_error"] == f"system {SYSTEM}: invalid API key (Unauthorized 401: Invalid API Key)"
    assert snapshot["auth_paused"] == {SYSTEM: clock.now + uploader_module.AUTH_RETRY_SECONDS}
    run(up, None, clock, clock.now + uploader_module.AUTH_RETRY_SECONDS - 1)
    assert len(fake.requests) == 1  # no hammering with a key PVOutput refuses
    assert store.pvoutput_summary()[SYSTEM]["queued"] == 4  # 12:00 to 12:15 (online till then), kept
    run(up, None, clock, clock.now + uploader_module.POLL_SECONDS + 2)
    assert len(fake.requests) == 2


def test_an_unknown_system_id_is_reported(fake, store, clock):
    record_noon(store)
    clock.at(DAY.replace(hour=12, minute=3))
    up = Uploader(settings_for(fake, system_id=5555), store, clock=clock)
    up.step()
    assert up.snapshot()["last_error"].startswith("system 5555: invalid system id")


def test_a_refused_batch_is_sent_again_one_status_at_a_time(fake, store, clock):
    clock.at(DAY.replace(hour=12, minute=3))
    statuses = [Status(SYSTEM, "20260615", "11:50", 2000, 500), Status(SYSTEM, "20260615", "11:55", 2100, 9999),
                Status(SYSTEM, "20260615", "12:00", 2200, 520)]
    store.pvoutput_enqueue(statuses, made=clock.now)
    moon = "Bad request 400: Moon Powered"
    original = fake._check

    def check(fields, now):
        original(fields, now)
        if int(fields.get("v2") or 0) > 5000:
            raise type_refused(400, moon)
    from fake_pvoutput import Refused as type_refused
    fake._check = check
    up = Uploader(settings_for(fake), store, clock=clock)
    run(up, None, clock, clock.now + 60)
    assert [service for _, service, _ in fake.requests] == ["addbatchstatus.jsp"] + ["addstatus.jsp"] * 3
    assert fake.keys(SYSTEM) == [("20260615", "11:50"), ("20260615", "12:00")]
    summary = store.pvoutput_summary()[SYSTEM]
    assert summary["queued"] == 0
    assert summary["last_refused"]["time"] == "11:55" and summary["last_refused"]["note"] == moon


def test_statuses_too_old_for_pvoutput_expire_unsent(fake, store, clock):
    clock.at(DAY.replace(hour=12, minute=3))
    old = DAY - timedelta(days=api.MAX_AGE_DAYS)
    store.pvoutput_enqueue([Status(SYSTEM, old.strftime("%Y%m%d"), "12:00", 100, 10),
                            Status(SYSTEM, (old + timedelta(days=1)).strftime("%Y%m%d"), "12:00", 100, 10)],
                           made=clock.now)
    up = Uploader(settings_for(fake), store, clock=clock)
    up.step()
    assert fake.keys(SYSTEM) == [((old + timedelta(days=1)).strftime("%Y%m%d"), "12:00")]
    assert fake.repeats() == [] and store.pvoutput_summary()[SYSTEM]["queued"] == 0


def test_a_pass_that_fails_does_not_end_the_thread(fake, store, clock, monkeypatch):
    up = Uploader(settings_for(fake), store, clock=clock)
    calls = []

    def broken():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("database hiccup")
        up._stop.set()
        return clock.now

    monkeypatch.setattr(up, "step", broken)
    monkeypatch.setattr(uploader_module, "POLL_SECONDS", 0.01)
    up._run()
    assert len(calls) == 2
