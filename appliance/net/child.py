"""A daemon that ``solargw net run`` keeps in the foreground as its child (dnsmasq,
wpa_supplicant): its own process group (a terminal's Ctrl-C reaches only us; we forward the
stop), its output back through a pipe, line by line, never blocking."""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Sequence

log = logging.getLogger(__name__)


class Child:
    def __init__(self, name: str, argv: Sequence[str]) -> None:
        self.name = name
        self.argv = list(argv)
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self._partial = b""

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self) -> None:
        """Start it; ``OSError`` when the binary cannot be run."""
        self.process = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            process_group=0,
        )
        os.set_blocking(self.process.stdout.fileno(), False)
        self.started_at = time.monotonic()
        self._partial = b""
        log.info("%s started (pid %d)", self.name, self.process.pid)

    def log_fd(self) -> int | None:
        if self.process and self.process.stdout and not self.process.stdout.closed:
            return self.process.stdout.fileno()
        return None

    def read_log(self) -> list[str]:
        """Complete lines it wrote since the last call (never blocks)."""
        if self.log_fd() is None:
            return []
        try:
            chunk = os.read(self.log_fd(), 65536)
        except BlockingIOError:
            return []
        if not chunk:  # end of file: it exited (or closed its output); stop watching
            chunk, self._partial = self._partial + b"\n", b""
            self.process.stdout.close()
        data = self._partial + chunk
        *lines, self._partial = data.split(b"\n")
        return [line.decode(errors="replace").strip() for line in lines if line.strip()]

    def exited(self) -> int | None:
        """The exit status once it has died (unexpectedly or not), else None."""
        return self.process.poll() if self.process else None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 5.0) -> list[str]:
        """SIGTERM, then SIGKILL after ``timeout``; reaps it. Returns its last lines."""
        if not self.process:
            return []
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s ignored SIGTERM; killing it", self.name)
                self.process.kill()
                self.process.wait()
        last = self.read_log()
        if self.process.stdout:
            self.process.stdout.close()
        self.process = None
        return last


class Backoff:
    """When to start a child again after it died: ``first`` seconds, doubling up to ``longest``;
    a child that ran ``stable`` seconds starts the count again."""

    def __init__(self, first: float = 0.5, longest: float = 30.0, stable: float = 30.0) -> None:
        self.first, self.longest, self.stable = first, longest, stable
        self.failures = 0

    def delay(self, ran: float) -> float:
        if ran >= self.stable:
            self.failures = 0
        self.failures += 1
        return min(self.first * 2 ** (self.failures - 1), self.longest)

    def reset(self) -> None:
        self.failures = 0
