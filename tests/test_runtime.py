"""The services' shared runtime: settings follower, publisher holder, status reporter."""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest

from appliance.runtime import PublisherHolder, SettingsFollower, StatusReporter
from appliance.settings import Settings, SettingsError, load, save
from appliance.store import Store


@pytest.fixture
def settings_file(tmp_path: Path) -> Path:
    settings = Settings()
    settings.data.dir = str(tmp_path / "data")
    settings.mqtt.enabled = False
    path = tmp_path / "solargw.toml"
    save(settings, path)
    return path


def rewrite(path: Path, **changes) -> None:
    """Save the file with ``changes`` (section -> {key: value}) the way the web UI does (replace)."""
    settings = load(path, env={})
    for section, values in changes.items():
        for key, value in values.items():
            setattr(getattr(settings, section), key, value)
    save(settings, path)


class Changes(list):
    def __call__(self, old: Settings, new: Settings) -> None:
        self.append((old, new))


# --- SettingsFollower ---------------------------------------------------------------------------

def test_follower_loads_and_validates_at_start(settings_file):
    follower = SettingsFollower(settings_file, env={})
    assert follower.settings.mqtt.enabled is False and follower.error == ""
    settings_file.write_text("[zigbee]\nchannel = 40\n")
    with pytest.raises(SettingsError, match=r"\[zigbee\] channel"):
        SettingsFollower(settings_file, env={})


def test_follower_applies_an_edit_and_calls_on_change(settings_file):
    changes = Changes()
    follower = SettingsFollower(settings_file, changes, env={})
    assert follower.check() is False and changes == []  # unchanged: one stat, nothing read
    rewrite(settings_file, mqtt={"port": 1884})
    assert follower.check() is True
    [(old, new)] = changes
    assert (old.mqtt.port, new.mqtt.port, follower.settings.mqtt.port) == (1883, 1884, 1884)
    assert follower.check() is False


@pytest.mark.parametrize("broken, reason", [
    (b"this is [not toml\n", "not valid TOML"),
    (b'[access_point]\nssid = "caf\xe9"\n', "not UTF-8"),
    (b"[mqtt]\nport = 'x'\n", "[mqtt] port: expected a whole number"),
    (b'[mqtt]\nhost = "bad host!"\n', "[mqtt] host: not a valid host name"),
])
def test_follower_keeps_the_last_good_settings(settings_file, caplog, broken, reason):
    changes = Changes()
    follower = SettingsFollower(settings_file, changes, env={})
    rewrite(settings_file, mqtt={"port": 1884})
    follower.check()
    good = follower.settings
    caplog.set_level(logging.ERROR, logger="appliance.runtime")
    settings_file.write_bytes(broken)
    assert follower.check() is True
    assert follower.settings is good and reason in follower.error and len(changes) == 1
    for _ in range(3):  # polled again (and again): the reason is logged once
        follower.request_reload("test")
        follower.check()
    assert follower.settings is good
    logged = [r for r in caplog.records if reason in r.getMessage()]
    assert len(logged) == 1 and "keeping the settings in use" in logged[0].getMessage()
    rewrite(settings_file.with_name("fixed.toml"), mqtt={"port": 1885})
    settings_file.with_name("fixed.toml").replace(settings_file)  # fixed: taken into use at once
    assert follower.check() is True and follower.error == ""
    assert follower.settings.mqtt.port == 1885 and len(changes) == 2


def test_follower_logs_a_new_error_again_after_it_cleared(settings_file, caplog):
    follower = SettingsFollower(settings_file, env={})
    caplog.set_level(logging.ERROR, logger="appliance.runtime")
    for _ in range(2):
        settings_file.write_text("[zigbee]\nchannel = 40\n")
        follower.check()
        save(Settings(), settings_file)
        follower.check()
        assert follower.error == ""
    assert sum("zigbee] channel" in r.getMessage() for r in caplog.records) == 2


def test_follower_reload_request_reads_an_unchanged_file(settings_file, caplog):
    follower = SettingsFollower(settings_file, env={})
    caplog.set_level(logging.INFO, logger="appliance.runtime")
    follower.request_reload()  # what the SIGHUP handler does
    assert follower.check() is True
    assert "SIGHUP: reloading the settings" in caplog.text


def test_follower_keeps_the_settings_when_the_file_disappears(settings_file):
    follower = SettingsFollower(settings_file, env={})
    rewrite(settings_file, mqtt={"port": 1884})
    follower.check()
    settings_file.unlink()
    assert follower.check() is True
    assert follower.settings.mqtt.port == 1884 and "missing" in follower.error


def test_follower_without_a_file_yet_uses_defaults_until_one_appears(tmp_path):
    path = tmp_path / "solargw.toml"
    follower = SettingsFollower(path, env={})
    follower.request_reload()
    assert follower.check() is True and follower.error == "" and follower.settings == Settings()
    rewrite(path, mqtt={"port": 1884})
    assert follower.check() is True and follower.settings.mqtt.port == 1884


def test_follower_adjusts_before_validating(settings_file):
    def on_interface(settings: Settings) -> Settings:
        settings.access_point.interface = "ap0"
        return settings

    follower = SettingsFollower(settings_file, adjust=on_interface, env={})
    assert follower.settings.access_point.interface == "ap0"
    rewrite(settings_file, mqtt={"port": 1884})
    follower.check()
    assert follower.settings.access_point.interface == "ap0"


def test_follower_adopt_uses_what_this_process_wrote(settings_file):
    changes = Changes()
    follower = SettingsFollower(settings_file, changes, env={})
    rewrite(settings_file, system={"timezone": "Europe/Paris"})
    follower.adopt(load(settings_file, env={}))
    assert len(changes) == 1 and follower.settings.system.timezone == "Europe/Paris"
    assert follower.check() is False  # its own write is not read back


def test_follower_sets_the_local_time_zone(settings_file):
    import os

    follower = SettingsFollower(settings_file, env={})
    rewrite(settings_file, system={"timezone": "Pacific/Kiritimati"})
    follower.check()
    assert os.environ["TZ"] == "Pacific/Kiritimati" and time.localtime(1_700_000_000).tm_hour == 12


def test_follower_survives_a_failing_on_change(settings_file, caplog):
    def broken(_old, _new):
        raise RuntimeError("bug in the service")

    follower = SettingsFollower(settings_file, broken, env={})
    rewrite(settings_file, mqtt={"port": 1884})
    assert follower.check() is True  # the caller (a request, a loop tick) goes on
    assert follower.settings.mqtt.port == 1884 and "bug in the service" in caplog.text


def test_follower_without_a_file_follows_nothing():
    follower = SettingsFollower(None, settings=Settings())
    assert follower.check() is False


# --- PublisherHolder --------------------------------------------------------------------------

class Recorder:
    """A stand-in publisher of our own Publisher protocol that records what happens to it."""

    def __init__(self, events: list, name: str, fail: bool = False):
        self.events, self.name, self.fail = events, name, fail
        self.closed = threading.Event()

    def publish(self, recorded):
        if self.fail:
            raise RuntimeError("broken publisher")
        self.events.append(("publish", self.name, recorded))

    def publish_status(self, status):
        self.events.append(("status", self.name, dict(status)))

    def remove(self, serial):
        self.events.append(("remove", self.name, serial))

    def close(self):
        time.sleep(0.2)  # a real one waits for its queue and the broker
        self.events.append(("close", self.name))
        self.closed.set()


def mqtt_settings(port: int) -> Settings:
    settings = Settings()
    settings.mqtt.port = port
    return settings


def test_holder_makes_the_publisher_on_first_use():
    events: list = []
    made = []

    def make(settings):
        made.append(settings.mqtt.port)
        return Recorder(events, f"p{settings.mqtt.port}")

    holder = PublisherHolder(make, mqtt_settings(1883))
    assert made == []
    holder.publish("r1")
    assert holder.get() is holder.get() and made == [1883]
    assert events == [("publish", "p1883", "r1")]


def test_holder_swaps_new_first_and_closes_the_old_off_the_callers_path():
    events: list = []
    publishers = {}

    def make(settings):
        events.append(("make", settings.mqtt.port))
        publishers[settings.mqtt.port] = Recorder(events, f"p{settings.mqtt.port}")
        return publishers[settings.mqtt.port]

    holder = PublisherHolder(make, mqtt_settings(1883))
    holder.get()
    same = mqtt_settings(1883)
    same.web.port = 8080
    assert holder.update(same) is False and holder.get() is publishers[1883]
    started = time.monotonic()
    assert holder.update(mqtt_settings(1884)) is True
    assert time.monotonic() - started < 0.15, "the caller waited for the old publisher to close"
    assert holder.get() is publishers[1884]
    holder.publish("r2")
    assert publishers[1883].closed.wait(5)
    assert events.index(("make", 1884)) < events.index(("close", "p1883"))
    assert ("publish", "p1884", "r2") in events and not any(e[:2] == ("publish", "p1883") for e in events)


def test_holder_not_used_yet_swaps_lazily():
    made = []
    holder = PublisherHolder(lambda s: made.append(s.mqtt.port) or Recorder([], "p"), mqtt_settings(1883))
    holder.update(mqtt_settings(1884))
    assert made == []
    holder.get()
    assert made == [1884]


def test_holder_never_raises_into_its_callers(caplog):
    def broken_make(_settings):
        raise ValueError("bad CA file")

    holder = PublisherHolder(broken_make, Settings())
    holder.publish("r")
    holder.publish_status({"inverters": 1})
    assert holder.get() is None and "cannot start the MQTT publisher" in caplog.text
    failing = PublisherHolder(lambda s: Recorder([], "p", fail=True), Settings())
    failing.publish("r")
    assert "broken publisher" in caplog.text


def test_holder_with_a_fixed_publisher_ignores_settings():
    fixed = Recorder([], "fixed")
    holder = PublisherHolder(lambda _s: fixed, mqtt_settings(1883), follow_settings=False)
    holder.get()
    assert holder.update(mqtt_settings(1884)) is False and holder.get() is fixed


def test_holder_mqtt_off_is_no_publisher():
    holder = PublisherHolder(lambda s: None, Settings())
    holder.publish("r")
    holder.remove("123")
    assert holder.get() is None


@pytest.mark.slow
def test_holder_moves_a_real_publisher_to_another_broker(tmp_path):
    from brokers import mosquitto

    from appliance.mqtt import make_publisher

    with mosquitto() as first, mosquitto() as second, first.subscribe("solargw/#") as old_log, \
            second.subscribe("solargw/#") as new_log:
        settings = Settings()
        settings.mqtt = first.mqtt_settings()
        holder = PublisherHolder(lambda s: make_publisher(s, "web"), settings)
        holder.publish_status({"inverters": 1})
        old_log.wait("solargw/web/availability", lambda m: m.payload == b"online")
        moved = Settings()
        moved.mqtt = second.mqtt_settings()
        assert holder.update(moved) is True
        holder.publish_status({"inverters": 2})
        new_log.wait("solargw/web/status", lambda m: b'"inverters":2' in m.payload.replace(b" ", b""))
        old_log.wait("solargw/web/availability", lambda m: m.payload == b"offline")  # the old one closed
        holder.close()


# --- StatusReporter ---------------------------------------------------------------------------

class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_reporter_writes_changes_and_a_heartbeat(tmp_path):
    store = Store(tmp_path)
    clock = Clock()
    reporter = StatusReporter("net", store, heartbeat=60, clock=clock)
    assert reporter.report({"state": "running"}) is True
    written_at = store.status()["net"][0]
    clock.now += 30
    assert reporter.report({"state": "running"}) is False  # unchanged, heartbeat not due
    assert reporter.report({"state": "degraded"}) is True
    assert store.status()["net"][1] == {"state": "degraded"}
    clock.now += 59
    assert reporter.report({"state": "degraded"}) is False
    clock.now += 1
    assert reporter.report({"state": "degraded"}) is True  # the heartbeat: still alive
    assert store.status()["net"][0] >= written_at
    reporter.force()
    assert reporter.report({"state": "degraded"}) is True
    store.close()


def test_reporter_store_may_be_chosen_per_write(tmp_path):
    stores = [Store(tmp_path / "a"), Store(tmp_path / "b")]
    current = [stores[0]]
    reporter = StatusReporter("net", lambda: current[0], heartbeat=60, clock=Clock())
    reporter.report({"state": "running"})
    current[0] = stores[1]
    reporter.report({"state": "stopped"})
    assert stores[0].status()["net"][1] == {"state": "running"}
    assert stores[1].status()["net"][1] == {"state": "stopped"}
    for store in stores:
        store.close()


class FullDisk:
    def set_status(self, component, data):
        import sqlite3

        raise sqlite3.OperationalError("database or disk is full")


def test_reporter_failing_store_is_logged_once_and_retried(tmp_path, caplog):
    published = []
    reporter = StatusReporter("zigbee", FullDisk(), publish=published.append, heartbeat=60, clock=Clock())
    for _ in range(3):
        assert reporter.report({"state": "running"}) is False
    assert sum("cannot write the zigbee status" in r.getMessage() for r in caplog.records) == 1
    assert len(published) == 3  # the other sink still hears it
    reopened = Store(tmp_path)
    reporter.store = reopened
    assert reporter.report({"state": "running"}) is True  # not written before: written now
    assert reopened.status()["zigbee"][1] == {"state": "running"}
    reopened.close()
