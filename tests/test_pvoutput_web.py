"""PVOutput in the web UI: the settings section (inverters mapped to systems, value rules, the key
never shown) and the status page (the uploader's state: a bad API key, queued statuses), through
Flask's test client and through the real ``solargw web`` under gunicorn."""
from __future__ import annotations

import re
import time
import urllib.request
from pathlib import Path

import pytest

from appliance.settings import Settings, SettingsError, from_dict, load, save, validate
from appliance.store import Store
from appliance.web.app import create_app
from factories import enecsys_reading, nep_reading
from fake_pvoutput import FakePVOutput
from server import running_web

PASSWORD = "correct horse battery"
KEY = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def settings_file(tmp_path: Path) -> Path:
    settings = Settings()
    settings.data.dir = str(tmp_path / "data")
    settings.mqtt.enabled = False
    path = tmp_path / "solargw.toml"
    save(settings, path)
    return path


def csrf(page: bytes) -> str:
    match = re.search(rb'name="csrf_token" value="([^"]+)"', page)
    assert match, "page has no CSRF token"
    return match.group(1).decode()


def logged_in(app):
    client = app.test_client()
    page = client.get("/setup").data
    client.post("/setup", data={"csrf_token": csrf(page), "new_password": PASSWORD, "confirm_password": PASSWORD})
    return client


def wait_for(predicate, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out")


# --- settings ------------------------------------------------------------------------------------

def test_pvoutput_settings_file_section():
    settings = from_dict({"pvoutput": {"enabled": True, "api_key": KEY, "system_id": 4321,
                                       "inverters": {"100095471": 9876, "12345678": 0}}})
    assert settings.pvoutput.inverters == {"100095471": 9876, "12345678": 0}
    assert validate(settings) == {}
    for bad in ({"inverters": {"1": "x"}}, {"inverters": {"1": -1}}, {"inverters": [1]}, {"system_id": "4321"}):
        with pytest.raises(SettingsError, match=r"\[pvoutput\]"):
            from_dict({"pvoutput": bad})


@pytest.mark.parametrize("values,key,message", [
    ({"enabled": True, "system_id": 4321}, "pvoutput.api_key", "API key"),
    ({"enabled": True, "api_key": KEY}, "pvoutput.system_id", "system id is needed"),
    ({"api_key": "has a space"}, "pvoutput.api_key", "without spaces"),
    ({"interval_minutes": 7}, "pvoutput.interval_minutes", "5, 10 or 15"),
    ({"system_id": 2**31}, "pvoutput.system_id", "not a PVOutput system id"),
    ({"inverters": {"42": 2**40}}, "pvoutput.inverters", "inverter 42: 1099511627776 is not a PVOutput system id"),
    ({"base_url": "ftp://example.org"}, "pvoutput.base_url", "http"),
])
def test_pvoutput_value_rules(values, key, message):
    errors = validate(from_dict({"pvoutput": values}))
    assert message in errors.get(key, ""), errors


def test_enabled_with_only_per_inverter_systems_is_enough():
    assert validate(from_dict({"pvoutput": {"enabled": True, "api_key": KEY,
                                                       "inverters": {"1": 4321}}})) == {}


def test_settings_page_saves_pvoutput_with_inverters_mapped_to_systems(settings_file):
    settings = load(settings_file, env={})
    store = Store(settings.data_dir)
    store.record(nep_reading("12345678", timestamp=time.time()))
    store.record(enecsys_reading("100095471", timestamp=time.time()))
    app = create_app(settings, store)
    client = logged_in(app)
    page = client.get("/settings").data.decode()
    assert 'id="pvoutput"' in page and 'name="system_for.12345678"' in page and 'name="system_for.100095471"' in page
    token = csrf(client.get("/settings").data)
    refused = client.post("/settings/pvoutput", data={"csrf_token": token, "enabled": "1", "system_id": "4321",
                                                      "interval_minutes": "5"})
    assert refused.status_code == 400 and b"API key" in refused.data
    assert load(settings_file, env={}).pvoutput.enabled is False  # nothing saved
    saved = client.post("/settings/pvoutput", data={
        "csrf_token": token, "enabled": "1", "api_key": f"  {KEY} ", "system_id": "4321", "interval_minutes": "10",
        "system_for.100095471": "9876", "system_for.12345678": ""})
    assert saved.status_code == 302
    pv = load(settings_file, env={}).pvoutput
    assert (pv.enabled, pv.api_key, pv.system_id, pv.interval_minutes) == (True, KEY, 4321, 10)
    assert pv.inverters == {"100095471": 9876}
    page = client.get("/settings").data.decode()
    assert KEY not in page  # a secret is never sent back
    assert 'name="system_for.100095471" type="number" min="0" value="9876"' in page
    again = client.post("/settings/pvoutput", data={"csrf_token": token, "enabled": "1", "api_key": "",
                                                    "system_id": "", "interval_minutes": "10",
                                                    "system_for.100095471": "", "system_for.12345678": "0"})
    assert again.status_code == 400 and b"system id is needed" in again.data  # no system left to upload to
    bad = client.post("/settings/pvoutput", data={"csrf_token": token, "api_key": "", "system_id": "4321",
                                                  "interval_minutes": "5", "system_for.12345678": "abc"})
    assert bad.status_code == 400 and b'id="error-pvoutput-system_for.12345678"' in bad.data
    app.extensions["solargw"].close()


# --- status page -----------------------------------------------------------------------------------

def test_status_page_shows_an_invalid_api_key(settings_file):
    with FakePVOutput() as fake:
        settings = load(settings_file, env={})
        settings.pvoutput = from_dict({"pvoutput": {"enabled": True, "api_key": "wrong-key", "system_id": 4321,
                                                    "base_url": fake.base_url}}).pvoutput
        store = Store(settings.data_dir)
        store.record(nep_reading("12345678", today_wh=1200, power_w=350, timestamp=time.time()))
        app = create_app(settings, store)
        try:
            client = app.test_client()
            page = wait_for(lambda: (p := client.get("/status").data.decode()) and "invalid API key" in p and p)
            assert "Unauthorized 401: Invalid API Key" in page
            assert re.search(r'id="pvoutput-system-4321"><th>System 4321</th><td>1 status queued', page)
            assert "stopped: PVOutput refuses the API key" in page
            assert [code for _, _, code in fake.requests] == [401]
        finally:
            app.extensions["solargw"].close()


def test_status_page_without_pvoutput_has_no_panel(settings_file):
    settings = load(settings_file, env={})
    app = create_app(settings, Store(settings.data_dir))
    assert 'id="pvoutput-status"' not in app.test_client().get("/status").data.decode()
    assert app.extensions["solargw"].uploader is None


def test_turning_pvoutput_on_in_the_settings_starts_the_uploader(settings_file):
    with FakePVOutput() as fake:
        settings = load(settings_file, env={})
        settings.pvoutput.base_url = fake.base_url
        save(settings, settings_file)
        store = Store(settings.data_dir)
        store.record(nep_reading("12345678", today_wh=1200, power_w=350, timestamp=time.time()))
        app = create_app(load(settings_file, env={}), store)
        services = app.extensions["solargw"]
        assert services.uploader is None
        client = logged_in(app)
        token = csrf(client.get("/settings").data)
        response = client.post("/settings/pvoutput", data={"csrf_token": token, "enabled": "1", "api_key": fake.api_key,
                                                           "system_id": "4321", "interval_minutes": "5"})
        assert response.status_code == 302
        try:
            assert services.uploader is not None
            wait_for(lambda: fake.statuses)
            ((system, _, _), fields), = fake.statuses.items()
            assert system == 4321 and fields["v1"] == "1200" and fields["v2"] == "350"
            page = client.get("/status").data.decode()
            assert "uploading every 5 minutes" in page and "0 statuses queued; last sent:" in page
        finally:
            services.close()
        assert services.uploader is None


@pytest.mark.slow
def test_real_web_service_shows_a_bad_api_key_on_the_status_page(tmp_path):
    """``solargw web`` under gunicorn: the uploader thread runs in the worker, PVOutput (the fake)
    refuses the key, the status page says so; statuses stay queued for when the key is fixed."""
    with FakePVOutput() as fake:
        data_dir = tmp_path / "web" / "data"
        store = Store(data_dir)
        store.record(enecsys_reading("100095471", power_w=180.0, timestamp=time.time()))
        store.close()
        settings = {"pvoutput": {"enabled": True, "api_key": "not-my-key", "system_id": 4321,
                                 "base_url": fake.base_url}}
        with running_web(tmp_path, settings) as web:
            def status_page():
                with urllib.request.urlopen(web.url + "status", timeout=5) as reply:
                    page = reply.read().decode()
                return page if "invalid API key" in page else None

            page = wait_for(status_page, timeout=30)
            assert 'id="pvoutput-error"' in page and "Unauthorized 401: Invalid API Key" in page
            assert fake.requests and all(code == 401 for _, _, code in fake.requests)
            assert web.store().pvoutput_queued() == {4321: 1}
            assert "PVOutput: system 4321: invalid API key" in web.log()
