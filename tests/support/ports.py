"""Loopback ports for the servers tests start."""
from __future__ import annotations

import socket

HOST = "127.0.0.1"


def free_port() -> int:
    """A loopback TCP port nothing listens on now (the kernel's pick): for a server about to
    start, or as an address where nothing answers."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]
