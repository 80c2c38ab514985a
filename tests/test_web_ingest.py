"""Inverter ingest: the app through Flask's test client (fast) and the real gunicorn server (slow)."""
from __future__ import annotations

import os
import random
import socket
import sqlite3
import threading
import time
from datetime import datetime

import pytest
import requests
from hypothesis import HealthCheck, given, settings as settings_profile, strategies as st

from appliance.sim import nep_inverters
from appliance.web import ingest
from appliance.web.app import create_app
from support.ports import free_port
from support.processes import clean_env
from support.vectors import NEP_BDM400, NEP_BDM800, NEP_BDM1200_T, NEP_SEED_EXAMPLE_TEMPLATE
from support.web_service import running_web

VECTORS = [NEP_BDM400, NEP_BDM800, NEP_BDM1200_T]
BDM400 = bytes.fromhex(NEP_BDM400["hex"])


def wrong_checksum(body: bytes) -> bytes:
    return body[:-2] + bytes([(body[-2] + 1) & 0xFF, body[-1]])


SEED_EXAMPLE = bytes.fromhex(NEP_SEED_EXAMPLE_TEMPLATE.format(serial="78563412", power="9c"))
GARBAGE = {
    "empty": b"",
    "one byte": b"\x79",
    "wrong checksum": wrong_checksum(BDM400),
    "seed example": SEED_EXAMPLE,
    "truncated": BDM400[:30],
    "random": random.Random(7).randbytes(45),
    "text form": b"user=admin&password=x",
}


def assert_timestamp_reply(status: int, content_type: str, body: bytes, before: float, after: float) -> None:
    assert status == 200
    assert content_type.split(";")[0] == "text/html"
    assert len(body) == 14 and body.isdigit(), body
    # Month before day (the seed server had them swapped): this parse only brackets "now" if so.
    stamp = datetime.strptime(body.decode(), "%Y%m%d%H%M%S").timestamp()
    assert int(before) - 1 <= stamp <= after + 1


class RecordingPublisher:
    """Stands in for the MQTT publisher (tested in its own issue): records what it is given."""

    def __init__(self, fail: bool = False):
        self.published: list = []
        self.statuses: list = []
        self.refreshes = 0
        self.fail = fail

    def publish(self, recorded) -> None:
        self.published.append(recorded)
        if self.fail:
            raise RuntimeError("broker exploded")

    def publish_status(self, status) -> None:
        self.statuses.append(dict(status))

    def refresh_status(self) -> None:
        self.refreshes += 1

    def remove(self, serial) -> None: ...
    def close(self) -> None: ...


def post(client, path: str, body: bytes):
    before = time.time()
    reply = client.post(path, data=body, environ_base={"REMOTE_ADDR": "10.42.0.77"})
    assert_timestamp_reply(reply.status_code, reply.content_type, reply.data, before, time.time())
    return reply


# --- fast: the app ---------------------------------------------------------------------------

@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v["serial"])
def test_vectors_are_answered_and_recorded(client, store, vector):
    path = "/t.php" if len(vector["hex"]) == 138 else "/i.php"
    post(client, path, bytes.fromhex(vector["hex"]))
    latest = store.latest()
    assert list(latest) == [vector["serial"]]
    assert latest[vector["serial"]].frame_hex == vector["hex"]
    assert latest[vector["serial"]].source == "10.42.0.77"
    assert store.counters()[("packets_received", "nep")] == 1
    assert ("packets_rejected", "nep") not in store.counters()


def test_decoded_values_reach_the_store(client, store):
    post(client, "/i.php", BDM400)
    post(client, "/i.php", bytes.fromhex(NEP_BDM800["hex"]))
    latest = store.latest()
    assert latest["12345678"].fields["ac_power_w"] == pytest.approx(NEP_BDM400["ac_power_w"])
    assert latest["deadbeef"].fields["ac_power_w"] == pytest.approx(NEP_BDM800["ac_power_w"], abs=0.01)
    assert store.inverter("12345678").lifetime_wh == pytest.approx(NEP_BDM400["energy_today_wh"])


def test_the_per_inverter_model_setting_chooses_the_scale(client, store):
    post(client, "/i.php", BDM400)
    store.set_model("12345678", "bdm800")
    post(client, "/i.php", BDM400)
    latest = store.latest()["12345678"]
    assert latest.model == "bdm800" and not latest.model_guessed
    assert latest.fields["ac_power_w"] == pytest.approx(NEP_BDM400["ac_power_raw"] / 78.54, abs=0.01)


def test_a_stale_unknown_model_setting_falls_back_to_auto(client, store):
    post(client, "/i.php", BDM400)
    store.set_model("12345678", "bdm9999")
    post(client, "/i.php", BDM400)
    assert store.latest()["12345678"].model_guessed
    assert store.counters()[("readings_recorded", "nep")] == 2


@pytest.mark.parametrize("name", list(GARBAGE))
def test_garbage_gets_the_time_is_kept_and_never_recorded(client, store, name):
    post(client, "/i.php", BDM400)
    before = store.latest()
    post(client, "/i.php", GARBAGE[name])
    assert store.latest() == before
    rejected = store.rejected(limit=1)[0]
    assert rejected.frame_hex == GARBAGE[name].hex()
    assert rejected.source == "10.42.0.77"
    assert rejected.family == "nep"
    assert store.counters()[("packets_rejected", "nep")] == 1
    assert store.counters()[("packets_received", "nep")] == 2


@settings_profile(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.one_of(
    st.binary(max_size=120),
    st.builds(lambda cut, flip: bytes(b ^ (0xFF if i == flip else 0) for i, b in enumerate(BDM400[:cut])),
              st.integers(0, 45), st.integers(1, 42)),
))
def test_any_body_gets_the_time_and_never_a_bogus_reading(client, store, body):
    before = store.latest()
    post(client, "/i.php", body)
    assert store.latest() == before  # random bytes never frame as NEP; a flipped byte breaks the checksum


def test_an_oversize_body_is_refused_unread_with_the_time(client, store):
    post(client, "/i.php", b"\x79" * (10 * 1024 * 1024))
    rejected = store.rejected(limit=1)[0]
    assert "over 4096 bytes" in rejected.reason and rejected.frame_hex == ""
    assert store.latest() == {}


def test_any_other_path_is_an_inverter_post(client, store):
    post(client, "/some/portal/path.php", BDM400)
    post(client, "/", bytes.fromhex(NEP_BDM800["hex"]))
    assert set(store.latest()) == {"12345678", "deadbeef"}


@pytest.mark.parametrize("path", ["/api/nothing", "/login/x", "/settings/none", "/inverter/12345678/zap",
                                  "/metrics", "/data.json"])
def test_posts_under_ui_prefixes_are_not_taken_for_reports(client, store, path):
    reply = client.post(path, data=BDM400)
    assert reply.status_code in (400, 403, 404, 405)  # the UI may refuse it (CSRF) or not know it
    assert store.latest() == {} and store.counters() == {}


def test_the_publisher_gets_every_recorded_reading_and_its_failure_loses_nothing(settings, store):
    publisher = RecordingPublisher(fail=True)
    client = create_app(settings, store, publisher=publisher).test_client()
    post(client, "/i.php", BDM400)
    post(client, "/i.php", GARBAGE["wrong checksum"])
    assert [r.reading.serial for r in publisher.published] == ["12345678"]
    assert "12345678" in store.latest()


def test_appliance_status_is_what_the_store_knows_now_and_a_report_asks_for_it(settings, store):
    publisher = RecordingPublisher()
    app = create_app(settings, store, publisher=publisher)
    client = app.test_client()
    svc = app.extensions["solargw"]
    assert svc.appliance_status() == {"inverters": 0, "wifi": "not running", "storage": "ok", "storage_queued": 0}
    store.set_status("net", {"state": "running"})
    post(client, "/i.php", BDM400)
    post(client, "/i.php", bytes.fromhex(NEP_BDM800["hex"]))
    assert publisher.refreshes == 2  # the publisher reads appliance_status() on its own thread
    # Both readings wait for the next write to the card (within the loss window).
    assert svc.appliance_status() == {"inverters": 2, "wifi": "running", "storage": "ok", "storage_queued": 2}


def test_one_bad_report_in_a_batch_loses_none_of_the_others(settings, store, monkeypatch):
    """The ingest thread stores the reports it takes in one transaction (``accept_all``): a report
    whose write fails half-way breaks that transaction, and every other report is stored all the
    same, each once (counted once, published once), malformed ones kept as rejected frames."""
    publisher = RecordingPublisher()
    svc = create_app(settings, store, publisher=publisher).extensions["solargw"]
    bdm800, bdm1200 = bytes.fromhex(NEP_BDM800["hex"]), bytes.fromhex(NEP_BDM1200_T["hex"])
    broken_serial = NEP_BDM800["serial"]
    record = store.record

    def record_failing_half_way(reading, **kwargs):
        with store._write():  # (its own transaction alone, or the batch's)
            recorded = record(reading, **kwargs)
            if reading.serial == broken_serial:
                raise sqlite3.OperationalError("disk I/O error")
            return recorded

    monkeypatch.setattr(store, "record", record_failing_half_way)
    now = time.time()
    bodies = [BDM400, GARBAGE["truncated"], bdm800, bdm1200]
    ingest.accept_all(svc, [ingest.InverterPost("/i.php", "10.42.0.77", body, now) for body in bodies])
    assert set(store.latest()) == {NEP_BDM400["serial"], NEP_BDM1200_T["serial"]}
    assert [r.reading.serial for r in publisher.published] == [NEP_BDM400["serial"], NEP_BDM1200_T["serial"]]
    counters = store.counters()
    assert counters[("packets_received", "nep")] == 3  # the broken one's count went with its write
    assert counters[("readings_recorded", "nep")] == 2 and counters[("packets_rejected", "nep")] == 1
    assert [r.frame_hex for r in store.rejected()] == [GARBAGE["truncated"].hex()]
    assert len(store.history(NEP_BDM400["serial"], now - 1, now + 1)) == 1


def test_a_batch_of_good_reports_is_one_transaction(settings, store):
    svc = create_app(settings, store).extensions["solargw"]
    ingest.accept(svc, ingest.InverterPost("/i.php", "10.42.0.77", BDM400, time.time()))  # opens the connection
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    bodies = [bytes.fromhex(v["hex"]) for v in VECTORS] + [GARBAGE["random"]]
    ingest.accept_all(svc, [ingest.InverterPost("/i.php", "10.42.0.77", body, time.time()) for body in bodies])
    assert statements.count("BEGIN IMMEDIATE") == 1 and statements.count("COMMIT") == 1
    assert store.counters()[("packets_received", "nep")] == 1 + len(bodies)
    assert len(store.latest()) == len(VECTORS)


def test_timestamp_reply_orders_year_month_day():
    moment = datetime(2026, 3, 25, 7, 8, 9).timestamp()
    assert ingest.timestamp_reply(moment).get_data() == b"20260325070809"


# --- slow: the real gunicorn -------------------------------------------------------------------

def raw_exchange(port: int, request: bytes, read_timeout: float = 10.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=read_timeout) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < 14:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    return data


def assert_http_timestamp(raw: bytes, before: float) -> None:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    assert_timestamp_reply(int(lines[0].split()[1]), headers["content-type"], body[:14], before, time.time())


@pytest.mark.slow
def test_gunicorn_takes_vectors_garbage_and_floods_and_stays_intact(tmp_path):
    with running_web(tmp_path) as web:
        port = web.port
        for vector in VECTORS:
            body = bytes.fromhex(vector["hex"])
            path = "/t.php" if len(body) == 69 else "/i.php"
            before = time.time()
            reply = nep_inverters.post(web.url, path, body)  # the inverter's exact minimal request
            assert_timestamp_reply(reply.status, "text/html", reply.body, before, time.time())
        good = web.store().latest()
        assert set(good) == {v["serial"] for v in VECTORS}

        session = requests.Session()
        for body in GARBAGE.values():
            before = time.time()
            reply = session.post(web.url + "i.php", data=body, timeout=10)
            assert_timestamp_reply(reply.status_code, reply.headers["Content-Type"], reply.content,
                                   before, time.time())

        before = time.time()
        reply = session.post(web.url + "i.php", data=os.urandom(10 * 1024 * 1024), timeout=30)
        assert_timestamp_reply(reply.status_code, reply.headers["Content-Type"], reply.content, before, time.time())

        def chunks():  # no Content-Length: the bounded read stops after MAX_BODY + 1 bytes
            for _ in range(100):
                yield b"\x79" * 10240

        before = time.time()
        reply = session.post(web.url + "t.php", data=chunks(), timeout=30)
        assert_timestamp_reply(reply.status_code, reply.headers["Content-Type"], reply.content, before, time.time())

        # An inverter-style request announcing 10 MB and sending a little: answered at once, not awaited.
        before = time.time()
        raw = raw_exchange(port, b"POST /i.php HTTP/1.1\r\nHost: www.nepviewer.net\r\nConnection: close\r\n"
                                 b"Content-Length: 10485760\r\n\r\n" + b"\x79" * 1000)
        assert time.time() - before < 3
        assert_http_timestamp(raw, before)

        assert web.alive()
        store = web.store()
        assert store.latest() == good
        counters = store.counters()
        assert counters[("packets_rejected", "nep")] == len(GARBAGE) + 3
        assert counters[("packets_received", "nep")] == len(VECTORS) + len(GARBAGE) + 3
        assert counters[("readings_recorded", "nep")] == len(VECTORS)
        assert len(store.rejected()) == len(GARBAGE) + 3
        assert requests.get(web.url + "data.json", timeout=5).json().keys() == good.keys()


@pytest.mark.slow
def test_gunicorn_answers_concurrent_inverters(tmp_path):
    fleet = nep_inverters.make_fleet(20, ["bdm400", "bdm800", "bdm2250"], seed=3)
    noon = datetime.now().replace(hour=12, minute=0, second=0, microsecond=0)
    rng = random.Random(1)
    packets = [(inv.path, inv.packet(noon, rng)) for inv in fleet]
    with running_web(tmp_path) as web:
        replies: list = []
        errors: list = []

        def send(path: str, body: bytes) -> None:
            try:
                for _ in range(5):
                    replies.append(nep_inverters.post(web.url, path, body))
            except Exception as exc:  # collected and asserted below
                errors.append(exc)

        threads = [threading.Thread(target=send, args=packet) for packet in packets]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not errors
        assert len(replies) == 100
        assert all(r.status == 200 and len(r.body) == 14 and r.body.isdigit() for r in replies)
        store = web.store()
        assert len(store.latest()) == 20
        assert store.counters()[("readings_recorded", "nep")] == 100
        assert web.alive()


# --- the command ------------------------------------------------------------------------------------

@pytest.mark.slow
def test_the_seed_servers_environment_variables_choose_where_it_listens(tmp_path):
    port = free_port()
    env = {"NEP_LISTEN_ADDR": "127.0.0.1", "NEP_LISTEN_PORT": str(port)}
    with running_web(tmp_path, {"web": {"port": 1}}, env=env, port=None) as web:
        assert web.url == f"http://127.0.0.1:{port}/"
        assert nep_inverters.post(web.url, "/i.php", BDM400).status == 200


def run_cli(*args: str, env: dict | None = None):
    import subprocess
    import sys

    child_env = clean_env(**(env or {}))
    return subprocess.run([sys.executable, "-m", "appliance", *args], capture_output=True, text=True,
                          timeout=60, env=child_env)


def test_web_says_clearly_when_the_port_is_taken(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = run_cli("web", "--settings", str(tmp_path / "none.toml"), "--bind", f"127.0.0.1:{port}",
                         env={"SOLARGW_DATA_DIR": str(tmp_path / "data")})
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_readings_reach_mqtt_from_the_gunicorn_worker(tmp_path):
    from support.brokers import mosquitto

    with mosquitto() as broker, broker.subscribe("solargw/#") as messages:
        env = {"NEP_MQTT_ADDR": "127.0.0.1", "NEP_MQTT_PORT": str(broker.port)}  # the seed's variables
        with running_web(tmp_path, env=env) as web:
            assert nep_inverters.post(web.url, "/i.php", BDM400).status == 200
            state = messages.wait("solargw/inverter/12345678/state")
            assert "223.89" in state.text


def test_every_other_post_route_lies_under_a_ui_prefix(client):
    """The front receiver decides "an inverter's POST" from the path alone (ingest.is_inverter_path):
    that is only right while every POST route but ingest's starts with one of UI_PREFIXES."""
    app = client.application
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith("ingest.") or not (rule.methods or set()) - {"GET", "HEAD", "OPTIONS"}:
            continue
        assert not ingest.is_inverter_path(rule.rule), f"{rule.rule} ({rule.endpoint}) would be taken for an inverter"
