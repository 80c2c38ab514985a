"""A soak of the collector under everything at once: ``.venv/bin/python -m bench.soak [minutes]``.

The real ``solargw web`` (front receiver, gunicorn, Flask, SQLite) with MQTT to a real mosquitto,
for ``minutes`` (default 3), while at the same time:

- 40 simulated inverters post a report each every 2 s (a day's traffic of a large fleet, sped up);
- 64 stalled connections (request line only, header trickle, garbage without a line end, body cut
  short) are held all along, opened again whenever the service closes them;
- 300 idle connections are held open;
- malformed requests (random bytes, truncated heads, bad chunking, oversize bodies) arrive
  without pause, and reports from forged serials (the caps are 60 inverters, 50 new an hour);
- the gunicorn worker is killed (SIGKILL) every minute, and the broker is stopped for 20 s in the
  middle.

Then it prints: inverter replies answered and their latency (median, 99th percentile, max),
acknowledged reports that were not stored (should be none), the worker's memory at the start and
the end, the rejected-frame table's size, inverters known (forged serials are capped), log lines
per minute, CPU per inverter report, and ``PRAGMA integrity_check``.
"""
from __future__ import annotations

import contextlib
import os
import random
import re
import select
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

from appliance.protocols.nep import build_request
from appliance.sim import nep_inverters
from appliance.store import ram_path
from bench._proctree import process_tree
from bench._web import service_env

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from support.brokers import mosquitto  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
NOON = datetime.now().replace(hour=12, minute=0, second=0, microsecond=0)


def post(port: int, data: bytes, timeout: float = 5.0) -> tuple[bool, float]:
    started = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            reply = b""
            while chunk := sock.recv(4096):
                reply += chunk
    except OSError:
        return False, time.monotonic() - started
    head, _, body = reply.partition(b"\r\n\r\n")
    return head.startswith(b"HTTP/1.1 200") and len(body) == 14 and body.isdigit(), time.monotonic() - started


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        total += (int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])) / CLOCK_TICKS
    return total


class Soak:
    def __init__(self, port: int, seconds: float) -> None:
        self.port = port
        self.seconds = seconds
        self.stop = threading.Event()
        self.latencies: list[float] = []
        self.failed = 0
        self.acked: set[str] = set()
        self.hostile = 0
        self.lock = threading.Lock()

    def inverters(self) -> None:
        fleet = nep_inverters.make_fleet(40, ["bdm400", "bdm800", "bdm2000"], seed=15)
        rng = random.Random(15)
        moment = NOON
        while not self.stop.is_set():
            started = time.monotonic()
            moment += timedelta(seconds=30)
            for inverter in fleet:
                body = inverter.packet(moment, rng)
                ok, took = post(self.port, build_request("www.nepviewer.net", inverter.path, body))
                with self.lock:
                    self.latencies.append(took)
                    if ok:
                        self.acked.add(body.hex())
                    else:
                        self.failed += 1
            self.stop.wait(max(0.0, 2.0 - (time.monotonic() - started)))

    def stallers(self, count: int = 64) -> None:
        kinds = [b"POST /i.php HTTP/1.1\r\n", b"POST /i.php HTTP/1.1\r\nX-Slow: ",
                 b"\x16\x03\x01\x02\x00\x01\x00" + b"\x8a" * 40,
                 b"POST /i.php HTTP/1.1\r\nContent-Length: 45\r\n\r\ny&"]
        slots: list[socket.socket | None] = [None] * count
        trickled = time.monotonic()
        while not self.stop.is_set():
            for index, sock in enumerate(slots):
                if sock is None:
                    try:
                        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
                        sock.sendall(kinds[index % 4])
                        sock.setblocking(False)
                        slots[index] = sock
                    except OSError:
                        pass
            live = [s for s in slots if s is not None]
            readable, _, _ = select.select(live, [], [], 0.5)
            for index, sock in enumerate(slots):
                if sock in readable:
                    try:
                        while sock.recv(4096):
                            pass
                    except BlockingIOError:
                        continue
                    except OSError:
                        pass
                    sock.close()
                    slots[index] = None
            if time.monotonic() - trickled > 0.5:
                trickled = time.monotonic()
                for index, sock in enumerate(slots):
                    if sock is not None and index % 4 == 1:
                        try:
                            sock.send(b"a")
                        except OSError:
                            pass
        for sock in slots:
            if sock is not None:
                sock.close()

    def idle(self, count: int = 300) -> None:
        held = []
        for _ in range(count):
            try:
                held.append(socket.create_connection(("127.0.0.1", self.port), timeout=5))
            except OSError:
                break
        self.stop.wait()
        for sock in held:
            sock.close()

    def fuzz(self) -> None:
        self.stop.wait(5)  # the fleet first: forged serials then meet the caps (60 in all, 50 new an hour)
        rng = random.Random(16)
        body = nep_inverters.make_fleet(1, ["bdm400"], seed=16)[0].packet(NOON, rng)
        while not self.stop.is_set():
            kind = rng.randrange(6)
            if kind == 0:
                data = rng.randbytes(rng.randrange(1, 300))
            elif kind == 1:
                data = build_request("x", "/i.php", body)[:rng.randrange(1, 80)]
            elif kind == 2:
                data = b"POST /i.php HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
            elif kind == 3:
                data = b"POST /i.php HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n" + body
            elif kind == 4:  # a forged serial
                serial = f"{rng.getrandbits(32):08x}"
                data = build_request("x", "/i.php", nep_inverters.NepInverter(serial, "bdm400").packet(NOON, rng))
            else:
                data = b"POST /i%0a.php HTTP/1.1\r\nContent-Length: 45\r\n\r\n" + rng.randbytes(45)
            post(self.port, data, timeout=2)
            self.hostile += 1
            time.sleep(0.005)


def start_web(settings: Path) -> tuple[subprocess.Popen, int, Path]:
    log = settings.with_name("web.log")
    process = subprocess.Popen([sys.executable, "-m", "appliance", "web", "--settings", str(settings), "--bind",
                                "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=open(log, "wb"), text=True,
                               env=service_env(), start_new_session=True)
    for line in process.stdout:
        match = re.search(r"listening on http://127\.0\.0\.1:(\d+)/", line)
        if match:
            port = int(match.group(1))
            break
    else:
        raise SystemExit(f"solargw web did not start:\n{log.read_text()}")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the worker answers
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(b"GET /data.json HTTP/1.1\r\n\r\n")
                if sock.recv(12) == b"HTTP/1.1 200":
                    break
        except OSError:
            pass
        time.sleep(0.2)
    return process, port, log


def main() -> None:
    minutes = float(sys.argv[1]) if len(sys.argv) > 1 else 3.0
    seconds = minutes * 60
    with tempfile.TemporaryDirectory() as tmp, mosquitto() as broker:
        data = Path(tmp) / "data"
        settings = Path(tmp) / "solargw.toml"
        settings.write_text(f'[data]\ndir = "{data}"\nmax_inverters = 60\nnew_inverters_per_hour = 50\n[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\n'
                            '[admin]\nsecret_key = "soak"\n[web]\nthreads = 4\n')
        web, port, log = start_web(settings)
        time.sleep(2)
        soak = Soak(port, seconds)
        workers = [threading.Thread(target=f, daemon=True) for f in (soak.inverters, soak.stallers, soak.idle,
                                                                       soak.fuzz)]
        pids = process_tree(web.pid)
        worker = max(pids)
        rss_start = rss_mib(worker)
        cpu_start = cpu_seconds(pids)
        started = time.monotonic()
        for thread in workers:
            thread.start()
        print(f"soak: {minutes:g} min against solargw web on port {port}: 40 inverters every 2 s, 64 stalled and "
              "300 idle connections, a stream of malformed requests and forged serials, the worker killed "
              "every minute, the broker stopped for 20 s in the middle", flush=True)
        kills, broker_down, rss_max = 0, False, rss_start
        while time.monotonic() - started < seconds:
            time.sleep(1)
            elapsed = time.monotonic() - started
            current = [p for p in process_tree(web.pid) if p != web.pid]
            if current:
                rss_max = max(rss_max, rss_mib(current[0]))
            if elapsed >= 60 * (kills + 1) and elapsed < seconds - 15 and current:
                os.kill(current[0], signal.SIGKILL)
                kills += 1
            if not broker_down and elapsed >= seconds / 2 - 10:
                broker.stop()
                broker_down, down_at = True, time.monotonic()
            if broker_down and broker.process is None and time.monotonic() - down_at >= 20:
                broker.start()
        soak.stop.set()
        for thread in workers:
            thread.join(20)
        pids = process_tree(web.pid)
        cpu = cpu_seconds(pids) - cpu_start
        rss_end = rss_mib(max(pids)) if len(pids) > 1 else 0.0
        # The store's working copy, before the service stops: it holds every reading taken since
        # the last database commit (frames included) and the newest counters.
        with contextlib.closing(sqlite3.connect(ram_path(data))) as db:
            stored = {row[0].hex() for row in db.execute("SELECT frame FROM recent")}
            rejected = db.execute("SELECT COUNT(*) FROM rejected").fetchone()[0]
            inverters = db.execute("SELECT COUNT(*) FROM inverters").fetchone()[0]
            counters = dict(((name, family), value) for name, family, value in
                            db.execute("SELECT name, family, value FROM counters"))
        web.send_signal(signal.SIGTERM)
        web.wait(30)
        checks = []
        for path in (data / "solargw.db", ram_path(data)):  # the card's database after the stop's commit
            with contextlib.closing(sqlite3.connect(path)) as db:
                checks.append(db.execute("PRAGMA integrity_check").fetchone()[0])
        check = "ok" if checks == ["ok", "ok"] else "; ".join(checks)
        lines = log.read_text(errors="replace").splitlines()
    latencies = sorted(soak.latencies)
    lost = len(soak.acked - stored)
    answered = len(latencies) - soak.failed
    print(f"  inverter reports        {len(latencies)} sent, {answered} answered "
          f"({100 * answered / max(1, len(latencies)):.2f} %; during a worker restart they wait in the backlog)")
    print(f"  reply latency           median {statistics.median(latencies) * 1000:.1f} ms, "
          f"p99 {latencies[int(len(latencies) * 0.99)] * 1000:.1f} ms, max {latencies[-1] * 1000:.0f} ms")
    print(f"  acknowledged, not stored {lost} of {len(soak.acked)}")
    print(f"  hostile requests        {soak.hostile} (+ 64 stalled, 300 idle held); {kills} worker kills")
    print(f"  worker memory (RSS)     {rss_start:.1f} MiB at the start, {rss_end:.1f} at the end, "
          f"{rss_max:.1f} at most")
    print(f"  rejected frames kept    {rejected} (of {counters.get(('packets_rejected', 'nep'), 0)} rejected)")
    print(f"  inverters known         {inverters} (new ones refused: {counters.get(('inverters_refused', 'nep'), 0)})")
    print(f"  log                     {len(lines)} lines, {len(lines) / minutes:.0f} a minute; "
          f"tracebacks: {sum('Traceback' in line for line in lines)}")
    print(f"  CPU                     {cpu:.1f} s for the service, {1000 * cpu / max(1, len(latencies)):.2f} ms "
          "per inverter report (everything else included)")
    print(f"  integrity_check         {check}")
    if lost or check != "ok":
        raise SystemExit("acknowledged reports were lost or the database is damaged")


if __name__ == "__main__":
    main()
