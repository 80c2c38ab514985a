"""What the Enecsys gateway listener costs and carries: ``.venv/bin/python -m bench.gateway [LINES]``.

1. Throughput: a listener in this process (real store in a temporary directory) takes ``LINES``
   ``WS=`` lines (default 3000, 30 inverters) from one simulated gateway connection, as fast as
   it sends them; prints lines stored per second.
2. The same while seven garbage clients flood it with malformed lines: the gateway's lines per
   second then, and how many malformed lines were taken (each costs a rejected-frame write
   until its client is closed).
3. Memory: the real ``solargw web`` worker's proportional set size (``Pss``) with ``[gateway]``
   off, then on with a simulated gateway connected and its inverters recorded.
"""
from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from appliance.gateway import GatewayListener
from appliance.pipeline import Pipeline
from appliance.protocols import enecsys, enecsys_gateway as protocol
from appliance.settings import Settings
from appliance.store import Store
from bench._proctree import worker_pss_kib
from bench._web import running_web


def lines_for(count: int) -> list[bytes]:
    out = []
    for n in range(count):
        serial = 120_000_000 + n % 30
        frame = enecsys.encode_report(serial, n, 0, 4.0, 150, 0.95, 50, 240, 35, 1_000_000 + n)
        out.append(protocol.report_line("7735A88A", "120000", enecsys.encode_ws_line(frame)).encode() + b"\r")
    return out


async def throughput(root: Path, count: int, garbage_clients: int) -> tuple[float, int]:
    store = Store(root)
    listener = GatewayListener("127.0.0.1", 0, Pipeline(store), store)
    await listener.start()
    flooders = []
    try:
        async def flood() -> None:
            while True:
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", listener.port)
                    for _ in range(200):
                        writer.write(b"\x00garbage that is no gateway line\r")
                        await writer.drain()
                except (ConnectionError, OSError):
                    await asyncio.sleep(0.01)

        flooders = [asyncio.create_task(flood()) for _ in range(garbage_clients)]
        _, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        started = time.perf_counter()
        for line in lines_for(count):
            writer.write(line)
            await writer.drain()
        while listener.counts["reports"] < count:
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - started
        writer.close()
        return count / elapsed, listener.counts["rejected"]
    finally:
        for task in flooders:
            task.cancel()
        await asyncio.gather(*flooders, return_exceptions=True)
        await listener.close()
        store.close()


def web_pss(root: Path, gateway_port: int | None) -> int:
    def adjust(settings: Settings) -> None:
        if gateway_port:
            settings.gateway.enabled, settings.gateway.listen_addr, settings.gateway.port = (
                True, "127.0.0.1", gateway_port)

    with running_web(root, adjust) as (process, _url, env):
        time.sleep(3)  # the worker has built the app (and the listener)
        if not gateway_port:
            return worker_pss_kib(process.pid)
        gateway = subprocess.Popen([sys.executable, "-m", "appliance", "simulate", "enecsys-gateway",
                                    "--port", str(gateway_port), "--inverters", "3", "--interval", "1",
                                    "--ping-interval", "1", "--start", "12:00"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        store = Store(root / "data")
        deadline = time.monotonic() + 30
        while len(store.latest()) < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        store.close()
        time.sleep(2)
        pss = worker_pss_kib(process.pid)
        gateway.terminate()
        gateway.wait(10)
        return pss


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    with tempfile.TemporaryDirectory() as tmp:
        rate, _ = asyncio.run(throughput(Path(tmp) / "a", count, 0))
        print(f"gateway lines stored: {rate:.0f}/s ({count} WS= lines, 30 inverters, one connection)")
        rate, rejected = asyncio.run(throughput(Path(tmp) / "b", count, 7))
        print(f"with 7 garbage clients flooding: {rate:.0f}/s for the gateway; {rejected} malformed lines taken")
        off = web_pss(Path(tmp) / "off", None)
        on = web_pss(Path(tmp) / "on", free_port())
        print(f"web worker PSS: {off} KiB with [gateway] off, {on} KiB on with a gateway and 3 inverters "
              f"({on - off:+d} KiB)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


if __name__ == "__main__":
    main()
