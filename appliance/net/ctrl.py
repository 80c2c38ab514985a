"""A client for the control interface that hostapd and wpa_supplicant share: a Unix datagram
socket per interface (``<ctrl dir>/<interface>``) that answers each text command with one
datagram (``OK``, ``FAIL`` or the requested text).

Written here rather than run as ``hostapd_cli``: one request is a ``sendto`` and a ``recv``, and
the reply comes back as data instead of a command's output to parse. The client's own socket is
in Linux's abstract namespace, so it needs no writable directory (solargw-net's file system is
read-only outside its own).
"""
from __future__ import annotations

import os
import socket
from pathlib import Path

TIMEOUT_SECONDS = 5.0


class CtrlError(RuntimeError):
    """The daemon is not there, did not answer, or answered ``FAIL``."""


def request(ctrl_dir: Path, interface: str, command: str, timeout: float = TIMEOUT_SECONDS) -> str:
    """Send ``command`` to the daemon serving ``interface``; its reply, ``CtrlError`` on FAIL."""
    path = ctrl_dir / interface
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(f"\0solargw-ctrl-{os.getpid()}-{id(sock)}")
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
            sock.send(command.encode())
            while True:
                reply = sock.recv(65536).decode(errors="replace")
                if not reply.startswith("<"):  # unsolicited events (an attached monitor) start with <N>
                    break
        except FileNotFoundError:
            raise CtrlError(f"no control socket {path} (is the daemon running?)") from None
        except ConnectionRefusedError:
            raise CtrlError(f"nobody listens on {path}") from None
        except TimeoutError:
            raise CtrlError(f"{command.split()[0]}: no answer on {path} within {timeout:.0f} s") from None
        except OSError as exc:
            raise CtrlError(f"{path}: {exc.strerror or exc}") from None
    if reply.strip() == "FAIL" or reply.startswith("FAIL-"):
        raise CtrlError(f"{command.split()[0]} refused: {reply.strip()}")
    return reply


def key_values(reply: str) -> dict[str, str]:
    """``key=value`` lines (the answer to ``STATUS``) as a dict."""
    return dict(line.split("=", 1) for line in reply.splitlines() if "=" in line)


class Monitor:
    """An attached socket: the daemon sends it every event as ``<level>EVENT ...``, including
    the ones it prints nowhere else (wpa_supplicant's ``CTRL-EVENT-NETWORK-NOT-FOUND``).
    ``events`` never blocks. Attach again after the daemon restarted (a new socket)."""

    def __init__(self, ctrl_dir: Path, interface: str) -> None:
        self.path = ctrl_dir / interface
        self.sock: socket.socket | None = None

    @property
    def attached(self) -> bool:
        return self.sock is not None

    def attach(self, timeout: float = 2.0) -> None:
        """``CtrlError`` when the daemon is not (yet) there or refuses."""
        self.close()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.bind(f"\0solargw-monitor-{os.getpid()}-{id(sock)}")
            sock.settimeout(timeout)
            sock.connect(str(self.path))
            sock.send(b"ATTACH")
            while (reply := sock.recv(4096).decode(errors="replace")).startswith("<"):
                pass
        except (OSError, TimeoutError) as exc:
            sock.close()
            raise CtrlError(f"cannot attach to {self.path}: {getattr(exc, 'strerror', None) or exc}") from None
        if reply.strip() != "OK":
            sock.close()
            raise CtrlError(f"ATTACH refused by {self.path}: {reply.strip()}")
        sock.setblocking(False)
        self.sock = sock

    def events(self) -> list[str]:
        found: list[str] = []
        while self.sock is not None:
            try:
                data = self.sock.recv(4096).decode(errors="replace")
            except BlockingIOError:
                break
            except OSError:  # the daemon is gone (ECONNREFUSED, ENOTCONN)
                self.close()
                break
            found.append(data[data.index(">") + 1:] if data.startswith("<") and ">" in data else data)
        return [event.strip() for event in found if event.strip()]

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
