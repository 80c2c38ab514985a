"""Relay inverter reports to the real NEP portal (``[relay]``, off by default).

Each body is forwarded byte-exact over a plain socket with the inverter's own
minimal request (``POST <path> HTTP/1.1``, ``Host``, ``Connection: close``,
``Content-Length``; the portal resets connections that carry more). Sending
happens on one background thread fed by a bounded queue, so a slow or dead
portal never delays the inverter's reply; a full queue drops the body and
counts it as failed.

The portal's address comes from ``relay.address``, else from a DNS query sent
straight to ``relay.resolver`` (never the system resolver, which on the
appliance answers the portal's name with our own address).

Loop guard, three ways:

- never connect to one of our own addresses on a port we serve (the DNS
  override, a misconfigured ``address``);
- the relay remembers the local end (address, port) of every connection it
  opens: a request arriving from one of them is our own relay talking to us;
- a body identical to one relayed in the last :data:`LOOP_WINDOW_SECONDS`
  came back around (through another proxy): it is neither recorded nor relayed
  again. (Inverters report every minute or more, and their bodies carry live
  values, so a genuine duplicate inside the window is at most a repeat.)

Counters (``store.count(..., "nep")``): ``relay_sent``, ``relay_failed``,
``relay_looped``.
"""
from __future__ import annotations

import hashlib
import ipaddress
import logging
import queue
import socket
import threading
import time
from typing import Iterable

import dns.exception
import dns.resolver

from appliance.protocols.nep import build_request
from appliance.settings import RelaySettings
from appliance.settings.rules import parse_resolver

log = logging.getLogger(__name__)

QUEUE_SIZE = 64
LOOP_WINDOW_SECONDS = 30.0
MAX_REPLY = 65536
MIN_DNS_CACHE_SECONDS = 60.0


class RelayError(Exception):
    """One body could not be relayed (the message says why)."""


def is_local_address(address: str) -> bool:
    """True for an address of this host (loopback, unspecified or bound to an interface)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if ip.is_loopback or ip.is_unspecified:
        return True
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.bind((address, 0))  # only an address of ours can be bound
    except OSError:
        return False
    return True


class Relay:
    def __init__(self, settings: RelaySettings, store, own_ports: Iterable[int] = (80,)):
        self.settings = settings
        self.store = store
        self.own_ports = set(own_ports)
        self._queue: queue.Queue[tuple[str, bytes] | None] = queue.Queue(QUEUE_SIZE)
        self._lock = threading.Lock()
        self._recent: dict[bytes, float] = {}
        self._our_ends: set[tuple[str, int]] = set()
        self._cached: tuple[str, float] | None = None
        self._thread = threading.Thread(target=self._run, name="solargw-relay", daemon=True)
        self._thread.start()

    # -- called by ingest (request threads) ---------------------------------------------------
    def note_port(self, port: object) -> None:
        """A port we serve on (from a request's SERVER_PORT): never a relay target."""
        try:
            self.own_ports.add(int(port))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            pass

    def is_loop(self, body: bytes, source: str, source_port: object = None) -> bool:
        """True when this request is one of our own relayed bodies coming back."""
        now = time.monotonic()
        try:
            end = (source, int(source_port))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            end = None
        with self._lock:
            if end is not None and end in self._our_ends:
                return True
            seen = self._recent.get(hashlib.sha256(body).digest())
            return seen is not None and now - seen < LOOP_WINDOW_SECONDS

    def submit(self, path: str, body: bytes) -> None:
        """Queue a body for the portal; never blocks."""
        now = time.monotonic()
        with self._lock:
            self._recent = {d: t for d, t in self._recent.items() if now - t < LOOP_WINDOW_SECONDS}
            self._recent[hashlib.sha256(body).digest()] = now
        try:
            self._queue.put_nowait((path or "/i.php", bytes(body)))
        except queue.Full:
            log.warning("relay queue full (portal too slow?): body dropped")
            self.store.count("relay_failed", "nep")

    def close(self, timeout: float = 2.0) -> None:
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass
        self._thread.join(timeout)

    # -- the sender thread -------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            path, body = item
            try:
                self.send(path, body)
            except RelayError as exc:
                log.warning("relay to %s failed: %s", self.settings.host, exc)
                self.store.count("relay_failed", "nep")
            except Exception:
                log.exception("relay to %s failed", self.settings.host)
                self.store.count("relay_failed", "nep")
            else:
                self.store.count("relay_sent", "nep")

    def cloud_address(self) -> str:
        if self.settings.address:
            return self.settings.address
        now = time.monotonic()
        if self._cached and self._cached[1] > now:
            return self._cached[0]
        try:
            server, port = parse_resolver(self.settings.resolver)
        except ValueError:
            raise RelayError(f"[relay] resolver {self.settings.resolver!r} is not ADDRESS or ADDRESS:PORT") from None
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [server]
        resolver.port = port
        try:
            answer = resolver.resolve(self.settings.host, "A", lifetime=self.settings.timeout_seconds,
                                      search=False)
        except dns.exception.DNSException as exc:
            raise RelayError(f"cannot resolve {self.settings.host} through {self.settings.resolver}: {exc}") from None
        address = answer[0].address
        ttl = max(float(answer.rrset.ttl if answer.rrset is not None else 0), MIN_DNS_CACHE_SECONDS)
        self._cached = (address, now + ttl)
        return address

    def send(self, path: str, body: bytes) -> None:
        """Post one body to the portal and wait for its reply (raises RelayError)."""
        address = self.cloud_address()
        port = self.settings.port
        if port in self.own_ports and is_local_address(address):
            self.store.count("relay_looped", "nep")
            raise RelayError(f"{address}:{port} is this appliance (the local DNS override?): not relaying to it")
        timeout = self.settings.timeout_seconds
        deadline = time.monotonic() + timeout
        end: tuple[str, int] | None = None
        try:
            with socket.create_connection((address, port), timeout=timeout) as sock:
                end = sock.getsockname()[:2]
                with self._lock:
                    self._our_ends.add(end)
                sock.sendall(build_request(self.settings.host, path, body))
                reply = b""
                while len(reply) < MAX_REPLY:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise RelayError(f"no complete reply from {address}:{port} within {timeout} s")
                    sock.settimeout(remaining)
                    chunk = sock.recv(4096)
                    if not chunk:
                        break
                    reply += chunk
        except socket.timeout:
            raise RelayError(f"{address}:{port} timed out after {timeout} s") from None
        except OSError as exc:
            raise RelayError(f"{address}:{port}: {exc.strerror or exc}") from None
        finally:
            if end is not None:
                with self._lock:
                    self._our_ends.discard(end)
        status = reply.split(b"\r\n", 1)[0]
        parts = status.split()
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or parts[1] != b"200":
            raise RelayError(f"{address}:{port} answered {status[:80]!r}")
