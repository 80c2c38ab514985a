"""Issue 14's security points, each on the real code path: the session cookie's SameSite, an atomic
login limit, logout ending the session server-side, caps on new inverters, the subnet filter,
every inverter-path POST answered with the time, one log line per malformed request."""
from __future__ import annotations

import random
import re
import socket
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest
import requests
from werkzeug.security import generate_password_hash

from appliance.settings import Settings, SettingsError, load, require_valid, save
from appliance.sim.nep_inverters import NepInverter
from appliance.store import Store
from appliance.web.app import create_app
from appliance.web.sources import source_filter
from appliance.web.throttle import LoginThrottle
from server import running_web
from vectors import NEP_BDM400

PASSWORD = "correct horse battery"
BDM400 = bytes.fromhex(NEP_BDM400["hex"])
NOON = datetime.now().replace(hour=12, minute=0)


def forged(count: int, seed: int = 9) -> list[bytes]:
    """Well-formed reports from ``count`` made-up serials."""
    rng = random.Random(seed)
    return [NepInverter(f"{rng.getrandbits(32):08x}", "bdm400").packet(NOON, rng) for _ in range(count)]


@pytest.fixture
def settings_file(tmp_path: Path) -> Path:
    settings = Settings()
    settings.data.dir = str(tmp_path / "data")
    settings.mqtt.enabled = False
    settings.admin.password_hash = generate_password_hash(PASSWORD)
    settings.admin.secret_key = "k" * 64
    path = tmp_path / "solargw.toml"
    save(settings, path)
    return path


def make_app(settings_file: Path, **changes):
    settings = load(settings_file, env={})
    for section, values in changes.items():
        for key, value in values.items():
            setattr(getattr(settings, section), key, value)
    save(require_valid(settings), settings_file)
    settings = load(settings_file, env={})
    app = create_app(settings, Store(settings.data_dir))
    app.config["TESTING"] = True
    return app


def csrf(page: bytes) -> str:
    return re.search(rb'name="csrf_token" value="([^"]+)"', page).group(1).decode()


def log_in(client) -> None:
    reply = client.post("/login", data={"csrf_token": csrf(client.get("/login").data), "password": PASSWORD})
    assert reply.status_code == 302, reply.data


# --- the session cookie --------------------------------------------------------------------------

def test_the_session_cookie_is_samesite_lax_and_httponly(settings_file):
    client = make_app(settings_file).test_client()
    reply = client.post("/login", data={"csrf_token": csrf(client.get("/login").data), "password": PASSWORD})
    cookie = reply.headers["Set-Cookie"]
    assert "SameSite=Lax" in cookie and "HttpOnly" in cookie, cookie


def test_an_old_session_cookie_no_longer_works_after_logout(settings_file):
    app = make_app(settings_file)
    client = app.test_client()
    log_in(client)
    assert client.get("/settings").status_code == 200
    old = client.get_cookie("session").value
    token = csrf(client.get("/settings").data)
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302
    thief = app.test_client()
    thief.set_cookie("session", old)
    assert thief.get("/settings").headers["Location"].startswith("/login")
    assert thief.post("/settings/mqtt", data={"csrf_token": token, "host": "evil"}).status_code == 401


def test_a_session_outlives_a_restart_but_not_its_logout(settings_file):
    client = make_app(settings_file).test_client()
    log_in(client)
    cookie = client.get_cookie("session").value
    again = make_app(settings_file).test_client()  # a new worker on the same data directory
    again.set_cookie("session", cookie)
    assert again.get("/settings").status_code == 200


def test_a_password_change_ends_every_other_session(settings_file):
    app = make_app(settings_file)
    first, second = app.test_client(), app.test_client()
    log_in(first)
    log_in(second)
    page = first.get("/settings").data
    changed = first.post("/settings/admin", data={
        "csrf_token": csrf(page), "current_password": PASSWORD, "new_password": "another long one",
        "confirm_password": "another long one"})
    assert changed.status_code == 302
    assert first.get("/settings").status_code == 200
    assert second.get("/settings").headers["Location"].startswith("/login")


# --- the login limit -----------------------------------------------------------------------------

def test_the_throttle_counts_an_attempt_before_the_check():
    throttle = LoginThrottle(attempts=5, window=300)
    start = threading.Barrier(40)
    allowed = []

    def attempt() -> None:
        start.wait()
        allowed.append(throttle.attempt("10.0.0.1"))

    threads = [threading.Thread(target=attempt) for _ in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert allowed.count(True) == 5
    assert throttle.attempt("10.0.0.2")  # per address
    throttle.succeeded("10.0.0.1")
    assert throttle.attempt("10.0.0.1")


@pytest.mark.slow
def test_a_burst_of_40_parallel_logins_checks_at_most_5_passwords(tmp_path):
    settings = {"web": {"threads": 8}, "admin": {"password_hash": generate_password_hash(PASSWORD)}}
    with running_web(tmp_path, settings) as web:
        sessions = []
        for _ in range(40):
            session = requests.Session()
            sessions.append((session, csrf(session.get(web.url + "login", timeout=10).content)))
        start = threading.Barrier(40)
        answers: list[bytes] = []

        def attempt(session, token) -> None:
            start.wait()
            answers.append(session.post(web.url + "login", data={"csrf_token": token, "password": "wrong guess"},
                                        timeout=30, allow_redirects=False).content)

        threads = [threading.Thread(target=attempt, args=pair) for pair in sessions]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    checked = sum(b"Wrong password" in answer for answer in answers)
    refused = sum(b"Too many wrong passwords" in answer for answer in answers)
    assert (checked, refused) == (5, 35)


# --- new inverters -------------------------------------------------------------------------------

def post(client, body: bytes, source: str = "10.42.0.77"):
    reply = client.post("/i.php", data=body, environ_base={"REMOTE_ADDR": source})
    assert reply.status_code == 200 and len(reply.data) == 14 and reply.data.isdigit()
    return reply


def test_new_inverters_are_capped_per_hour_and_refusals_kept(settings_file):
    app = make_app(settings_file, data={"new_inverters_per_hour": 3, "max_inverters": 100})
    store = app.extensions["solargw"].store
    client = app.test_client()
    bodies = forged(10)
    for body in bodies:
        post(client, body)
    assert len(store.inverters()) == 3
    refused = store.rejected(limit=10)
    assert len(refused) == 7 and all("[data] new_inverters_per_hour is 3" in r.reason for r in refused)
    assert store.counters()[("inverters_refused", "nep")] == 7
    post(client, bodies[0])  # a known one always passes
    assert store.counters()[("readings_recorded", "nep")] == 4
    metrics = client.get("/metrics").data.decode()
    assert metrics.count("solargw_inverter_up{") == 3


def test_new_inverters_are_capped_in_total_and_removing_makes_room(settings_file):
    app = make_app(settings_file, data={"new_inverters_per_hour": 1000, "max_inverters": 4})
    pipeline, store = app.extensions["solargw"].pipeline, app.extensions["solargw"].store
    client = app.test_client()
    bodies = forged(6)
    for body in bodies:
        post(client, body)
    assert len(store.inverters()) == 4
    assert "[data] max_inverters is 4" in store.rejected(limit=1)[0].reason
    pipeline.remove(store.inverters()[0].serial)
    post(client, bodies[5])
    assert bodies[5][19:23][::-1].hex() in {i.serial for i in store.inverters()}


def test_the_inverter_caps_have_rules():
    settings = Settings()
    settings.data.max_inverters = 0
    settings.data.new_inverters_per_hour = 20000
    with pytest.raises(SettingsError) as caught:
        require_valid(settings)
    assert set(caught.value.problems) == {"data.max_inverters", "data.new_inverters_per_hour"}


@pytest.mark.slow
def test_forged_serials_do_not_grow_the_tables(tmp_path):
    with running_web(tmp_path) as web:
        for body in forged(300):
            assert requests.post(web.url + "i.php", data=body, timeout=10).text.isdigit()
        metrics = requests.get(web.url + "metrics", timeout=10).text
        inverters = web.store().inverters(include_removed=True)
        counters = web.store().counters()
    assert len(inverters) == 50  # the default new_inverters_per_hour
    assert counters[("inverters_refused", "nep")] == 250
    assert metrics.count("solargw_inverter_up{") == 50


# --- who may post ---------------------------------------------------------------------------------

def test_reports_from_outside_the_access_point_subnet_are_answered_but_not_recorded(settings_file):
    app = make_app(settings_file)
    store = app.extensions["solargw"].store
    client = app.test_client()
    post(client, BDM400, source="192.168.1.23")
    assert store.latest() == {}
    refused = store.rejected(limit=1)[0]
    assert refused.source == "192.168.1.23" and refused.frame_hex == BDM400.hex()
    assert "not an allowed source ([web] nep_sources: access point 10.42.0.0/24, loopback)" in refused.reason
    assert store.counters()[("reports_refused_source", "nep")] == 1
    post(client, BDM400, source="10.42.0.9")
    post(client, BDM400, source="127.0.0.1")
    post(client, BDM400, source="::ffff:10.42.0.10")
    assert store.counters()[("readings_recorded", "nep")] == 3


def test_the_lan_can_be_let_in(settings_file):
    app = make_app(settings_file, web={"nep_sources": ["access_point", "192.168.1.0/24"]})
    client = app.test_client()
    post(client, BDM400, source="192.168.1.23")
    post(client, BDM400, source="192.168.2.23")
    counters = app.extensions["solargw"].store.counters()
    assert counters[("readings_recorded", "nep")] == 1 and counters[("reports_refused_source", "nep")] == 1


@pytest.mark.parametrize("sources,allowed,refused", [
    (["access_point"], ["10.42.0.5", "127.0.0.1", "::1"], ["192.168.1.5", "10.42.1.5", "fe80::1"]),
    (["any"], ["192.168.1.5", "2001:db8::1"], []),
    (["192.168.1.0/24", "2001:db8::/32"], ["192.168.1.5", "2001:db8::1", "127.0.0.2"], ["10.42.0.5"]),
    ([], ["127.0.0.1"], ["10.42.0.5"]),
])
def test_the_source_filter(sources, allowed, refused):
    settings = Settings()
    settings.web.nep_sources = sources
    check = source_filter(settings)
    assert all(check.allows(a) for a in allowed) and not any(check.allows(r) for r in refused)


def test_lan_dns_mode_without_the_lan_in_nep_sources_is_advised():
    from appliance.settings import advice

    settings = Settings()
    settings.access_point.lan_dns_mode = True
    assert "LAN DNS mode is on" in advice(settings)["web.nep_sources"]
    settings.web.nep_sources = ["access_point", "192.168.1.0/24"]
    assert "web.nep_sources" not in advice(settings)


def test_nep_sources_have_a_rule():
    settings = Settings()
    settings.web.nep_sources = ["access_point", "192.168.1.0/33", "lan"]
    with pytest.raises(SettingsError) as caught:
        require_valid(settings)
    assert "[web] nep_sources: '192.168.1.0/33' is not access_point, any or a network" in str(caught.value)


# --- every inverter-path POST, and malformed requests ---------------------------------------------

def test_a_path_with_a_newline_is_an_inverter_post_in_flask_too(settings_file):
    app = make_app(settings_file)
    reply = app.test_client().post("/i%0a.php", data=BDM400, environ_base={"REMOTE_ADDR": "10.42.0.7"})
    assert reply.status_code == 200 and reply.data.isdigit()
    assert "12345678" in app.extensions["solargw"].store.latest()


def raw(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk
    return reply


@pytest.mark.slow
def test_the_real_service_answers_odd_inverter_posts_with_the_time_and_logs_one_line_each(tmp_path):
    with running_web(tmp_path) as web:
        newline = raw(web.port, b"POST /i%0a.php HTTP/1.1\r\nHost: www.nepviewer.net\r\nContent-Length: 45\r\n\r\n"
                      + BDM400)
        chunked = raw(web.port, b"POST /i.php HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                      b"2d\r\n" + BDM400 + b"NO-LINE-END-AFTER-THE-DATA\r\n0\r\n\r\n")
        time.sleep(0.5)
        log = web.log()
        latest = web.store().latest()
        rejected = web.store().rejected(limit=5)
    for reply in (newline, chunked):
        head, _, body = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK") and len(body) == 14 and body.isdigit(), reply
    assert "12345678" in latest
    assert "Traceback" not in log, log
    said = [line for line in log.splitlines() if "malformed chunked body" in line]
    assert len(said) == 1, log
    assert "malformed chunked body" in rejected[0].reason
