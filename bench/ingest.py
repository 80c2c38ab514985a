"""Ingest end to end: ``.venv/bin/python -m bench.ingest [packets] [client-threads] [rounds]``.

Posts the same realistic 45-byte ``/i.php`` bodies (from the simulator), each on
a new connection with the inverter's own minimal request, to two receivers
started side by side in one run:

- ``solargw web``: the front receiver (asyncio, in gunicorn's worker) reads the inverter's
  request itself and hands it to the ingest thread: full decode, SQLite store (latest,
  history, energy ledger, counters; the working copy on a RAM file system, ``/dev/shm``, as the
  appliance has it in ``/run/solargw``), then the timestamp reply (gunicorn + Flask, behind it,
  only serve the UI);
- a minimal stdlib ``http.server`` doing only the seed server's work: the
  serial from bytes 19-22 and byte 26 times 3.19 into a dict, then a reply;
- for the breakdown, the front receiver alone (its HTTP, the hand-over to the ingest
  thread and back, the reply) with an ingest that does nothing: what is left of
  ``solargw web``'s figure once decoding and storing are taken away.

Prints packets per second (wall clock, client side) and CPU milliseconds per
packet (user + system time of the server's whole process tree, from /proc),
and the ratio between the two. The packets are posted in rounds, each server
taking its turn in every round (in turning order), and the medians of the rounds
are printed: on a shared machine whose speed drifts by 10-20 %, a ratio of two
runs minutes apart says little. Run on a quiet machine all the same.
"""
from __future__ import annotations

import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

from appliance.sim import nep_inverters
from bench._web import service_env

ROOT = Path(__file__).resolve().parents[1]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
RAM_FS = "/dev/shm" if os.path.isdir("/dev/shm") else None


# --- the seed-like receiver (run in its own process: ``python -m bench.ingest --seed-server``) ---

class SeedHandler(BaseHTTPRequestHandler):
    latest: dict[str, tuple[float, float]] = {}

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if len(body) > 26:
            serial = body[19:23][::-1].hex()
            self.latest[serial] = (time.time(), body[26] * 3.19)
        reply = datetime.now().strftime("%Y%m%d%H%M%S").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args) -> None:
        pass


def serve_receiver_only() -> None:
    from appliance.web.receiver import Receiver
    from appliance.web.server import LoopThread, open_listener

    sock = open_listener("127.0.0.1:0")
    loop = LoopThread()
    loop.run(Receiver(lambda posts: None, None).start([sock]))
    print(f"listening on http://127.0.0.1:{sock.getsockname()[1]}/", flush=True)
    loop.thread.join()


def serve_seed() -> None:
    server = HTTPServer(("127.0.0.1", 0), SeedHandler)
    print(f"listening on http://127.0.0.1:{server.server_address[1]}/", flush=True)
    server.serve_forever()


# --- measuring ------------------------------------------------------------------------------------

def tree_cpu_seconds(root: int) -> float:
    """User + system CPU seconds of ``root`` and all its descendants (Linux /proc)."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        times[pid] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    total, stack = 0.0, [root]
    while stack:
        pid = stack.pop()
        total += times.get(pid, 0.0)
        stack.extend(child for child, parent in parents.items() if parent == pid)
    return total


def blast(url: str, bodies: list[bytes], threads: int) -> float:
    """Post every body (new connection each) from ``threads`` clients; returns wall seconds."""
    chunks = [bodies[i::threads] for i in range(threads)]
    failures: list[str] = []

    def client(part: list[bytes]) -> None:
        for body in part:
            reply = nep_inverters.post(url, "/i.php", body)
            if reply.status != 200 or len(reply.body) != 14:
                failures.append(f"{reply.status} {reply.body[:40]!r}")

    workers = [threading.Thread(target=client, args=(part,)) for part in chunks]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - started
    if failures:
        raise SystemExit(f"{len(failures)} bad replies, e.g. {failures[0]}")
    return elapsed


def measure(pid: int, url: str, bodies: list[bytes], threads: int) -> tuple[float, float]:
    """(packets per second, CPU ms per packet) of the server ``pid`` for posting ``bodies``."""
    cpu_before = tree_cpu_seconds(pid)
    elapsed = blast(url, bodies, threads)
    cpu = tree_cpu_seconds(pid) - cpu_before
    return len(bodies) / elapsed, 1000 * cpu / len(bodies)


def start(argv: list[str], env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                               cwd=ROOT, env=env)
    assert process.stdout is not None
    for line in process.stdout:
        if "listening on " in line:
            return process, line.split("listening on ", 1)[1].strip()
    raise SystemExit(f"{argv[2:]} did not start")


def main() -> None:
    if sys.argv[1:] == ["--seed-server"]:
        serve_seed()
        return
    if sys.argv[1:] == ["--receiver-only"]:
        serve_receiver_only()
        return
    packets = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    threads = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    fleet = nep_inverters.make_fleet(50, ["bdm400", "bdm800"], seed=4)
    noon = datetime.now().replace(hour=12, minute=0)
    rng = random.Random(4)
    bodies = [fleet[i % len(fleet)].packet(noon, rng) for i in range(packets)]
    print(f"ingest: {packets} POSTs of 45-byte /i.php bodies from {len(fleet)} simulated inverters, "
          f"{threads} client threads, a new connection per POST (as inverters do); {os.cpu_count()} CPUs;\n"
          f"  {rounds} rounds, the servers in turn; medians of the rounds (CPU range in brackets)")
    print(f"  {'receiver':<32} {'packets/s':>10} {'CPU ms/packet':>14}")
    # The working copy on a RAM file system, as on the appliance (/run/solargw), not on this disk.
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory(dir=RAM_FS) as ram:
        settings = Path(tmp) / "solargw.toml"
        settings.write_text(f'[data]\ndir = "{tmp}/data"\nram_dir = "{ram}"\nmax_inverters = 1000\n'
                            f'new_inverters_per_hour = 1000\n'
                            f'[mqtt]\nenabled = false\n[admin]\nsecret_key = "bench"\n')
        web, web_url = start([sys.executable, "-m", "appliance", "web", "--settings", str(settings),
                              "--bind", "127.0.0.1:0"], service_env())
        seed, seed_url = start([sys.executable, "-m", "bench.ingest", "--seed-server"])
        alone, alone_url = start([sys.executable, "-m", "bench.ingest", "--receiver-only"])
        servers = {"ours": (web.pid, web_url), "seed": (seed.pid, seed_url), "alone": (alone.pid, alone_url)}
        figures: dict[str, list[tuple[float, float]]] = {name: [] for name in servers}
        try:
            time.sleep(1.0)
            for pid, url in servers.values():  # warm up (imports, first SQLite pages)
                blast(url, bodies[: max(20, len(bodies) // 10)], threads)
            # Rounds, the servers' order turning: a drift of the machine's speed meets all three alike.
            share = len(bodies) // rounds
            for round_ in range(rounds):
                part = bodies[round_ * share:(round_ + 1) * share]
                names = list(servers)[round_ % 3:] + list(servers)[:round_ % 3]
                for name in names:
                    figures[name].append(measure(*servers[name], part, threads))
        finally:
            for process in (web, seed, alone):
                process.terminate()
                process.wait(15)
    for name, label in (("ours", "solargw web (receiver, SQLite)"), ("seed", "seed-like stdlib http.server"),
                        ("alone", "receiver alone (no-op ingest)")):
        rates, cpus = zip(*figures[name])
        print(f"  {label:<32} {statistics.median(rates):10.0f} {statistics.median(cpus):14.3f}"
              f"   ({min(cpus):.3f}-{max(cpus):.3f})")
    for name, label in (("ours", "ratio solargw / seed"), ("alone", "ratio receiver alone / seed")):
        ratios = [ours[1] / base[1] for ours, base in zip(figures[name], figures["seed"])]
        rate = statistics.median(o[0] / b[0] for o, b in zip(figures[name], figures["seed"]))
        print(f"  {label:<32} {rate:10.2f} {statistics.median(ratios):14.2f}"
              f"   ({min(ratios):.2f}-{max(ratios):.2f}, per round)")


if __name__ == "__main__":
    main()
