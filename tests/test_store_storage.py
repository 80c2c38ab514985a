"""Storage failures on real file systems: a card remounted read-only, a full card.

Readings never wait on the card: they land in the RAM working copy and stay there while the card
refuses writes; ``health()`` says what is wrong and since when; the log says it once a minute;
the first write that succeeds takes everything that waited. Needs root (mount).
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import time
from datetime import date, datetime
from pathlib import Path
from typing import Iterator

import pytest

from appliance.store import Store, flush as writeback
from support.readings import enecsys_reading, nep_reading

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mount)")

T0 = max(time.time() - 3 * 3600, datetime.combine(date.today(), datetime.min.time()).timestamp() + 1)


def mount(*args: str) -> None:
    result = subprocess.run(["mount", *args], capture_output=True, text=True)
    assert result.returncode == 0, f"mount {' '.join(args)}: {result.stderr.strip()}"


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "4m") -> Iterator[Path]:
    path.mkdir()
    mount("-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path))
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@contextlib.contextmanager
def ext4(path: Path, size_mb: int = 16) -> Iterator[tuple[Path, str]]:
    """An ext4 file system on a loop device, mounted as the appliance mounts its root (errors=remount-ro)."""
    image = path.with_suffix(".img")
    with open(image, "wb") as handle:
        handle.truncate(size_mb * 1024 * 1024)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
    device = subprocess.run(["losetup", "--find", "--show", str(image)], check=True, capture_output=True,
                            text=True).stdout.strip()
    path.mkdir()
    try:
        mount("-o", "noatime,errors=remount-ro", device, str(path))
        try:
            yield path, device
        finally:
            subprocess.run(["umount", "-l", str(path)], check=False)
    finally:
        subprocess.run(["losetup", "-d", device], check=False)


def open_store(card: Path, ram: Path) -> Store:
    return Store(card / "solargw", ram_dir=ram, flush_seconds=3600, autoflush=False)  # the test runs the timers


def maintain(store: Store) -> None:
    """One turn of the flusher, with everything due now."""
    store._next_attempt = 0.0
    with store._db:
        store._db.execute("UPDATE meta SET value = value - 7200 WHERE key IN ('dirty_since', 'unmaterialized_since')"
                          " AND value IS NOT NULL")
    store._maintain()


def power_cut(store: Store, ram: Path) -> None:
    store.close_connections()
    for path in ram.iterdir():
        path.unlink()


def test_a_card_remounted_read_only_keeps_readings_in_ram_until_it_is_writable(tmp_path, caplog):
    ram = tmp_path / "ram"
    ram.mkdir()
    with tmpfs(tmp_path / "card") as card:
        store = open_store(card, ram)
        store.record(nep_reading(today_wh=100.0, timestamp=T0))
        assert store.flush() and store.health().state == "ok"
        store.card.close()  # between two commits: nothing on the card is open for writing
        mount("-o", "remount,ro", str(card))
        for n in range(1, 6):
            recorded = store.record(nep_reading(today_wh=100.0 + 10 * n, timestamp=T0 + 300 * n))
            assert recorded.lifetime_wh == 100.0 + 10 * n  # ingest goes on, the totals too
        with caplog.at_level(logging.ERROR, logger="appliance.store"):
            for _ in range(4):
                maintain(store)
        health = store.health()
        assert (health.state, health.queued, health.oldest_queued) == ("read-only", 5, T0 + 300)
        assert "read-only file system" in health.message and time.time() - health.since < 30
        assert len([r for r in caplog.records if "cannot write to the card" in r.message]) == 1  # once a minute
        assert "5 readings wait in memory" in caplog.records[-1].message
        assert len(store.history("12345678", 0, T0 + 3600)) == 6  # the card's and the queued ones

        mount("-o", "remount,rw", str(card))
        maintain(store)
        assert store.health().state == "ok" and store.health().queued == 0
        assert store.flush()
        power_cut(store, ram)  # what is on the card now is everything
        again = open_store(card, ram)
        assert again.inverter("12345678").lifetime_wh == 150.0
        assert len(again.history("12345678", 0, T0 + 3600)) == 6
        again.close()


def test_a_service_started_on_a_read_only_card_runs_and_writes_once_it_can(tmp_path):
    ram = tmp_path / "ram"
    ram.mkdir()
    with tmpfs(tmp_path / "card") as card:
        store = open_store(card, ram)
        store.record(enecsys_reading(lifetime_wh=5000.0, timestamp=T0))
        store.close()
        for path in ram.iterdir():  # a reboot, and the card comes up read-only
            path.unlink()
        mount("-o", "remount,ro", str(card))
        store = open_store(card, ram)  # the old version answered 200 and stored nothing here
        assert store.inverter("100095471").lifetime_wh == 5000.0
        store.record(enecsys_reading(lifetime_wh=5040.0, timestamp=T0 + 60))
        maintain(store)
        assert (store.health().state, store.health().queued) == ("read-only", 1)
        mount("-o", "remount,rw", str(card))
        maintain(store)
        assert store.health().state == "ok"
        store.close()
        power_cut(store, ram)
        assert open_store(card, ram).inverter("100095471").lifetime_wh == 5040.0


def test_a_full_card_keeps_readings_in_ram_until_there_is_room(tmp_path):
    ram = tmp_path / "ram"
    ram.mkdir()
    with tmpfs(tmp_path / "card", size="2m") as card:
        store = open_store(card, ram)
        store.record(nep_reading(today_wh=100.0, timestamp=T0))
        assert store.flush()
        filler = card / "filler"
        with contextlib.suppress(OSError), open(filler, "wb") as handle:  # whatever room is left
            while True:
                handle.write(b"\0" * 4096)
                handle.flush()
        assert filler.stat().st_size > 0
        for n in range(1, 300):
            store.record(nep_reading(serial=f"{n:08x}", today_wh=float(n), timestamp=T0 + n))
        assert not store.flush()
        health = store.health()
        assert health.state == "full" and "full" in health.message
        filler.unlink()
        assert store.flush() and store.health().state == "ok"
        power_cut(store, ram)
        assert len(open_store(card, ram).inverters()) == 300


def test_a_card_the_kernel_remounts_read_only_after_errors(tmp_path):
    """What ext4 does on a failing SD card (errors=remount-ro): with the database open for writing.
    It stays read-only until a check and a reboot; the services keep going meanwhile."""
    ram = tmp_path / "ram"
    ram.mkdir()
    with ext4(tmp_path / "card") as (card, device):
        store = open_store(card, ram)
        store.record(nep_reading(today_wh=100.0, timestamp=T0))
        assert store.flush()
        Path(f"/sys/fs/ext4/{Path(device).name}/trigger_fs_error").write_text("test: card failing")
        deadline = time.monotonic() + 10
        for n in range(1, 4):
            store.record(nep_reading(today_wh=100.0 + n, timestamp=T0 + 300 * n))
        while store.health().state == "ok" and time.monotonic() < deadline:
            maintain(store)
        health = store.health()
        assert (health.state, health.queued) == ("read-only", 3)
        assert store.inverter("12345678").lifetime_wh == 103.0
        assert len(store.history("12345678", 0, T0 + 3600)) == 4
        store.close()  # the last commit fails too, and says so; nothing raises


@pytest.fixture(autouse=True)
def _no_leftover_mounts(tmp_path):
    yield
    for name in ("card",):
        path = tmp_path / name
        if path.is_mount():
            subprocess.run(["umount", "-l", str(path)], check=False)
    shutil.rmtree(tmp_path / "ram", ignore_errors=True)
