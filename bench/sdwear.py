"""SD-card writes per day at the reference load: ``python -m bench sdwear [--speed N] [--windows 300,60]``.

The reference load: 20 NEP inverters posting every 5 minutes and 20 Enecsys inverters
reporting every 60 s from 06:00 to 20:00, silent at night. Everything the appliance runs
for them runs for real: ``solargw web`` (gunicorn), ``solargw zigbee`` against the emulated
coordinator (``solargw simulate enecsys``, 20 inverters following the day curve) and
mosquitto with the appliance's configuration (Debian's main file, or the role's own
``mosquitto.conf`` if it has one, and every file of ``ansible/roles/mosquitto/files``).

One simulated day (05:30 to 05:30) runs ``--speed`` times faster than real time: the
inverters post faster, and the time settings scale with them (``[data] flush_seconds`` and
``history_seconds``, mosquitto's autosave, forced with SIGUSR1), so that every group commit
holds what it would hold in real time; the readings' timestamps are real time (compressed),
which only the bucketing sees, and it is scaled too. The bench syncs the card's file
system every simulated 30 s, as the kernel's writeback would.

Counted: ``write_bytes`` (/proc/PID/io: what reached the block layer, so WAL checkpoints
included, RAM file systems not) of every process of web, zigbee and mosquitto; one last
checkpoint at the end (pages written during the day and still in the WAL); and the
history compaction (the day that leaves the 7 kept at 5 minutes moved to the 15-minute table,
in 6 commits, on a card holding 8 days at the reference load), measured apart. Logs go to journald, which
keeps them in RAM on the appliance (ansible role ``sdcard``). As root, the card is a
loop-mounted ext4 file system and the device's own count (file system journal included)
is printed too.
"""
from __future__ import annotations

import argparse
import contextlib
import getpass
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Iterator

from bench._proctree import process_tree
from bench._web import service_env

ROOT = Path(__file__).resolve().parents[1]
NEP_INVERTERS, NEP_INTERVAL = 20, 300.0
ENECSYS_INVERTERS, ENECSYS_INTERVAL = 20, 60.0
HISTORY_SECONDS = 300.0
DAY = (6.0, 20.0)
START = 4.0
"""The simulated clock starts at 04:00; the day measured runs from 05:30 to 05:30."""
IDLE = (23.5, 29.5)
"""The idle stretch (23:30 to 05:30): the evening's readings have reached the database by then."""
WRITEBACK_SECONDS = 30.0
"""The kernel writes dirty pages back within ~30 s (dirty_expire_centisecs); write_bytes counts a
page when it is dirtied, so a page written twice before writeback would count once."""


# --- processes and their writes ------------------------------------------------------------------

def write_bytes(pid: int, tid: int | None = None) -> int | None:
    path = f"/proc/{pid}/io" if tid is None else f"/proc/{pid}/task/{tid}/io"
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class IoMeter:
    """write_bytes of named process trees, sampled often so that exited processes still count."""

    def __init__(self, roots: dict[str, int]):
        self.roots = roots
        self.first: dict[tuple[str, int], int] = {}
        self.last: dict[tuple[str, int], int] = {}
        self.threads: dict[tuple[str, int, int], tuple[str, int, int]] = {}  # -> (thread name, first, last)
        self.started = False

    def start(self) -> None:
        self.sample()
        self.started = True

    def sample(self) -> None:
        for name, root in self.roots.items():
            for pid in process_tree(root):
                value = write_bytes(pid)
                if value is None:
                    continue
                key = (name, pid)
                if key not in self.first:
                    self.first[key] = value if not self.started else 0
                self.last[key] = value
                with contextlib.suppress(OSError):
                    for task in Path(f"/proc/{pid}/task").iterdir():
                        tid = int(task.name)
                        written = write_bytes(pid, tid)
                        if written is None:
                            continue
                        thread = (task / "comm").read_text().strip()
                        label, first, _ = self.threads.get((name, pid, tid), (thread, written if not self.started else 0, 0))
                        self.threads[(name, pid, tid)] = (label, first, written)

    def by_thread(self) -> dict[tuple[str, str], int]:
        """What each thread of each process wrote (by thread name), as far as sampled."""
        found: dict[tuple[str, str], int] = {}
        for (name, _pid, _tid), (label, first, last) in self.threads.items():
            found[(name, label)] = found.get((name, label), 0) + last - first
        return found

    def totals(self) -> dict[str, int]:
        totals = {name: 0 for name in self.roots}
        for key, value in self.last.items():
            totals[key[0]] += value - self.first[key]
        return totals


def _root_mount_options() -> str:
    """The appliance's root file system options, from the image's fstab (image/build.py)."""
    source = (ROOT / "image/build.py").read_text()
    match = re.search(r'^ROOT_MOUNT_OPTIONS = "([^"]+)"', source, re.M) \
        or re.search(r"LABEL=\{ROOT_LABEL\}\s+/\s+ext4\s+([^\s{]+)", source)
    return match.group(1) if match else "noatime"


ROOT_MOUNT_OPTIONS = _root_mount_options()


def sectors_written(device: str | None) -> int | None:
    if device is None:
        return None
    fields = Path(f"/sys/block/{Path(device).name}/stat").read_text().split()
    return int(fields[6]) * 512


@contextlib.contextmanager
def card_file_system(workdir: Path) -> Iterator[tuple[Path, str | None]]:
    """A fresh ext4 on a loop device (root), else a directory on the disk."""
    mount = workdir / "card"
    mount.mkdir()
    if os.geteuid() != 0 or not shutil.which("losetup") or not shutil.which("mkfs.ext4"):
        yield mount, None
        return
    image = workdir / "card.img"
    with open(image, "wb") as handle:
        handle.truncate(1024 * 1024 * 1024)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
    device = subprocess.run(["losetup", "--find", "--show", str(image)], check=True, capture_output=True,
                            text=True).stdout.strip()
    try:
        subprocess.run(["mount", "-o", ROOT_MOUNT_OPTIONS, device, str(mount)], check=True)
        try:
            yield mount, device
        finally:
            subprocess.run(["umount", str(mount)], check=False)
    finally:
        subprocess.run(["losetup", "-d", device], check=False)


def sync_file_system(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)  # the directory
        if hasattr(os, "syncfs"):
            os.syncfs(fd)
        else:
            os.sync()
    finally:
        os.close(fd)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- mosquitto as on the appliance ------------------------------------------------------------------

@dataclass
class Mosquitto:
    config: Path
    persistence: bool
    autosave_seconds: float
    on_changes: bool


def role_files(role: Path) -> dict[str, str]:
    """The configuration files the role installs in /etc/mosquitto/conf.d: its ``files/*.conf`` and its
    ``templates/*.conf.j2`` rendered with the role's defaults and vars, as Ansible would."""
    import jinja2
    import yaml

    variables: dict = {"ansible_managed": "Ansible managed"}
    for name in ("defaults/main.yml", "vars/main.yml"):
        if (role / name).exists():
            variables.update(yaml.safe_load((role / name).read_text()) or {})
    found = {path.name: path.read_text() for path in sorted((role / "files").glob("*.conf"))}
    for path in sorted((role / "templates").glob("*.conf.j2")):
        found[path.name.removesuffix(".j2")] = jinja2.Template(path.read_text(), keep_trailing_newline=True,
                                                               trim_blocks=True).render(**variables)
    return found


def mosquitto_config(card: Path, workdir: Path, port: int) -> Mosquitto:
    """Debian's mosquitto.conf and the role's conf.d files, with every path moved under ``card`` (the
    measured file system) or ``workdir``, and the listener on ``port`` of the loopback."""
    role = ROOT / "ansible/roles/mosquitto"
    conf_d = workdir / "mosquitto.d"
    conf_d.mkdir()
    for name, text in role_files(role).items():
        if name != "mosquitto.conf":
            text = re.sub(r"(?m)^listener\s+1883\b.*$", f"listener {port} 127.0.0.1", text)
            (conf_d / name).write_text(text)
    main = role / "files/mosquitto.conf"
    main = main if main.exists() else Path("/etc/mosquitto/mosquitto.conf")
    text = main.read_text() if main.exists() else "persistence true\npersistence_location /var/lib/mosquitto/\n"
    (card / "mosquitto").mkdir()
    lines = []
    for line in text.splitlines():
        words = line.split()
        if words[:1] == ["pid_file"]:
            line = f"pid_file {workdir / 'mosquitto.pid'}"
        elif words[:1] == ["persistence_location"]:
            line = f"persistence_location {card / 'mosquitto'}/"
        elif words[:2] == ["log_dest", "file"]:
            line = f"log_dest file {card / 'mosquitto.log'}"
        elif words[:1] == ["include_dir"]:
            line = f"include_dir {conf_d}"
        lines.append(line)
    if not any(re.search(r"(?m)^listener\s", f.read_text()) for f in conf_d.glob("*.conf")):
        lines.append(f"listener {port} 127.0.0.1")
    lines.append(f"user {getpass.getuser()}")  # as root it would drop to "mosquitto", who cannot write here
    config = workdir / "mosquitto.conf"
    config.write_text("\n".join(lines) + "\n")
    settings = {}
    for source in [config, *sorted(conf_d.glob("*.conf"))]:  # the last word wins, as in mosquitto
        for line in source.read_text().splitlines():
            words = line.split()
            if len(words) >= 2 and not words[0].startswith("#"):
                settings[words[0]] = words[1]
    return Mosquitto(config, settings.get("persistence", "false") == "true",
                     float(settings.get("autosave_interval", 1800)), settings.get("autosave_on_changes") == "true")


# --- one simulated day ----------------------------------------------------------------------------

@dataclass
class DayFigures:
    window: float
    per_process: dict[str, int]
    per_process_day: dict[str, int]
    per_thread: dict[tuple[str, str], int]
    final_checkpoint: int
    night_bytes: int
    night_minutes: float
    readings: int
    device_bytes: int | None
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.per_process.values()) + self.final_checkpoint


class Services:
    def __init__(self, workdir: Path, logs: Path, tmp: Path):
        self.workdir, self.logs = workdir, logs
        self.processes: dict[str, subprocess.Popen] = {}
        self.env = service_env()
        # /tmp is a RAM file system on the appliance (role sdcard): gunicorn's worker heartbeat
        # file lives there.
        self.env.update(PYTHONUNBUFFERED="1", TMPDIR=str(tmp))

    def start(self, name: str, argv: list[str], ready: str, timeout: float = 60.0) -> str:
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                                   env=self.env, start_new_session=True)
        self.processes[name] = process
        found: list[str] = []
        event = threading.Event()

        def pump() -> None:
            with open(self.logs / f"{name}.log", "w") as out:
                assert process.stdout is not None
                for line in process.stdout:
                    out.write(line)
                    out.flush()
                    if not found and re.search(ready, line):
                        found.append(line.strip())
                        event.set()
            event.set()

        threading.Thread(target=pump, daemon=True).start()
        if not event.wait(timeout) or not found:
            self.stop()
            raise SystemExit(f"{name} did not start: see {self.logs}/{name}.log")
        return found[0]

    def stop(self) -> None:
        for name, process in reversed(list(self.processes.items())):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(20)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait(5)


def counted_readings(ram_db: Path) -> dict[str, int]:
    """Readings recorded so far, per family, and the card writes the store made (``journal``
    records, database ``commits``): the store's own counts, read from the working copy."""
    db = sqlite3.connect(f"file:{ram_db}?mode=ro", uri=True)
    try:
        found = {family: int(value) for family, value in
                 db.execute("SELECT family, value FROM counters WHERE name = 'readings_recorded'")}
        found.update({key: int(value or 0) for key, value in
                      db.execute("SELECT key, value FROM meta WHERE key IN ('journal_records', 'commits')")})
        return found
    finally:
        db.close()


def checkpoint_in_child(database: Path) -> int:
    """Checkpoint the card's WAL in a separate process; returns what that process wrote."""
    code = ("import sqlite3, sys; db = sqlite3.connect(sys.argv[1], timeout=30);"
            "db.execute('PRAGMA wal_checkpoint(TRUNCATE)').fetchone();"
            "print([l for l in open('/proc/self/io') if l.startswith('write_bytes')][0].split()[1])")
    out = subprocess.run([sys.executable, "-c", code, str(database)], check=True, capture_output=True, text=True)
    return int(out.stdout.strip())


def run_day(speed: float, window: float, base: Path) -> DayFigures:
    from appliance.sim import nep_inverters as nepsim
    from appliance.sim.sun import SimClock
    from appliance.store import ram_path

    workdir = Path(tempfile.mkdtemp(prefix=f"sdwear-{int(window)}-", dir=base))
    ram_dir = Path(tempfile.mkdtemp(prefix="sdwear-ram-", dir="/dev/shm"))
    tmp = Path(tempfile.mkdtemp(prefix="sdwear-tmp-", dir="/dev/shm"))
    logs = workdir / "logs"
    logs.mkdir()
    with card_file_system(workdir) as (card, device):
        services = Services(workdir, logs, tmp)
        try:
            data_dir = card / "solargw"
            mqtt_port = free_port()
            mosquitto = mosquitto_config(card, workdir, mqtt_port)
            broker = subprocess.Popen(["mosquitto", "-c", str(mosquitto.config)], stdout=subprocess.DEVNULL,
                                      stderr=open(logs / "mosquitto.log", "w"), start_new_session=True)
            services.processes["mosquitto"] = broker
            deadline = time.monotonic() + 10
            while True:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", mqtt_port), timeout=0.2):
                    break
                if time.monotonic() > deadline:
                    raise SystemExit(f"mosquitto did not start: see {logs}/mosquitto.log")
                time.sleep(0.05)

            start = datetime.now().replace(hour=int(START), minute=0, second=0, microsecond=0)
            clock = SimClock(start, speed)
            url = services.start("emulator", [
                sys.executable, "-m", "appliance", "simulate", "enecsys", "--inverters", str(ENECSYS_INVERTERS),
                "--interval", f"{ENECSYS_INTERVAL / speed:g}", "--speed", f"{speed:g}", "--start", f"{int(START):02d}:00"],
                r"^socket://")
            settings = workdir / "solargw.toml"
            settings.write_text(
                f'[data]\ndir = "{data_dir}"\nram_dir = "{ram_dir}"\nflush_seconds = {window / speed}\n'
                f'history_seconds = {HISTORY_SECONDS / speed}\n'
                f'[mqtt]\nhost = "127.0.0.1"\nport = {mqtt_port}\n'
                f'[zigbee]\ndevice = "{url}"\n[admin]\nsecret_key = "bench"\n[web]\nthreads = 4\n')
            line = services.start("web", [sys.executable, "-m", "appliance", "web", "--settings", str(settings),
                                          "--bind", "127.0.0.1:0"], r"listening on http://")
            web_url = line.split("listening on ", 1)[1].strip()
            services.start("zigbee", [sys.executable, "-m", "appliance", "zigbee", "--settings", str(settings)],
                           r"Zigbee network up", timeout=90)
            ram_db = ram_path(data_dir, ram_dir)

            def at(hour: float) -> float:
                """Real monotonic time when the simulated clock reaches ``hour`` (hours after 00:00 of day 1)."""
                return clock._t0 + ((hour - START) * 3600) / speed

            def sleep_until(hour: float) -> None:
                time.sleep(max(0.0, at(hour) - time.monotonic()))

            notes: list[str] = []
            sleep_until(5.5)
            checkpoint_in_child(data_dir / "solargw.db")  # yesterday's pages are not today's
            sync_file_system(card)
            meter = IoMeter({name: p.pid for name, p in services.processes.items() if name != "emulator"})
            meter.start()
            device_before = sectors_written(device)
            readings_before = counted_readings(ram_db)
            stop = threading.Event()

            def background() -> None:
                next_save = time.monotonic() + mosquitto.autosave_seconds / speed
                next_sync = time.monotonic() + WRITEBACK_SECONDS / speed
                while not stop.wait(0.05):
                    now = time.monotonic()
                    if mosquitto.persistence and not mosquitto.on_changes and now >= next_save:
                        broker.send_signal(signal.SIGUSR1)  # mosquitto's autosave, on the scaled clock
                        next_save += mosquitto.autosave_seconds / speed
                    if now >= next_sync:
                        sync_file_system(card)
                        next_sync += WRITEBACK_SECONDS / speed
                    meter.sample()

            sampler = threading.Thread(target=background, daemon=True)
            sampler.start()
            fleet = nepsim.make_fleet(NEP_INVERTERS, ["bdm400", "bdm800", "bdm600", "bdm300"], seed=4)
            import random
            rng = random.Random(4)
            failures = 0
            hour = DAY[0]
            while hour < DAY[1]:
                sleep_until(hour)
                moment = start + timedelta(hours=hour - START)
                for inverter in fleet:
                    body = inverter.packet(moment, rng)
                    if body is None:
                        continue
                    try:
                        reply = nepsim.post(web_url, inverter.path, body)
                        failures += reply.status != 200
                    except OSError:
                        failures += 1
                hour += NEP_INTERVAL / 3600
            if failures:
                notes.append(f"{failures} NEP posts failed")
            sleep_until(IDLE[0])  # the evening's readings are in the database by now
            meter.sample()
            per_process_day = meter.totals()
            after = counted_readings(ram_db)
            per_family = {family: after.get(family, 0) - readings_before.get(family, 0) for family in ("nep", "enecsys")}
            readings = sum(per_family.values())
            # NEP: one post each interval; Enecsys: a report and a channel-2 frame each interval, as the
            # simulated inverters (like real ones) send them.
            expected = {"nep": NEP_INVERTERS * int((DAY[1] - DAY[0]) * 3600 / NEP_INTERVAL),
                        "enecsys": 2 * ENECSYS_INVERTERS * int((DAY[1] - DAY[0]) * 3600 / ENECSYS_INTERVAL)}
            notes.append("readings recorded: " + ", ".join(
                f"{family} {per_family[family]} of {expected[family]}" for family in expected))
            notes.append(f"the store wrote {after.get('journal_records', 0) - readings_before.get('journal_records', 0)}"
                         f" journal records and made {after.get('commits', 0) - readings_before.get('commits', 0)}"
                         f" database commits 05:30-23:30 (one record per {window:g} s with news, a commit every "
                         f"36 of them)")
            sleep_until(IDLE[1])
            stop.set()
            sampler.join()
            meter.sample()
            per_process = meter.totals()
            night_bytes = sum(per_process.values()) - sum(per_process_day.values())
            final = checkpoint_in_child(data_dir / "solargw.db")
            sync_file_system(card)
            device_bytes = None
            if device is not None:
                device_bytes = sectors_written(device) - device_before  # type: ignore[operator]
            files = sorted((f.stat().st_size, f.relative_to(card)) for f in card.rglob("*")
                           if f.is_file() and "lost+found" not in f.parts)
            notes.append("on the card at the end: " + ", ".join(f"{name} {size / 1024:.0f} KiB" for size, name in files))
            for name, process in services.processes.items():
                if process.poll() is not None:
                    notes.append(f"{name} exited early ({process.returncode}): see {logs}")
            return DayFigures(window, per_process, per_process_day, meter.by_thread(), final, night_bytes,
                              (IDLE[1] - IDLE[0]) * 60, readings, device_bytes, notes)
        finally:
            services.stop()
            shutil.rmtree(ram_dir, ignore_errors=True)
            shutil.rmtree(tmp, ignore_errors=True)


# --- the history compaction, apart -----------------------------------------------------------------

COMPACTION = """
import sys, time
from appliance.store import Store
store = Store(sys.argv[1], ram_dir=sys.argv[2])
now = float(sys.argv[3])
for run in range(6):  # the next day: compacting every 4 hours moves the day before the 7 kept
    store.compact(now + 2 * 3600 + run * 4 * 3600)
print([l for l in open('/proc/self/io') if l.startswith('write_bytes')][0].split()[1])
"""


def compaction_bytes(base: Path) -> tuple[int, int]:
    """What a day of history compaction writes: the day that leaves the 7 kept at 5-minute resolution
    (40 inverters), moved to the 15-minute table in 6 commits (the services compact in their database
    commits, every 3 hours in daytime; here each is a commit of its own); returns (bytes, rows moved)."""
    import json
    import math

    from appliance.store import Store, history

    workdir = Path(tempfile.mkdtemp(prefix="sdwear-compact-", dir=base))
    ram_dir = Path(tempfile.mkdtemp(prefix="sdwear-ram-", dir="/dev/shm"))
    try:
        with card_file_system(workdir) as (card, _device):
            data_dir = card / "solargw"
            Store(data_dir, ram_dir=ram_dir).close()
            now = math.floor(time.time() / 86400) * 86400  # the history spans the 8 days before this UTC midnight
            db = sqlite3.connect(data_dir / "solargw.db")
            fields = {"ac_power_w": 0.0, "ac_voltage_v": 231.4, "ac_frequency_hz": 49.98, "temperature_c": 31.2,
                      "energy_today_wh": 0.0, "state": "producing", "status": "ok", "scale": "bdm800"}
            db.row_factory = sqlite3.Row
            rows: list[dict] = []
            for step in range(8 * 288):
                ts = now - 8 * 86400 + step * 300
                for n in range(NEP_INVERTERS + ENECSYS_INVERTERS):
                    fields.update(ac_power_w=round(200 * math.sin(step / 50) + n, 2), energy_today_wh=step * 1.7 + n)
                    rows.append({"id": len(rows), "serial": f"{100100000 + n}", "timestamp": ts, "kind": "report",
                                 "fields": json.dumps(fields, separators=(",", ":"))})
            try:
                with db:
                    history.write(db, rows, 300)
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                db.close()
            sync_file_system(card)
            out = subprocess.run([sys.executable, "-c", COMPACTION, str(data_dir), str(ram_dir), str(now)],
                                 check=True, capture_output=True, text=True, cwd=ROOT)
            written = int(out.stdout.strip().splitlines()[-1])
            db = sqlite3.connect(data_dir / "solargw.db")
            try:
                moved = sum(db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
                            for table, _, _, coarse in history.partitions(db) if coarse)
            finally:
                db.close()
            return written, moved
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(ram_dir, ignore_errors=True)


# --- the report -----------------------------------------------------------------------------------

def mb(value: float) -> str:
    return f"{value / 1e6:8.2f} MB"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench sdwear", description=__doc__.split("\n\n")[0])
    parser.add_argument("--speed", type=float, default=300.0, help="simulated seconds per real second")
    parser.add_argument("--windows", default="300,60", help="loss windows ([data] flush_seconds) to run, in s")
    parser.add_argument("--keep", action="store_true", help="keep the services' logs (the path is printed)")
    args = parser.parse_args()
    windows = [float(w) for w in args.windows.split(",") if w.strip()]
    base = Path(tempfile.mkdtemp(prefix="bench-sdwear-"))
    if args.keep:
        print(f"logs under {base}")
    try:
        print(f"sdwear: {NEP_INVERTERS} NEP every {NEP_INTERVAL:g} s + {ENECSYS_INVERTERS} Enecsys every "
              f"{ENECSYS_INTERVAL:g} s, {DAY[0]:02.0f}:00-{DAY[1]:02.0f}:00, history every {HISTORY_SECONDS:g} s; "
              f"one simulated day at {args.speed:g}x ({24 * 3600 / args.speed:.0f} s per day)", flush=True)
        compaction, moved = compaction_bytes(base)
        print(f"  history compaction, one day ({moved} rows to the 15-minute table): {mb(compaction)}",
              flush=True)
        for window in windows:
            day = run_day(args.speed, window, base)
            print(f"loss window {window:g} s ([data] flush_seconds):")
            print(f"  {'':<28} {'per day':>11} {'05:30-23:30':>11} {'23:30-05:30':>11}")
            for name, value in day.per_process.items():
                by_day = day.per_process_day[name]
                print(f"  {name:<28} {mb(value)} {mb(by_day)} {mb(value - by_day)}")
                for (process, thread), written in sorted(day.per_thread.items(), key=lambda item: -item[1]):
                    if process == name and written >= 10_000 and thread != name:
                        print(f"    thread {thread:<19} {mb(written)}")
            print(f"  {'last WAL checkpoint':<28} {mb(day.final_checkpoint)}")
            print(f"  {'history compaction':<28} {mb(compaction)}")
            total = day.total + compaction
            idle = day.night_bytes / day.night_minutes
            print(f"  {'total per day':<28} {mb(total)}/day")
            if day.readings:
                print(f"  per recorded reading         {(total - idle * 1440) / day.readings:8.0f} bytes "
                      f"(the day's total less 24 h of idle, over {day.readings} readings)")
            print(f"  idle (23:30-05:30)           {idle:8.0f} bytes/min")
            if day.device_bytes is not None:
                print(f"  the card device itself       {mb(day.device_bytes + compaction)}/day "
                      f"(loop ext4, {ROOT_MOUNT_OPTIONS}: file system journal and metadata included)")
            for note in day.notes:
                print(f"  note: {note}")
            sys.stdout.flush()
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
