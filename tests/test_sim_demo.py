"""``solargw demo`` (what ``make demo`` runs): ten live inverters within a minute (three of them behind a
simulated Enecsys gateway), a week of history behind each, Ctrl-C stops everything."""
from __future__ import annotations

import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import date, timedelta

import pytest
import requests

from appliance.settings import load
from appliance.store import Store
from support.processes import clean_env

pytestmark = pytest.mark.slow


def _closed(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return False
    except OSError:
        return True


def test_demo_shows_ten_live_inverters_with_a_week_of_history_and_stops_cleanly(tmp_path):
    env = clean_env(PYTHONUNBUFFERED="1")
    env["TZ"] = "Asia/Kolkata"  # the demo's UI shows this PC's clock
    demo = subprocess.Popen([sys.executable, "-m", "appliance", "demo", "--port", "0", "--dir", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines: queue.Queue[str] = queue.Queue()
    output: list[str] = []
    threading.Thread(target=lambda: [lines.put(line) for line in demo.stdout], daemon=True).start()
    started = time.monotonic()
    url = password = mqtt_port = None
    try:
        while url is None or password is None:
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                assert demo.poll() is None, "demo exited:\n" + "".join(output)
                assert time.monotonic() - started < 90, "demo did not print its URL:\n" + "".join(output)
                continue
            output.append(line)
            if match := re.search(r"mqtt://127\.0\.0\.1:(\d+)", line):
                mqtt_port = int(match.group(1))
            if match := re.search(r"Open (http://\S+?)/? .*password: (\S+)\)", line):
                url, password = match.group(1).rstrip("/"), match.group(2)
        ready_at = time.monotonic()

        store = Store(tmp_path / "data")  # read like another process
        try:
            live: dict[str, str] = {}
            while time.monotonic() - ready_at < 60 and len(live) < 10:
                sources = {serial: entry.source for serial, entry in store.latest().items()}
                live = {serial: source for serial, source in sources.items() if "history" not in source}
                time.sleep(1)
        finally:
            store.close()
        log = (tmp_path / "solargw.log").read_text(errors="replace")
        assert len(live) == 10, f"{len(live)} inverters live after a minute: {sources}\n{log[-3000:]}"
        cards = requests.get(url + "/ui-api/cards", timeout=5).json()["inverters"]
        assert sorted(c["family"] for c in cards) == ["enecsys"] * 7 + ["nep"] * 3
        assert all(c["online"] for c in cards)
        nep_models = {c["model"] for c in cards if c["family"] == "nep"}
        assert len(nep_models) == 3, nep_models
        behind_gateway = sorted(s for s, source in sources.items() if source == "gateway:127.0.0.1")
        assert behind_gateway == ["120069930", "120069931", "120069932"], sources

        # the first look: a week of energy per day and yesterday's power curve, for every inverter
        yesterday = (date.today() - timedelta(days=1)).isoformat()
        for card in cards:
            serial = card["serial"]
            daily = requests.get(url + "/api/energy/daily", params={"serial": serial, "days": 10}, timeout=5).json()
            days = [d for d in daily["energy"] if d["wh"] > 0]
            assert len(days) >= 7, (serial, daily)
            if card["family"] == "enecsys":  # the live part of today is the simulator's own (no jump)
                assert days[-1]["wh"] < 220 * 15, (serial, days[-1])
            page = requests.get(url + f"/inverter/{serial}", params={"day": yesterday}, timeout=5).text
            charts = [int(n) for n in re.findall(r'class="chart"[^>]*data-points="(\d+)"', page)]
            assert charts and charts[0] > 50, (serial, charts)  # yesterday's power, every 10 minutes of sun
            assert page.count('class="bar"') >= 7
        assert load(tmp_path / "solargw.toml", env={}).system.timezone == "Asia/Kolkata"

        # the printed password logs in
        session = requests.Session()
        page = session.get(url + "/login", timeout=5).text
        token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        reply = session.post(url + "/login", data={"csrf_token": token, "password": password}, allow_redirects=False,
                             timeout=5)
        assert reply.status_code == 302
        assert session.get(url + "/settings", allow_redirects=False, timeout=5).status_code == 200
    finally:
        if demo.poll() is None:
            demo.send_signal(signal.SIGINT)  # what Ctrl-C does
        try:
            code = demo.wait(60)
        except subprocess.TimeoutExpired:
            demo.kill()
            time.sleep(0.5)
            while not lines.empty():
                output.append(lines.get())
            log = (tmp_path / "solargw.log").read_text(errors="replace")
            pytest.fail("the demo did not stop within 60 s of Ctrl-C:\n" + "".join(output) + log[-3000:])
    assert code == 0, "".join(output)
    host, port = url.split("//", 1)[1].rsplit(":", 1)
    assert _closed(host, int(port)), "the web service is still listening after Ctrl-C"
    assert mqtt_port and _closed("127.0.0.1", mqtt_port), "mosquitto is still listening after Ctrl-C"
