"""The front receiver: every connection to the web port meets this event loop first.

Why: gunicorn's gthread worker gives each connection a thread that reads the request with no
deadline, so eight clients that send ``POST /i.php HTTP/1.1`` and stop (slowloris, garbage
without a line end, an inverter losing power mid-POST) held every thread and no inverter got
its reply. Here one asyncio loop (on its own thread in the gunicorn worker, after the fork, so
it shares the worker's :class:`~appliance.web.services.Services`) owns the listening sockets:

- a stalled or slow connection costs a file descriptor and a few hundred bytes, never a thread;
  the request head must arrive within :data:`HEAD_SECONDS`, an inverter's body within
  :data:`BODY_SECONDS`; at most :data:`MAX_CONNECTIONS` are open, and when a new one comes the
  oldest still reading its head makes room (an inverter sends its whole request at once);
- an inverter's POST (:func:`appliance.web.ingest.is_inverter_path`) is read here with the
  minimal HTTP/1.1 it uses (:mod:`appliance.web.http1`) and handed to the one ingest path
  (:func:`appliance.web.ingest.accept`) on a single ingest thread (:class:`IngestThread`), so a
  slow store never stops the loop; the reply goes out when the pipeline is done or after
  :data:`REPLY_SECONDS`, whichever is first, and every inverter-path POST gets the timestamp,
  also a malformed, truncated, oversize or timed-out one (kept as a rejected frame). Reports
  that come together are stored in one transaction (:data:`GATHER_SECONDS`);
- everything else (the UI, the API, /metrics, /events) is read whole here, body included,
  then passed to gunicorn + Flask over a private unix socket, the peer's address in
  ``X-Solargw-Peer`` (:mod:`appliance.web.http1`), and the response streamed back. Flask's
  threads only ever meet a complete request from a local peer, so slow clients cannot hold
  them either. Responses end with ``Connection: close``.

It is built on asyncio's protocol callbacks rather than streams: no task per connection and
no stream objects on an inverter's path keep its CPU cost near a bare stdlib server's
(issue 15; ``python -m bench ingest``). Only the UI's pass-through runs as a task.
"""
from __future__ import annotations

import asyncio
import logging
import queue
import socket
import struct
import threading
import time
from typing import Callable

from appliance.lograte import RateLimitedLog
from appliance.web import http1
from appliance.web.http1 import ChunkedBody, ForwardedHead, HttpError, RequestHead
from appliance.web.ingest import MAX_BODY, InverterPost, is_inverter_path

log = logging.getLogger(__name__)
evicted_log = RateLimitedLog(log, "connections closed to make room")
refused_log = RateLimitedLog(log, "malformed requests")
dropped_log = RateLimitedLog(log, "reports not queued")

HEAD_SECONDS = 10.0
"""From the connection to the end of its request head."""
BODY_SECONDS = 10.0
"""From the end of the head to the end of the body (an inverter's is 45 or 69 bytes)."""
REPLY_SECONDS = 0.8
"""An inverter's reply never waits longer for the pipeline (a slow or stuck store)."""
UI_BODY_SECONDS = 60.0
WRITE_SECONDS = 30.0
"""A client that reads nothing of its response for this long is dropped."""
MAX_CONNECTIONS = 256
UI_MAX_BODY = 1 << 20
UI_BUFFER_BUDGET = 8 << 20
"""UI request bodies held at once, all connections together."""
MAX_PENDING = 1024
"""Reports queued for the ingest thread; beyond, a report is answered and counted as dropped."""
BATCH = 16
BATCH_SECONDS = 0.005
"""The ingest thread takes at most BATCH queued reports in one go (one store transaction:
``Store.batch``), and tells the loop about finished reports in batches (one wake-up each): when
nothing more waits, or after BATCH reports or BATCH_SECONDS, whichever comes first."""
GATHER_SECONDS = 0.002
"""How long a report that finds the ingest thread idle waits for others still being read, to be
stored with them in one transaction (as PostgreSQL's ``commit_delay`` with ``commit_siblings``):
only while other connections are reading their request (:attr:`Receiver.arriving`), never for a
report that comes alone. Much of a transaction's cost is paid once however many reports it holds
(issue 15: in-process ~110 us of CPU per report one by one, ~75 us each in fours; ``bench ingest``
at 4 clients: 5-10 % less CPU per report)."""


class IngestThread:
    """One thread that runs ``ingest(posts)`` on the reports queued, in order, as many as are
    waiting (up to :data:`BATCH`) in one go, and calls each report's ``done`` on the loop
    afterwards, with one wake-up. A queue and batches rather than an executor and a future per
    report: the receiver's and the store's CPU per report go down as the load goes up (issue 15)."""

    def __init__(self, ingest: Callable[[list[InverterPost]], None], loop: asyncio.AbstractEventLoop,
                 arriving: Callable[[], int] = lambda: 0) -> None:
        """``arriving()``: how many more requests are being read (a batch waits for them, briefly)."""
        self.ingest = ingest
        self.loop = loop
        self.arriving = arriving
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name="solargw-ingest", daemon=True)
        self.thread.start()

    def submit(self, post: InverterPost, done: Callable[[], None]) -> None:
        self.queue.put((post, done))

    def stop(self) -> None:
        self.queue.put(None)

    def _run(self) -> None:
        finished: list[Callable[[], None]] = []  # replies held while more reports wait (one wake-up)
        first = 0.0
        while True:
            items = self._take(block=not finished)
            if finished and (not items or len(finished) >= BATCH or time.monotonic() - first >= BATCH_SECONDS):
                self._tell(finished)
                finished = []
            stopping = bool(items) and items[-1] is None
            if stopping:
                items.pop()
            if items:
                try:
                    self.ingest([post for post, _ in items])
                except Exception:  # noqa: BLE001 - ingest itself never raises; a bug must not stop the thread
                    log.exception("ingest")
                if not finished:
                    first = time.monotonic()
                finished += [done for _, done in items]
            if stopping:
                if finished:
                    self._tell(finished)
                return

    def _take(self, block: bool) -> list:
        """The reports waiting (at most BATCH; the stop mark last), waiting for one when ``block``;
        then, while more requests are being read, up to GATHER_SECONDS for them (only when
        ``block``: replies held for the loop are not kept waiting)."""
        items = []
        deadline = 0.0
        try:
            items.append(self.queue.get(block=block))
            while len(items) < BATCH and items[-1] is not None:
                try:
                    items.append(self.queue.get_nowait())
                except queue.Empty:
                    if not block or not self.arriving():
                        break
                    now = time.monotonic()
                    deadline = deadline or now + GATHER_SECONDS
                    if now >= deadline:
                        break
                    items.append(self.queue.get(timeout=deadline - now))
        except queue.Empty:
            pass
        return items

    def _tell(self, finished: list[Callable[[], None]]) -> None:
        try:
            self.loop.call_soon_threadsafe(_call_all, finished)
        except RuntimeError:  # the loop is closed: the worker is exiting
            pass


def _call_all(callbacks: list[Callable[[], None]]) -> None:
    for callback in callbacks:
        callback()


class Receiver:
    """Serves the public sockets on the running loop: :meth:`start`, then :meth:`close`."""

    def __init__(self, ingest: Callable[[list[InverterPost]], None], upstream: str | None,
                 *, max_connections: int = MAX_CONNECTIONS) -> None:
        """``ingest(posts)``: run on the ingest thread (:class:`IngestThread`); ``upstream``: the UI server's unix socket
        (None: every other request gets a 404)."""
        self.ingest = ingest
        self.upstream = upstream
        self.max_connections = max_connections
        self.connections: dict[Connection, None] = {}
        self.pending = 0
        self.arriving = 0
        """Connections still reading their request (head or body)."""
        self.ui_buffered = 0
        self.stats = {"accepted": 0, "evicted": 0, "reports": 0, "dropped": 0, "timed_out": 0, "malformed": 0}
        self.servers: list[asyncio.AbstractServer] = []
        self.loop: asyncio.AbstractEventLoop | None = None
        self.worker: IngestThread | None = None

    async def start(self, sockets: list[socket.socket]) -> None:
        self.loop = asyncio.get_running_loop()
        self.worker = IngestThread(self.ingest, self.loop, lambda: self.arriving)
        for sock in sockets:
            self.servers.append(await self.loop.create_server(lambda: Connection(self), sock=sock, backlog=1024))

    async def close(self, timeout: float = 5.0) -> None:
        """Stop listening (the sockets stay open in the parent), let queued reports finish."""
        for server in self.servers:
            server.close()
        for connection in list(self.connections):
            if connection.state in ("head", "body"):
                connection.transport.abort()
        deadline = time.monotonic() + timeout
        while self.pending and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if self.worker is not None:
            self.worker.stop()

    # -- bookkeeping ---------------------------------------------------------------------------
    def opened(self, connection: "Connection") -> None:
        self.stats["accepted"] += 1
        if len(self.connections) >= self.max_connections:
            oldest = next((c for c in self.connections if c.state == "head"), None)
            victim = oldest or connection
            self.stats["evicted"] += 1
            evicted_log.warning("%d connections open: closing the one from %s that %s", len(self.connections),
                                victim.peer[0], "sent no whole request head yet" if oldest else "just came")
            victim.transport.abort()
            if victim is connection:
                return
            self.connections.pop(victim, None)
        self.connections[connection] = None

    def closed(self, connection: "Connection") -> None:
        self.connections.pop(connection, None)

    def submit(self, post: InverterPost, done: Callable[[], None]) -> bool:
        """Queue ``post`` for the ingest thread, ``done()`` called on the loop once it is recorded;
        False when the queue is full (the report is then answered but not recorded, and counted)."""
        self.stats["reports"] += 1
        if self.pending >= MAX_PENDING or self.worker is None:
            self.stats["dropped"] += 1
            dropped_log.error("%d reports wait for the store: one from %s answered but not recorded",
                              self.pending, post.source)
            return False
        self.pending += 1

        def finished() -> None:
            self.pending -= 1
            done()

        self.worker.submit(post, finished)
        return True


class Connection(asyncio.Protocol):
    """One client connection: ``head`` -> ``body`` -> ``ingest`` (an inverter) or ``proxy``."""

    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver
        self.state = "head"
        self.buffer = bytearray()
        self.head: RequestHead | None = None
        self.inverter = False
        self.need = 0
        self.chunks: ChunkedBody | None = None
        self.buffered = 0  # bytes of UI body counted in receiver.ui_buffered
        self.timer: asyncio.TimerHandle | None = None
        self.replied = False
        self.task: asyncio.Task | None = None
        self.paused = False  # the client's socket buffer is full (asyncio's flow control)
        self.drained: asyncio.Future | None = None
        self.peer: tuple[str, int] = ("", 0)
        self.server_port = 0
        self.reading = False  # still reading its request: counted in receiver.arriving

    # -- asyncio callbacks -------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self.peer = (str(peer[0]), int(peer[1]))
        local = transport.get_extra_info("sockname")
        self.server_port = int(local[1]) if isinstance(local, tuple) else 0
        self.timer = self.receiver.loop.call_later(HEAD_SECONDS, self._timed_out)  # type: ignore[union-attr]
        self.reading = True
        self.receiver.arriving += 1
        self.receiver.opened(self)

    def data_received(self, data: bytes) -> None:
        if self.state == "head":
            self.buffer += data
            end = http1.head_end(self.buffer)
            try:
                if end < 0:
                    if len(self.buffer) > http1.MAX_HEAD:
                        raise HttpError(431, f"no end of the request head in {http1.MAX_HEAD} bytes",
                                        self._line())
                    return
                head = http1.parse_head(self.buffer[:end])
            except HttpError as error:
                self._refuse(error)
                return
            rest = bytes(self.buffer[end:])
            self.buffer = bytearray()
            self._start_body(head, rest)
        elif self.state == "body":
            self._feed(data)
        # later bytes (pipelined requests, junk after a body) are not read: one request per connection

    def eof_received(self) -> bool:
        if self.state == "head":
            self._refuse(HttpError(400, "connection closed inside the request head", self._line()))
        elif self.state == "body":
            got = len(self.buffer) if self.chunks is None else "part"
            self._refuse(HttpError(400, f"connection closed inside the body ({got} of "
                                        f"{self.need if self.chunks is None else 'chunked'} bytes)",
                                   self.head.line if self.head else None))
        return not self.transport.is_closing()  # half-closed: the reply may still go out

    def connection_lost(self, exc: Exception | None) -> None:
        self._arrived()
        self._cancel_timer()
        self._release_buffer()
        self.receiver.closed(self)
        self.resume_writing()
        if self.task is not None and not self.task.done():
            self.task.cancel()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)

    # -- reading the request -------------------------------------------------------------------
    def _line(self) -> http1.RequestLine | None:
        try:
            return http1.request_line(self.buffer)
        except HttpError as error:
            return error.line

    def _start_body(self, head: RequestHead, rest: bytes) -> None:
        self.head = head
        line = head.line
        self.inverter = line.method == "POST" and is_inverter_path(line.path)
        limit = MAX_BODY if self.inverter else UI_MAX_BODY
        if head.content_length is not None and head.content_length > limit:
            self._refuse(HttpError(413, f"body over {limit} bytes (Content-Length {head.content_length}), not read",
                                   line))
            return
        if head.chunked:
            self.chunks = ChunkedBody(limit, line)
        else:
            self.need = head.content_length or 0
        self.state = "body"
        self._feed(rest)
        if self.state == "body":  # more to come (an inverter's whole request is usually here already)
            self._restart_timer(BODY_SECONDS if self.inverter else UI_BODY_SECONDS)
            if head.expect_continue and not rest:
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _feed(self, data: bytes) -> None:
        if not self.inverter:
            if self.receiver.ui_buffered + len(data) > UI_BUFFER_BUDGET:
                self._refuse(HttpError(503, "too many uploads at once", self.head.line if self.head else None))
                return
            self.buffered += len(data)
            self.receiver.ui_buffered += len(data)
        if self.chunks is not None:
            try:
                self.chunks.feed(data)
            except HttpError as error:
                self._refuse(error)
                return
            if self.chunks.done:
                self._complete(self.chunks.body)
            return
        self.buffer += data
        if len(self.buffer) >= self.need:
            self._complete(bytes(self.buffer[:self.need]))

    def _complete(self, body: bytes) -> None:
        self._arrived()
        self.buffer = bytearray()
        self.chunks = None
        self._cancel_timer()
        self.transport.pause_reading()
        if self.inverter:
            self._ingest(body, "")
        else:
            self.state = "proxy"
            self.task = asyncio.ensure_future(self._proxy(body))

    def _refuse(self, error: HttpError) -> None:
        """A request that cannot be read whole: an inverter's POST still gets its timestamp."""
        if self.state not in ("head", "body"):
            return
        self._arrived()
        line = error.line
        self.receiver.stats["malformed"] += 1
        if line is not None and line.method == "POST" and is_inverter_path(line.path):
            self.transport.pause_reading()
            self._ingest(None, str(error), line.path)
            return
        silent = line is None and not bytes(self.buffer).strip()  # nothing was said: nothing to answer
        self.state = "closing"
        self._cancel_timer()
        self._release_buffer()
        if not silent:
            refused_log.warning("%s from %s: %s", error.status, self.peer[0], error)
            self.transport.write(http1.error_response(error))
        self.transport.close()

    def _arrived(self) -> None:
        """The request is read (or never will be): no longer counted in ``receiver.arriving``."""
        if self.reading:
            self.reading = False
            self.receiver.arriving -= 1

    def _timed_out(self) -> None:
        self.timer = None
        self.receiver.stats["timed_out"] += 1
        if self.state == "head":
            self._refuse(HttpError(408, f"no whole request head within {HEAD_SECONDS:g} s", self._line()))
        elif self.state == "body":
            self._refuse(HttpError(408, "no whole body within "
                                        f"{BODY_SECONDS if self.inverter else UI_BODY_SECONDS:g} s",
                                   self.head.line if self.head else None))

    # -- an inverter's POST ------------------------------------------------------------------------
    def _ingest(self, body: bytes | None, problem: str, path: str | None = None) -> None:
        self.state = "ingest"
        self._cancel_timer()
        self._release_buffer()
        self.buffer = bytearray()
        post = InverterPost(path or (self.head.line.path if self.head else "/"), self.peer[0], body, time.time(),
                            problem, source_port=self.peer[1], server_port=self.server_port)
        if not self.receiver.submit(post, self._reply):
            self._reply()
            return
        self.timer = self.receiver.loop.call_later(REPLY_SECONDS, self._reply)  # type: ignore[union-attr]

    def _reply(self) -> None:
        if self.replied:
            return
        self.replied = True
        self._cancel_timer()
        if not self.transport.is_closing():
            self.transport.write(http1.timestamp_response())
            self.transport.close()

    # -- everything else: to the UI server ---------------------------------------------------------
    async def _proxy(self, body: bytes) -> None:
        assert self.head is not None
        if self.receiver.upstream is None:
            self._send_and_close(http1.response(404, b"Not Found\n"))
            return
        writer = None
        sent = False
        try:
            reader, writer = await asyncio.open_unix_connection(self.receiver.upstream)
            writer.write(ForwardedHead(self.head, self.peer, self.server_port).encode(len(body)) + body)
            self._release_buffer()
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                self.transport.write(chunk)
                sent = True
                if self.paused:
                    self.drained = self.receiver.loop.create_future()  # type: ignore[union-attr]
                    await asyncio.wait_for(self.drained, WRITE_SECONDS)
                if self.transport.is_closing():
                    break
        except TimeoutError:  # (an OSError too: first) the client reads nothing of its response
            self._drop()
            return
        except OSError as exc:
            if sent:  # the UI server went away mid-response: the client sees the connection cut
                self.transport.abort()
                return
            log.warning("the UI server cannot be reached (%s): %s %s answered 502", exc.strerror or exc,
                        self.head.line.method, self.head.line.path[:80])
            self._send_and_close(http1.response(502, b"Bad Gateway: the web UI is restarting, try again\n"))
            return
        finally:
            self._release_buffer()
            if writer is not None:
                writer.close()
        self.transport.close()

    def _drop(self) -> None:
        """Close at once with a reset: what the kernel still holds for this client is thrown away
        (a plain close would keep sending it, megabytes to a client that reads nothing)."""
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        self.transport.abort()

    def _send_and_close(self, data: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.write(data)
            self.transport.close()

    # -- helpers -----------------------------------------------------------------------------------
    def _restart_timer(self, seconds: float) -> None:
        self._cancel_timer()
        self.timer = self.receiver.loop.call_later(seconds, self._timed_out)  # type: ignore[union-attr]

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _release_buffer(self) -> None:
        if self.buffered:
            self.receiver.ui_buffered -= self.buffered
            self.buffered = 0
