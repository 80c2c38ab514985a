"""Waiting for what another thread, process or namespace does: poll until it holds.

    page = wait_for(lambda: fetch_status(), 15, "the status page")   # returns the true value
    await until(lambda: store.latest(), 10, "a reading")             # the same, in an event loop

Past ``timeout`` seconds the test fails (AssertionError) naming ``what`` it waited for; ``what`` may
be a function, called only then, to add what is known at that moment (a log, what was seen).
"""
from __future__ import annotations

import asyncio
import time
from typing import Callable, TypeVar

T = TypeVar("T")


What = str | Callable[[], str]


def _checker(predicate: Callable[[], T], timeout: float, what: What) -> Callable[[], T | None]:
    """One look: the predicate's value if true, None to look again, failing past the deadline."""
    deadline = time.monotonic() + timeout

    def check() -> T | None:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what() if callable(what) else what}")
        return None

    return check


def wait_for(predicate: Callable[[], T], timeout: float = 10.0, what: What = "condition", *,
             interval: float = 0.05) -> T:
    check = _checker(predicate, timeout, what)
    while (value := check()) is None:
        time.sleep(interval)
    return value


async def until(predicate: Callable[[], T], timeout: float = 10.0, what: What = "condition", *,
                interval: float = 0.02) -> T:
    """:func:`wait_for` inside an event loop: it sleeps with ``asyncio.sleep``, so the loop runs on."""
    check = _checker(predicate, timeout, what)
    while (value := check()) is None:
        await asyncio.sleep(interval)
    return value
