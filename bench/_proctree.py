"""The processes under one process and their memory, from /proc: what a service started
(gunicorn's worker, dnsmasq...), so that a bench or a test can count their CPU, memory or writes
together."""
from __future__ import annotations

from pathlib import Path


def process_tree(root: int) -> list[int]:
    """``root`` and every process below it, parents before their children."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # gone meanwhile
                continue
            parents[int(entry.name)] = int(stat[stat.rindex(")") + 2:].split()[1])
    found, stack = [], [root]
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack.extend(child for child, parent in parents.items() if parent == pid)
    return found


def pss_kib(pid: int) -> int:
    """Its proportional set size: each page it shares with other processes counted in part."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def worker_pss_kib(arbiter: int) -> int:
    """The PSS of gunicorn's one worker under ``arbiter``."""
    (worker,) = Path(f"/proc/{arbiter}/task/{arbiter}/children").read_text().split()
    return pss_kib(int(worker))
