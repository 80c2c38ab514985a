"""An SD card that does not take writes is visible everywhere a user looks (issue 14, point 4).

The real ``solargw web`` (gunicorn) runs on a data directory whose file system goes read-only or
fills up, with MQTT to a real mosquitto. Reports are still answered and shown (from the RAM working
copy); the status page, every page's banner, ``/metrics`` and Home Assistant's "Storage" problem
sensor say what is wrong; once the card takes writes again the waiting readings reach it and
everything says ok. Needs root (mount).
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import time
from pathlib import Path
from typing import Any, Callable

import jinja2
import pytest
import requests

from support.brokers import MessageLog, mosquitto
from support.waiting import wait_for
from support.web_service import RunningWeb, start_web
from test_store_storage import ext4, mount, tmpfs
from test_web_ingest import assert_timestamp_reply
from support.vectors import NEP_BDM400, NEP_BDM800

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mount)")]

REPORTS = [(bytes.fromhex(v["hex"]), v["serial"]) for v in (NEP_BDM400, NEP_BDM800)]
DISCOVERY = re.compile(r"homeassistant/device/([^/]+)/config")


def settings_for(card: Path, ram: Path, broker_port: int) -> dict[str, Any]:
    return {"data": {"dir": str(card / "solargw"), "ram_dir": str(ram), "flush_seconds": 0.25},
            "mqtt": {"enabled": True, "host": "127.0.0.1", "port": broker_port}}


def post_report(web: RunningWeb, index: int) -> str:
    body, serial = REPORTS[index % len(REPORTS)]
    before = time.time()
    reply = requests.post(web.url + "i.php", data=body, timeout=10)
    assert_timestamp_reply(reply.status_code, reply.headers["Content-Type"], reply.content, before, time.time())
    return serial


def page(web: RunningWeb, path: str) -> str:
    reply = requests.get(web.url + path, timeout=10)
    assert reply.status_code == 200, reply.text
    return reply.text


def metric(web: RunningWeb, name: str, labels: str = "") -> float | None:
    match = re.search(rf"^{re.escape(name + labels)} (\S+)$", page(web, "metrics"), re.M)
    return float(match.group(1)) if match else None


def storage_component(log: MessageLog) -> dict[str, Any]:
    """The web service's announced Storage entity (the latest appliance device config)."""
    configs = [json.loads(m.payload) for m in log.messages
               if DISCOVERY.fullmatch(m.topic) and m.topic.endswith("_web/config") and m.payload]
    assert configs, "the web service announced no appliance device"
    return configs[-1]["components"].get("storage", {})


def storage_sensor(log: MessageLog) -> str | None:
    """What Home Assistant shows for the Storage binary sensor: its template over the newest status."""
    component = storage_component(log)
    statuses = [m for m in log.on(component.get("state_topic", "")) if m.payload]
    if not statuses:
        return None
    return jinja2.Template(component["value_template"]).render(value_json=json.loads(statuses[-1].payload))


def waiting(log: MessageLog) -> int | None:
    statuses = [json.loads(m.payload) for m in log.on("solargw/web/status") if m.payload]
    return statuses[-1].get("storage_queued") if statuses else None


def assert_problem_visible(web: RunningWeb, log: MessageLog, state: str, serials: set[str]) -> None:
    wait_for(lambda: metric(web, "solargw_storage_state", f'{{state="{state}"}}') == 1, 30, f"storage {state}")
    queued = metric(web, "solargw_storage_queued_readings")
    assert queued is not None and queued >= 1
    assert metric(web, "solargw_storage_state", '{state="ok"}') == 0
    assert serials <= set(requests.get(web.url + "data.json", timeout=10).json())  # shown from RAM
    status = page(web, "status")
    row = re.search(r'<td id="storage-state"[^>]*>(.*?)</td>', status, re.S).group(1)
    assert row.startswith(f"{state} since") and re.search(r"\d+ readings? waits? in memory", row), row
    for path in ("", "status", f"inverter/{sorted(serials)[0]}"):
        banner = re.search(r'<p class="flash error" id="storage-problem">(.*?)</p>', page(web, path), re.S)
        assert banner, f"no storage banner on /{path}"
        assert re.match(rf"The SD card does not take writes \({state}\) since \d\d:\d\d: \d+ readings? waits? in memory",
                        banner.group(1)), banner.group(1)
    component = storage_component(log)
    assert (component.get("platform"), component.get("device_class"), component.get("entity_category"),
            component.get("name")) == ("binary_sensor", "problem", "diagnostic", "Storage")
    wait_for(lambda: storage_sensor(log) == "ON" and (waiting(log) or 0) >= 1, 30, "the Storage sensor ON over MQTT")


def assert_ok_visible(web: RunningWeb, log: MessageLog) -> None:
    wait_for(lambda: metric(web, "solargw_storage_state", '{state="ok"}') == 1
             and metric(web, "solargw_storage_queued_readings") == 0, 30, "storage ok again")
    assert metric(web, "solargw_storage_last_write_timestamp_seconds") > time.time() - 60
    assert re.search(r'<td id="storage-state"[^>]*>ok \(last write to the SD card: ', page(web, "status"))
    assert 'id="storage-problem"' not in page(web, "")
    wait_for(lambda: storage_sensor(log) == "OFF" and waiting(log) == 0, 30, "the Storage sensor OFF over MQTT")


@contextlib.contextmanager
def web_and_broker(tmp_path: Path, card: Path) -> Any:
    ram = tmp_path / "ram"
    ram.mkdir(exist_ok=True)
    with mosquitto() as broker, broker.subscribe("homeassistant/#", "solargw/#") as log:
        web = start_web(tmp_path, settings_for(card, ram, broker.port))
        try:
            yield web, log, broker
        finally:
            web.stop()


def restart(web: RunningWeb, tmp_path: Path, meanwhile: Callable[[], None]) -> RunningWeb:
    assert web.stop() == 0, web.log()
    meanwhile()
    return start_web(tmp_path, keep_settings=True)


def test_a_service_on_a_read_only_card_shows_it_and_writes_once_it_can(tmp_path):
    with tmpfs(tmp_path / "card", size="16m") as card, web_and_broker(tmp_path, card) as (web, log, _broker):
        post_report(web, 0)
        assert_ok_visible(web, log)
        # A restart, and the card comes up read-only (the boot's check found errors, say).
        web = restart(web, tmp_path, lambda: mount("-o", "remount,ro", str(card)))
        try:
            serials = {post_report(web, n) for n in range(2)}
            assert_problem_visible(web, log, "read-only", serials)
            mount("-o", "remount,rw", str(card))
            assert_ok_visible(web, log)
            assert "the card takes writes again" in web.log()
        finally:
            web.stop()
        # Everything reached the card: a store opened on it alone (no working copy) has both inverters.
        from appliance.store import Store

        store = Store(card / "solargw", ram_dir=tmp_path / "other-ram", autoflush=False)
        try:
            assert {i.serial for i in store.inverters()} == serials
        finally:
            store.close()


def test_a_full_card_shows_it_and_writes_once_there_is_room(tmp_path):
    with tmpfs(tmp_path / "card", size="4m") as card, web_and_broker(tmp_path, card) as (web, log, _broker):
        post_report(web, 0)
        assert_ok_visible(web, log)
        filler = card / "filler"
        with contextlib.suppress(OSError), open(filler, "wb") as handle:  # whatever room is left
            while True:
                handle.write(b"\0" * 4096)
                handle.flush()
        serials = set()
        deadline = time.monotonic() + 30
        while metric(web, "solargw_storage_state", '{state="full"}') != 1 and time.monotonic() < deadline:
            serials.add(post_report(web, len(serials)))  # the next database commit fails
            time.sleep(0.5)
        serials.add(post_report(web, 1))  # and this one waits in memory
        assert_problem_visible(web, log, "full", serials)
        assert "cannot write to the card" in web.log() and "is full" in web.log()
        filler.unlink()
        assert_ok_visible(web, log)


def test_a_card_the_kernel_remounts_read_only_while_the_service_runs(tmp_path):
    """ext4's errors=remount-ro on a failing card, with the database open: it stays read-only."""
    with ext4(tmp_path / "card", size_mb=32) as (card, device), web_and_broker(tmp_path, card) as (web, log, _b):
        post_report(web, 0)
        assert_ok_visible(web, log)
        Path(f"/sys/fs/ext4/{Path(device).name}/trigger_fs_error").write_text("test: card failing")
        serials = {post_report(web, n) for n in range(2)}
        assert_problem_visible(web, log, "read-only", serials)
