"""The web UI through Flask's test client: login, CSRF, first visit, settings validation."""
from __future__ import annotations

import io
import re
import sqlite3
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import tomli_w
import tomllib

from appliance.settings import Settings, load, save
from appliance.store import Store
from appliance.settings import rules
from appliance.web.app import create_app
from support.readings import enecsys_reading, nep_reading
from support.waiting import wait_for
from support.webui import PASSWORD, csrf, logged_in, set_password



@pytest.fixture
def settings(settings):
    settings.access_point.passphrase = "original-passphrase"
    return settings


@pytest.fixture
def app(settings_file: Path):
    settings = load(settings_file, env={})
    store = Store(settings.data_dir, history_seconds=0)  # every reading in the history and its export
    now = time.time()
    # The last 40 minutes, but all after local midnight: the inverter page's power chart shows today.
    midnight = datetime.now(ZoneInfo(settings.system.timezone)).replace(hour=0, minute=0, second=0, microsecond=0)
    start = max(now - 2400, midnight.timestamp() + 1)
    step = (now - start) / 20
    for i in range(20):
        store.record(nep_reading("12345678", today_wh=100 + 10 * i, power_w=150 + i, timestamp=start + step * i))
    store.record(enecsys_reading(timestamp=now))
    app = create_app(settings, store)
    app.config["TESTING"] = True
    return app


def test_read_only_pages_are_open_and_show_data(app):
    client = app.test_client()
    page = client.get("/").data.decode()
    assert "NEP 12345678" in page and "Enecsys 100095471" in page
    assert "169 W" in page  # the last NEP reading's power
    inverter = client.get("/inverter/12345678").data.decode()
    assert 'class="line"' in inverter and "AC power" in inverter and "169 W" in inverter
    assert client.get("/status").status_code == 200
    assert client.get("/logs").status_code == 200
    assert client.get("/data.json").status_code == 200
    assert client.get("/inverter/nosuch").status_code == 404


def test_first_visit_sets_the_password_and_logs_in(app, settings_file):
    client = app.test_client()
    assert client.get("/settings").headers["Location"].startswith("/setup")
    page = client.get("/setup").data
    short = client.post("/setup", data={"csrf_token": csrf(page), "new_password": "short", "confirm_password": "short"})
    assert short.status_code == 200 and b"at least 8 characters" in short.data
    mismatch = client.post("/setup", data={"csrf_token": csrf(page), "new_password": PASSWORD, "confirm_password": "x" + PASSWORD})
    assert b"differ" in mismatch.data
    assert set_password(client).status_code == 302
    assert client.get("/settings").status_code == 200
    stored = load(settings_file, env={}).admin
    assert stored.password_hash.startswith(("scrypt:", "pbkdf2:")) and PASSWORD not in settings_file.read_text()
    assert stored.secret_key  # generated and persisted
    # once set, the set-up page is closed: nobody else can take the account over
    other = app.test_client()
    assert other.get("/setup").headers["Location"].endswith("/login")
    taken = other.post("/setup", data={"csrf_token": csrf(other.get("/login").data), "new_password": "attacker123", "confirm_password": "attacker123"})
    assert taken.status_code == 302 and load(settings_file, env={}).admin.password_hash == stored.password_hash


def test_login_required_for_settings_and_actions(app):
    owner = logged_in(app)
    client = app.test_client()
    assert client.get("/settings").headers["Location"].startswith("/login")
    token = csrf(client.get("/login").data)
    for url in ("/inverter/12345678/rename", "/inverter/12345678/remove", "/settings/mqtt", "/settings/import"):
        assert client.post(url, data={"csrf_token": token, "name": "x"}).status_code == 401, url
    assert client.get("/settings/export.toml").status_code == 302
    assert client.get("/settings/history.sqlite").status_code == 302
    wrong = client.post("/login", data={"csrf_token": token, "password": "wrong password"})
    assert wrong.status_code == 401 and b"Wrong password" in wrong.data
    right = client.post("/login", data={"csrf_token": token, "password": PASSWORD, "next": "/settings"})
    assert right.headers["Location"] == "/settings"
    assert client.get("/settings").status_code == 200
    assert owner.get("/settings").status_code == 200


def test_login_next_never_leaves_the_site(app):
    logged_in(app)
    client = app.test_client()
    token = csrf(client.get("/login").data)
    response = client.post("/login", data={"csrf_token": token, "password": PASSWORD, "next": "//evil.example/"})
    assert response.headers["Location"] == "/"


def test_csrf_refusal(app):
    client = logged_in(app)
    missing = client.post("/inverter/12345678/rename", data={"name": "Roof"})
    assert missing.status_code == 400 and b"security token" in missing.data
    wrong = client.post("/inverter/12345678/rename", data={"name": "Roof", "csrf_token": "forged"})
    assert wrong.status_code == 400
    assert app.extensions["solargw"].store.inverter("12345678").name == ""
    token = csrf(client.get("/inverter/12345678").data)
    assert client.post("/inverter/12345678/rename", data={"name": "Roof", "csrf_token": token}).status_code == 302
    assert app.extensions["solargw"].store.inverter("12345678").name == "Roof"
    # login itself is protected too (no login CSRF)
    assert app.test_client().post("/login", data={"password": PASSWORD}).status_code == 400


def test_inverter_ingest_needs_no_csrf(app):
    response = app.test_client().post("/i.php", data=b"\x79garbage")
    assert response.status_code == 200 and re.fullmatch(rb"\d{14}", response.data)


def test_model_scale_and_remove(app):
    client = logged_in(app)
    store = app.extensions["solargw"].store
    token = csrf(client.get("/inverter/12345678").data)
    bad = client.post("/inverter/12345678/model", data={"model": "bdm9999", "csrf_token": token}, follow_redirects=True)
    assert b"Choose one of" in bad.data and store.model_setting("12345678") == "auto"
    client.post("/inverter/12345678/model", data={"model": "bdm800", "csrf_token": token})
    assert store.model_setting("12345678") == "bdm800"
    client.post("/inverter/12345678/remove", data={"csrf_token": token})
    assert [i.serial for i in store.inverters()] == ["100095471"]
    assert b'data-serial="12345678"' not in client.get("/").data


def test_settings_validation_errors_per_field(app, settings_file):
    client = logged_in(app)
    token = csrf(client.get("/settings").data)
    response = client.post("/settings/access_point", data={
        "csrf_token": token, "ssid": "solar", "passphrase": "short", "country": "XX", "channel": "14"})
    assert response.status_code == 400
    page = response.data.decode()
    assert re.search(r'id="error-access_point-passphrase">a WPA2 passphrase is 8 to 63 characters', page)
    assert 'id="error-access_point-country">XX is not an ISO 3166 country code' in page
    assert 'id="error-access_point-channel"' in page
    assert load(settings_file, env={}).access_point.passphrase == "original-passphrase"  # nothing saved

    mqtt = client.post("/settings/mqtt", data={"csrf_token": token, "host": "bad host!", "port": "70000",
                                               "discovery_prefix": "home/#"})
    page = mqtt.data.decode()
    assert "not a valid host name" in page and "port number" in page and "wildcards" in page

    tz = client.post("/settings/system", data={"csrf_token": token, "timezone": "Mars/Olympus"})
    assert tz.status_code == 400 and b"unknown time zone" in tz.data


def test_settings_saved_and_applied_without_restart(app, settings_file):
    client = logged_in(app)
    token = csrf(client.get("/settings").data)
    response = client.post("/settings/access_point", data={
        "csrf_token": token, "ssid": "roof-gw", "passphrase": "", "country": "de", "channel": "11"})
    assert response.status_code == 302
    stored = load(settings_file, env={})
    assert (stored.access_point.ssid, stored.access_point.country, stored.access_point.channel) == ("roof-gw", "DE", 11)
    assert stored.access_point.passphrase == "original-passphrase"  # empty field keeps the secret
    assert app.extensions["solargw"].settings.access_point.ssid == "roof-gw"  # this process uses it now

    client.post("/settings/system", data={"csrf_token": token, "timezone": "Europe/Berlin"})
    assert app.extensions["solargw"].settings.system.timezone == "Europe/Berlin"


def test_settings_file_changed_elsewhere_is_reread(app, settings_file):
    client = app.test_client()
    client.get("/")
    changed = load(settings_file, env={})
    changed.system.timezone = "Asia/Tokyo"
    time.sleep(0.01)
    save(changed, settings_file)
    client.get("/status")
    assert app.extensions["solargw"].settings.system.timezone == "Asia/Tokyo"


def test_settings_file_broken_elsewhere_keeps_the_settings_in_use(app, settings_file):
    client = app.test_client()
    client.get("/")
    good = settings_file.read_text()
    settings_file.write_text(good.replace('timezone = "UTC"', 'timezone = "Mars/Olympus"'))
    assert client.get("/status").status_code == 200
    services = app.extensions["solargw"]
    assert services.settings.system.timezone == "UTC"
    assert "[system] timezone: unknown time zone 'Mars/Olympus'" in services.follower.error
    settings_file.write_text(good.replace('timezone = "UTC"', 'timezone = "Asia/Tokyo"'))
    client.get("/")
    assert services.settings.system.timezone == "Asia/Tokyo" and services.follower.error == ""


def test_a_form_save_refuses_a_file_broken_in_another_section(app, settings_file):
    client = logged_in(app)
    token = csrf(client.get("/settings").data)
    on_disk = settings_file.read_text()
    broken = on_disk.replace("channel = 13", "channel = 40")  # [zigbee] channel, edited by hand
    assert broken != on_disk
    settings_file.write_text(broken)
    response = client.post("/settings/system", data={"csrf_token": token, "timezone": "Europe/Paris"})
    assert response.status_code == 500 and b"[zigbee] channel: 40 is not a Zigbee channel" in response.data
    assert settings_file.read_text() == broken  # nothing written


def test_password_change_needs_current_and_logs_out_other_sessions(app, settings_file):
    client = logged_in(app)
    other = app.test_client()
    token = csrf(other.get("/login").data)
    other.post("/login", data={"csrf_token": token, "password": PASSWORD})
    assert other.get("/settings").status_code == 200
    token = csrf(client.get("/settings").data)
    wrong = client.post("/settings/admin", data={"csrf_token": token, "current_password": "nope",
                                                 "new_password": "new password 1", "confirm_password": "new password 1"})
    assert wrong.status_code == 400 and b"wrong password" in wrong.data
    client.post("/settings/admin", data={"csrf_token": token, "current_password": PASSWORD,
                                         "new_password": "new password 1", "confirm_password": "new password 1"})
    assert client.get("/settings").status_code == 200
    assert other.get("/settings").status_code == 302


def test_export_and_import_settings(app, settings_file):
    client = logged_in(app)
    exported = client.get("/settings/export.toml")
    assert exported.status_code == 200 and "attachment" in exported.headers["Content-Disposition"]
    data = tomllib.loads(exported.data.decode())
    assert data["access_point"]["passphrase"] == "original-passphrase" and "secret_key" not in data["admin"]
    token = csrf(client.get("/settings").data)

    data["access_point"]["passphrase"] = "tiny"
    bad = client.post("/settings/import", data={"csrf_token": token, "file": (io.BytesIO(tomli_w.dumps(data).encode()), "s.toml")},
                      content_type="multipart/form-data")
    assert bad.status_code == 400 and b"access_point.passphrase" in bad.data
    garbage = client.post("/settings/import", data={"csrf_token": token, "file": (io.BytesIO(b"not = [toml"), "s.toml")},
                          content_type="multipart/form-data")
    assert garbage.status_code == 400 and b"not a valid TOML file" in garbage.data
    unknown = client.post("/settings/import", data={"csrf_token": token, "file": (io.BytesIO(b"[mqtt]\nhots = 'x'\n"), "s.toml")},
                          content_type="multipart/form-data")
    assert unknown.status_code == 400 and b"unknown key" in unknown.data

    data["access_point"]["passphrase"] = "imported passphrase"
    data["mqtt"]["port"] = 8883
    good = client.post("/settings/import", data={"csrf_token": token, "file": (io.BytesIO(tomli_w.dumps(data).encode()), "s.toml")},
                       content_type="multipart/form-data")
    assert good.status_code == 302
    stored = load(settings_file, env={})
    assert stored.access_point.passphrase == "imported passphrase" and stored.mqtt.port == 8883
    assert stored.admin.secret_key  # kept
    assert client.get("/settings").status_code == 200  # same password hash: still logged in


def test_history_export_is_a_sqlite_backup(app, tmp_path):
    client = logged_in(app)
    response = client.get("/settings/history.sqlite")
    assert response.status_code == 200
    copy = tmp_path / "copy.sqlite"
    copy.write_bytes(response.data)
    with sqlite3.connect(copy) as db:
        assert db.execute("SELECT COUNT(*) FROM readings").fetchone()[0] == 21
    assert not list((Path(app.extensions["solargw"].settings.data_dir)).glob(".export-*"))


def test_passphrase_rules():
    assert rules.passphrase_error("x" * 7)
    assert rules.passphrase_error("x" * 64)
    assert rules.passphrase_error("x" * 8) is None
    assert rules.passphrase_error("x" * 63) is None
    assert rules.passphrase_error("pässwörter") is not None
    assert rules.channel_error(14, "GB") and rules.channel_error(13, "GB") is None
    assert rules.ssid_error("") and rules.ssid_error("x" * 33) and rules.ssid_error("roof") is None


def test_environment_overrides_are_never_written_to_the_file(settings_file, monkeypatch):
    monkeypatch.setenv("NEP_LISTEN_PORT", "8123")
    monkeypatch.setenv("SOLARGW_DATA_DIR", str(settings_file.parent / "elsewhere"))
    settings = load(settings_file)
    app = create_app(settings, Store(settings.data_dir))
    client = logged_in(app)
    token = csrf(client.get("/settings").data)
    assert client.post("/settings/system", data={"csrf_token": token, "timezone": "Europe/Paris"}).status_code == 302
    on_disk = load(settings_file, env={})
    assert on_disk.system.timezone == "Europe/Paris" and on_disk.admin.password_hash
    assert on_disk.web.port == 80 and "elsewhere" not in on_disk.data.dir
    assert app.extensions["solargw"].settings.web.port == 8123  # the override still applies in the process


@pytest.mark.slow
def test_mqtt_settings_reconnect_the_publisher_without_restart(tmp_path):
    """Point MQTT at a dead port, then at a real mosquitto through the settings page: readings flow there."""
    from support.brokers import mosquitto
    from support.ports import free_port
    from appliance.protocols import nep

    settings = Settings()
    settings.data.dir = str(tmp_path / "data")
    settings.mqtt.port = free_port()  # nothing listens here
    path = tmp_path / "solargw.toml"
    save(settings, path)
    settings = load(path, env={})
    app = create_app(settings, Store(settings.data_dir))
    client = logged_in(app)
    body = nep.encode_i(serial="12345678", model="bdm400", ac_power_w=250, energy_today_wh=900)
    assert client.post("/i.php", data=body).status_code == 200  # publisher made, broker unreachable
    old_publisher = app.extensions["solargw"].publisher
    with mosquitto() as broker, broker.subscribe("#") as messages:
        token = csrf(client.get("/settings").data)
        form = {"csrf_token": token, "enabled": "1", "host": "127.0.0.1", "port": str(broker.port),
                "discovery_prefix": "homeassistant", "retain": "1"}
        assert client.post("/settings/mqtt", data=form).status_code == 302
        assert load(path, env={}).mqtt.port == broker.port
        client.post("/i.php", data=body)
        wait_for(lambda: any("12345678" in topic for topic in messages.topics()), 15,
                 lambda: f"a message about 12345678; topics: {sorted(messages.topics())}", interval=0.2)
        assert app.extensions["solargw"].publisher is not old_publisher
        assert "connected to 127.0.0.1:" in client.get("/status").data.decode()
    app.extensions["solargw"].close()


def _events(response, wanted: int) -> list[tuple[str, dict]]:
    """Read server-sent events from a streaming test response until ``wanted`` named events came."""
    import json

    events: list[tuple[str, dict]] = []
    buffer = b""
    for chunk in response.response:
        buffer += chunk if isinstance(chunk, bytes) else chunk.encode()
        while b"\n\n" in buffer:
            block, buffer = buffer.split(b"\n\n", 1)
            lines = dict(line.split(": ", 1) for line in block.decode().splitlines() if ": " in line and not line.startswith(":"))
            if "event" in lines:
                events.append((lines["event"], json.loads(lines["data"])))
        if len(events) >= wanted:
            break
    response.close()
    return events


def test_events_stream_sends_changed_inverters_from_the_cursor(app):
    client = app.test_client()
    response = client.get("/events", headers={"Last-Event-ID": "0"}, buffered=False)
    assert response.mimetype == "text/event-stream"
    events = _events(response, 3)
    kinds = [kind for kind, _ in events]
    assert kinds == ["inverter", "inverter", "totals"]
    cards = {data["serial"]: data for kind, data in events if kind == "inverter"}
    assert cards["12345678"]["power_text"] == "169 W" and cards["12345678"]["fields"]["ac_power_w"] == "169 W"
    assert events[-1][1]["count"] == 2


def test_events_streams_are_bounded(app):
    from appliance.web import events

    with app.app_context():
        limit = events.max_streams()
    assert limit == 5  # 8 threads: 5 streams, 3 threads kept for inverters and pages
    clients = [app.test_client() for _ in range(limit + 1)]
    responses = [c.get("/events", buffered=False) for c in clients]
    try:
        assert [r.status_code for r in responses] == [200] * limit + [503]
    finally:
        for r in responses:
            r.close()
    again = app.test_client().get("/events", buffered=False)  # closed streams free their slot
    assert again.status_code == 200
    again.close()


def test_the_app_runs_in_the_configured_time_zone(settings_file):
    """The store's "today" (process local time) is the UI's "today" (``[system] timezone``)."""
    import dataclasses
    import os

    settings = load(settings_file, env={})
    settings.system.timezone = "Pacific/Kiritimati"
    app = create_app(settings, Store(settings.data_dir))
    assert time.localtime(1_700_000_000).tm_hour == 12  # 22:13 UTC is 12:13 the next day there
    changed = dataclasses.replace(settings, system=dataclasses.replace(settings.system, timezone="America/St_Johns"))
    app.extensions["solargw"].apply_settings(changed)
    assert os.environ["TZ"] == "America/St_Johns" and time.localtime(1_700_000_000).tm_hour == 18


def test_power_chart_keeps_a_lone_reading_between_gaps():
    from appliance.web import charts

    start = 1_700_000_000.0
    gap = charts.GAP_SECONDS + 1
    samples = [(start + 60, 100.0), (start + 120, 120.0),  # a line
               (start + 120 + gap, 90.0),  # alone, between two gaps
               (start + 120 + 2 * gap, 80.0), (start + 180 + 2 * gap, 70.0)]  # a line
    chart = charts.power_over_day(samples, start, start + 86400, ZoneInfo("UTC"))
    assert len(chart.paths) == 3
    assert [path.count(" L") for path in chart.paths] == [1, 0, 1]
    assert chart.paths[1].endswith(" l1,0")


def test_the_gateway_listener_is_turned_on_from_the_settings_page(app, settings_file):
    import socket

    from support.ports import free_port

    port = free_port()
    data = load(settings_file, env={})
    data.gateway.listen_addr, data.gateway.port = "127.0.0.1", port
    save(data, settings_file)
    client = logged_in(app)
    page = client.get("/settings")
    assert b"Genuine Enecsys gateway" in page.data and b"gw.enecsys.net" in page.data
    response = client.post("/settings/gateway", data={"csrf_token": csrf(page.data), "enabled": "1"})
    assert response.status_code == 302
    assert load(settings_file, env={}).gateway.enabled
    services = app.extensions["solargw"]
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as gateway:
            assert gateway.recv(64) == b"0E0000000000cgAD83\r"  # the listener answers at once
        assert services.appliance_status()["gateway"] in ("waiting", "1 connected")
        page = client.get("/settings")
        client.post("/settings/gateway", data={"csrf_token": csrf(page.data)})  # unchecked: off
        assert not load(settings_file, env={}).gateway.enabled and services.gateway is None
    finally:
        services.close()
