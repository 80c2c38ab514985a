"""The emulated stick's serial link, over TCP (``socket://host:port``): ZNP transport frames
(SOF 0xFE, length, cmd0/cmd1, data, XOR FCS) in both directions, one host at a time.

Garbage and frames with a bad FCS are skipped, as a stick's UART parser does. A new host
connection replaces the old one (one serial port, one host); :meth:`HostLink.drop` cuts it
like an unplugged cable while the stick keeps its state.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable, Iterator

import zigpy_znp.types as t
from zigpy_znp.exceptions import InvalidFrame
from zigpy_znp.frames import GeneralFrame, TransportFrame

from appliance.sim.zstack.nv import ALIGN

log = logging.getLogger(__name__)


class HostLink:
    """Serves one host; ``on_frame(frame)`` handles each frame it sends, ``record(event)`` logs the link's life."""

    def __init__(self, on_frame: Callable[[GeneralFrame], Awaitable[None]], record: Callable[[str], Any]):
        self._on_frame = on_frame
        self._record = record
        self._server: asyncio.base_events.Server | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._connections: set[asyncio.Task] = set()
        self._tasks: set[asyncio.Task] = set()
        self.host = ""
        self.port = 0

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._server = await asyncio.start_server(self._serve, host, port)
        self.host, self.port = self._server.sockets[0].getsockname()[:2]
        return self.url

    @property
    def url(self) -> str:
        return f"socket://{self.host}:{self.port}"

    @property
    def connected(self) -> bool:
        return self._writer is not None

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        self.drop()
        for task in list(self._connections | self._tasks):
            task.cancel()
        await asyncio.gather(*self._connections, *self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    def drop(self) -> None:
        """Cut the host link (a dead serial/TCP link)."""
        if self._writer is not None:
            self._record("link_dropped")
            transport = self._writer.transport
            self._writer = None
            transport.abort()

    def send(self, command: t.CommandBase | GeneralFrame) -> bool:
        """Send a response or callback to the host; False when no host is connected."""
        writer = self._writer
        if writer is None or writer.is_closing():
            return False
        frame = command if isinstance(command, GeneralFrame) else command.to_frame(align=ALIGN)
        writer.write(TransportFrame(frame).serialize())
        return True

    def later(self, delay: float, *commands: t.CommandBase, then: Callable[[], None] | None = None) -> None:
        """After ``delay`` seconds, call ``then`` and send ``commands`` (what the stick does on its own)."""
        async def run() -> None:
            await asyncio.sleep(delay)
            if then is not None:
                then()
            for command in commands:
                self.send(command)
        self.spawn(run())

    def spawn(self, coroutine) -> asyncio.Task:
        """Run ``coroutine`` as the stick's own work: cancelled by :meth:`stop`."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._writer is not None:  # one serial port, one host: a new one replaces the old
            self.drop()
        self._writer = writer
        self._record("host_connected")
        task = asyncio.current_task()
        self._connections.add(task)
        buffer = bytearray()
        try:
            while True:
                chunk = await reader.read(4096)
                if not chunk:
                    break
                buffer += chunk
                for frame in _extract(buffer):
                    await self._on_frame(frame)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._connections.discard(task)
            if self._writer is writer:
                self._writer = None
                self._record("host_disconnected")
            writer.close()


def _extract(buffer: bytearray) -> Iterator[GeneralFrame]:
    """Take every complete frame out of ``buffer``, skipping bytes that do not start one."""
    while True:
        start = buffer.find(0xFE)
        if start < 0:
            buffer.clear()
            return
        del buffer[:start]
        if len(buffer) < 5 or len(buffer) < buffer[1] + 5:
            return
        try:
            frame, rest = TransportFrame.deserialize(bytes(buffer))
        except InvalidFrame:
            del buffer[:1]
            continue
        del buffer[:len(buffer) - len(rest)]
        yield frame.payload
