"""The genuine Enecsys gateway's upload stream (``[gateway] enabled``): a TCP listener on port 5040.

Owners who still run their Enecsys gateway point its server name ``gw.enecsys.net`` at the
appliance (the appliance's DNS answers it, :mod:`appliance.net.dnsmasq`); the gateway then
connects here and sends its lines (:mod:`appliance.protocols.enecsys_gateway` says what they
are and how the answer is chosen). Each ``WS=`` line is one inverter's Zigbee report: it goes
through the same :class:`~appliance.pipeline.Pipeline` as a report the Zigbee service receives,
under the same identity (family ``enecsys``, serial from the IEEE address), so an owner who
moves from the gateway to a Zigbee stick keeps the same inverters, history and Home Assistant
devices.

Where it runs: in the web service (``solargw web``), on its own thread and asyncio loop.
The web service is always on and already holds what the readings need (the store, the MQTT
publisher, the settings follower); the Zigbee service owns the Enecsys radio but is disabled,
or idles without a stick, on the appliances of gateway owners, and its loop is the Zigbee
handshake's reply path, which nothing else should share.

Nothing a client does can hold anything up: every connection has a read deadline (a complete
line within ``IDLE_SECONDS``), a line longer than ``MAX_LINE`` ends the connection, so do
``MAX_MALFORMED`` malformed lines, and at ``MAX_CONNECTIONS`` a newcomer takes the place of
the connection that has not sent a valid line for longest (a gateway that talks keeps its
place). Store work runs on one thread of its own, in order, and each connection waits for its
own line's work before reading the next, so a flood only slows the flooder. Malformed lines
are counted, and kept with the rejected frames up to ``REJECTS_KEPT_PER_MINUTE``; nothing here
raises into the web service.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from appliance.pipeline import Pipeline
from appliance.protocols import enecsys_gateway as protocol
from appliance.protocols.enecsys_gateway import KeepalivePolicy, LineKind
from appliance.reading import FrameError
from appliance.runtime import StatusReporter
from appliance.store import Store

log = logging.getLogger(__name__)

FAMILY = "enecsys"
MAX_CONNECTIONS = 8
IDLE_SECONDS = 150.0
"""A gateway pings about once a minute: a connection silent this long is dead (or a stalled client)."""
MAX_LINE = protocol.MAX_LINE
MAX_MALFORMED = 20
MAX_UNSENT = 4096
"""A client that does not read our answers (their bytes pile up here) is closed."""
REJECTS_KEPT_PER_MINUTE = 30
"""Malformed lines kept with the rejected frames (one store write each); more are only counted,
so a flood costs neither the card's writes nor the gateway's turn on the store thread."""
STATUS_SECONDS = 30.0
READ_CHUNK = 1024


@dataclass(eq=False)
class _Connection:
    peer: str
    writer: asyncio.StreamWriter
    opened: float
    keepalive: KeepalivePolicy = field(default_factory=KeepalivePolicy)
    last_valid: float = float("-inf")
    gateway_id: str = ""
    malformed: int = 0
    task: asyncio.Task | None = None

    def close(self) -> None:
        if not self.writer.is_closing():
            self.writer.close()


class GatewayListener:
    """Accepts gateways on ``host:port`` and feeds their inverters' reports to ``pipeline``.

    ``start()`` and ``close()`` run on the listener's loop; ``summary()`` and ``status()``
    may be called from any thread.
    """

    def __init__(self, host: str, port: int, pipeline: Pipeline, store: Store, *,
                 max_connections: int = MAX_CONNECTIONS, idle_seconds: float = IDLE_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.host, self.port = host, port
        self.pipeline = pipeline
        self.store = store
        self.max_connections = max_connections
        self.idle_seconds = idle_seconds
        self.clock = clock
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="gateway-store")
        self.reporter = StatusReporter("gateway", store, heartbeat=60.0)
        self.inverters: set[str] = set()
        self.counts = {"connections": 0, "refused": 0, "lines": 0, "reports": 0, "rejected": 0, "ignored": 0,
                       "keepalives": 0}
        self.address = ""
        self._connections: set[_Connection] = set()
        self._rejects_window = (0.0, 0)  # (start of the current minute, malformed lines kept in it)
        self._evictions_logged = 0.0
        self._server: asyncio.AbstractServer | None = None
        self._status_task: asyncio.Task | None = None
        self._lock = threading.Lock()

    # --- life cycle ---------------------------------------------------------------------------

    async def start(self) -> str:
        """Listen; returns ``host:port`` actually bound (OSError when the port is taken)."""
        self._server = await asyncio.start_server(self._serve, self.host, self.port, limit=MAX_LINE * 2)
        bound = self._server.sockets[0].getsockname()
        self.port = bound[1]
        self.address = f"{bound[0]}:{bound[1]}"
        log.info("listening for Enecsys gateways on %s", self.address)
        self._status_task = asyncio.get_running_loop().create_task(self._report_status_forever())
        return self.address

    async def close(self) -> None:
        if self._status_task is not None:
            self._status_task.cancel()
        if self._server is not None:
            self._server.close()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            connection.close()  # its handler reads the end of the stream and returns
        handlers = [c.task for c in connections if c.task is not None]
        if handlers:  # not cancelled: Python 3.11's stream server logs a cancelled handler as an error
            await asyncio.wait(handlers, timeout=5)
        if self._server is not None:
            await self._server.wait_closed()
        self._report("stopped")
        self.executor.shutdown(wait=True)

    # --- status -------------------------------------------------------------------------------

    def summary(self) -> str:
        """One word or two for Home Assistant's appliance device: ``waiting``, ``connected``..."""
        with self._lock:
            gateways = {c.gateway_id for c in self._connections if c.gateway_id}
        if not self._server:
            return "stopped"
        return f"{len(gateways)} connected" if gateways else "waiting"

    def status(self, state: str | None = None) -> dict[str, Any]:
        with self._lock:
            connections = sorted(self._connections, key=lambda c: c.opened)
            gateways = [f"{c.gateway_id} from {c.peer}" for c in connections if c.gateway_id]
        return {
            "state": state or ("listening" if self._server else "stopped"),
            "address": self.address,
            "gateways": gateways,
            "inverters": sorted(self.inverters),
            "rejected_lines": self.counts["rejected"],
            "refused_connections": self.counts["refused"],
        }

    def _report(self, state: str | None = None) -> None:
        self._io(self.reporter.report, self.status(state))

    async def _report_status_forever(self) -> None:
        while True:
            self._report()
            await asyncio.sleep(STATUS_SECONDS)

    # --- store work ---------------------------------------------------------------------------

    def _io(self, fn: Callable, *args: Any) -> asyncio.Future:
        """Run ``fn`` on the store thread (in order); its exceptions are logged, never raised."""
        def run() -> Any:
            try:
                return fn(*args)
            except Exception:
                log.exception("gateway: store work failed")
                return None

        loop = asyncio.get_running_loop()
        try:
            return loop.run_in_executor(self.executor, run)
        except RuntimeError:  # shut down: the service is stopping
            done = loop.create_future()
            done.set_result(None)
            return done

    # --- connections --------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer_info = writer.get_extra_info("peername")
        peer = str(peer_info[0]) if isinstance(peer_info, tuple) else str(peer_info or "")
        connection = _Connection(peer, writer, self.clock(), task=asyncio.current_task())
        self._make_room()
        with self._lock:
            self._connections.add(connection)
        self.counts["connections"] += 1
        log.debug("gateway connection from %s", peer)
        try:
            if connection.keepalive.on_connect(self.clock()):
                self._answer(connection)
            await self._read_lines(reader, connection)
        except (ConnectionError, OSError) as exc:
            log.debug("gateway connection from %s: %s", peer, exc)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug here must end one connection, not the listener
            log.exception("gateway connection from %s failed", peer)
        finally:
            with self._lock:
                self._connections.discard(connection)
            connection.close()
            if connection.gateway_id:  # the status and the log name gateways, not every client
                log.info("gateway %s (from %s) disconnected", connection.gateway_id, peer)
                self._report()

    def _make_room(self) -> None:
        """At the cap, close the connection that has gone longest without a valid line."""
        with self._lock:
            if len(self._connections) < self.max_connections:
                return
            victim = min(self._connections, key=lambda c: (c.last_valid, c.opened))
            self._connections.discard(victim)
        self.counts["refused"] += 1
        if self.clock() - self._evictions_logged >= 60:  # said once a minute, not once per client
            self._evictions_logged = self.clock()
            log.warning("gateway: %d connections open; closing the one from %s, silent longest "
                        "(%d closed so far)", self.max_connections, victim.peer, self.counts["refused"])
        victim.close()

    async def _read_lines(self, reader: asyncio.StreamReader, connection: _Connection) -> None:
        """Lines end with CR or LF (an empty line between CR and LF is skipped)."""
        buffer = bytearray()
        deadline = self.clock() + self.idle_seconds
        while not connection.writer.is_closing():
            cut = min((i for i in (buffer.find(b"\r"), buffer.find(b"\n")) if i >= 0), default=-1)
            if cut < 0:
                if len(buffer) > MAX_LINE:
                    await self._malformed(connection, bytes(buffer[:MAX_LINE]), f"line over {MAX_LINE} characters")
                    return
                remaining = deadline - self.clock()
                if remaining <= 0:
                    log.debug("gateway connection from %s: no complete line for %.0f s", connection.peer,
                              self.idle_seconds)
                    return
                try:
                    chunk = await asyncio.wait_for(reader.read(READ_CHUNK), remaining)
                except TimeoutError:
                    continue
                if not chunk:
                    return
                buffer += chunk
                continue
            raw, buffer = bytes(buffer[:cut]), buffer[cut + 1:]
            if not raw:
                continue
            deadline = self.clock() + self.idle_seconds
            if not await self._line(connection, raw):
                return

    async def _line(self, connection: _Connection, raw: bytes) -> bool:
        """Handle one line; False ends the connection."""
        self.counts["lines"] += 1
        now = self.clock()
        try:
            line = protocol.parse_line(raw)
        except FrameError as exc:
            return await self._malformed(connection, raw, str(exc))
        if not line.crc_ok and line.kind != LineKind.INVERTER:
            return await self._malformed(connection, raw, "the gateway line's CRC-8 check failed")
        if line.crc_ok and line.kind in (LineKind.PING, LineKind.INVERTER, LineKind.GATEWAY):
            connection.last_valid = now
            if connection.gateway_id != line.gateway_id:
                connection.gateway_id = line.gateway_id
                log.info("gateway %s connected from %s", line.gateway_id, connection.peer)
                self._report()
        if connection.keepalive.on_line(line.kind, now):
            self._answer(connection)
        if line.kind != LineKind.INVERTER:
            if line.kind in (LineKind.OTHER, LineKind.ANSWER):
                self.counts["ignored"] += 1
            return True
        try:
            reading = protocol.decode_inverter_line(line, received_at=time.time())
        except FrameError as exc:
            return await self._malformed(connection, raw, f"WS= line: {exc}")
        if not reading.checksum_ok:
            connection.malformed += 1
            self.counts["rejected"] += 1
        else:
            self.counts["reports"] += 1
            if reading.serial not in self.inverters:
                self.inverters.add(reading.serial)
                self._report()
        await self._io(self.pipeline.handle, reading, f"gateway:{connection.peer}")
        return connection.malformed < MAX_MALFORMED

    async def _malformed(self, connection: _Connection, raw: bytes, reason: str) -> bool:
        connection.malformed += 1
        self.counts["rejected"] += 1
        if self._keep_reject():
            await self._io(self.pipeline.reject, raw, FAMILY, f"gateway:{connection.peer}",
                           f"gateway line: {reason}")
        if connection.malformed >= MAX_MALFORMED:
            log.debug("gateway connection from %s: %d malformed lines, closing it", connection.peer,
                      connection.malformed)
            return False
        return True

    def _keep_reject(self) -> bool:
        start, kept = self._rejects_window
        now = self.clock()
        if now - start >= 60:
            start, kept = now, 0
        self._rejects_window = (start, kept + 1)
        return kept < REJECTS_KEPT_PER_MINUTE

    def _answer(self, connection: _Connection) -> None:
        transport = connection.writer.transport
        if transport.is_closing():
            return
        if transport.get_write_buffer_size() > MAX_UNSENT:
            log.debug("gateway connection from %s does not read its answers: closing it", connection.peer)
            connection.close()
            return
        connection.writer.write(protocol.KEEPALIVE.encode("ascii") + b"\r")
        self.counts["keepalives"] += 1


class GatewayThread:
    """A :class:`GatewayListener` on its own thread and loop, for a threaded service (the web one).

    ``start()`` returns once it listens (or could not: the reason is logged and kept in ``error``,
    and the service goes on without it); ``stop()`` closes it and joins the thread.
    """

    def __init__(self, host: str, port: int, pipeline: Pipeline, store: Store, **options: Any) -> None:
        self.listener = GatewayListener(host, port, pipeline, store, **options)
        self.error = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None

    def start(self, timeout: float = 10.0) -> bool:
        self._thread = threading.Thread(target=self._run, name="gateway", daemon=True)
        self._thread.start()
        self._ready.wait(timeout)
        return not self.error

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except Exception as exc:  # never into the web service
            log.exception("the gateway listener stopped")
            self.error = self.error or str(exc)
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            await self.listener.start()
        except OSError as exc:
            self.error = f"cannot listen on {self.listener.host}:{self.listener.port}: {exc.strerror or exc}"
            log.error("Enecsys gateway: %s", self.error)
            self.listener.reporter.report(self.listener.status(f"error: {self.error}"))
            self.listener.executor.shutdown(wait=False)
            self._ready.set()
            return
        self._ready.set()
        await self._stop.wait()
        await self.listener.close()

    def summary(self) -> str:
        return f"error: {self.error}" if self.error else self.listener.summary()

    def stop(self, timeout: float = 10.0) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(stop.set)
            except RuntimeError:  # the loop has just ended
                pass
        if self._thread is not None:
            self._thread.join(timeout)
