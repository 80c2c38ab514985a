"""The processes under one process, from /proc: what a service started (gunicorn's worker,
dnsmasq...), so that a bench or a test can count their CPU, memory or writes together."""
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
