"""What the PVOutput uploader costs the web service: ``.venv/bin/python -m bench.pvoutput``.

Starts the real ``solargw web`` (gunicorn, one worker) twice on the same seeded data: with
``[pvoutput]`` off, then on and pointed at a local stand-in that answers every status
``OK 200: Added Status``. Once the stand-in has taken a status (the uploader thread has
run, imported its HTTP client and sent), it reads the worker's proportional set size
(``Pss`` in ``/proc/<pid>/smaps_rollup``) and prints both and the difference, the
figure that counts against the appliance's memory budget. Also prints the requests a day
the uploader makes at each status interval (statuses only while an inverter is online).
"""
from __future__ import annotations

import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from appliance.protocols import nep
from appliance.settings import PvoutputSettings, Settings
from appliance.store import Store
from bench._proctree import worker_pss_kib
from bench._web import running_web

SETTLE_SECONDS = 5.0


class Taker(BaseHTTPRequestHandler):
    taken = 0

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        Taker.taken += 1
        body = b"OK 200: Added Status"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def seed(settings: Settings) -> None:
    store = Store(settings.data_dir)
    now = time.time()
    for n, serial in enumerate(("12345678", "deadbeef", "0badcafe")):
        for k in range(30):
            body = nep.encode_i(serial=serial, model="bdm800", ac_power_w=300 + 20 * n + k, energy_today_wh=25 * k)
            store.record(nep.decode(body, model="bdm800", received_at=now - (30 - k) * 20))
    store.close()


def measure(root: Path, pvoutput: dict | None) -> int:
    def adjust(settings: Settings) -> None:
        if pvoutput:
            settings.pvoutput = PvoutputSettings(**pvoutput)
        seed(settings)

    with running_web(root, adjust) as (process, _url, _env):
        deadline = time.monotonic() + 30
        while pvoutput and Taker.taken == 0:
            if time.monotonic() > deadline:
                raise SystemExit("the uploader sent nothing")
            time.sleep(0.1)
        time.sleep(SETTLE_SECONDS)
        return worker_pss_kib(process.pid)


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Taker)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with tempfile.TemporaryDirectory() as off_dir, tempfile.TemporaryDirectory() as on_dir:
        off = measure(Path(off_dir), None)
        on = measure(Path(on_dir), {"enabled": True, "api_key": "bench", "system_id": 1,
                                    "base_url": f"http://127.0.0.1:{server.server_address[1]}/service/r2"})
    server.shutdown()
    print(f"web worker PSS, [pvoutput] off: {off / 1024:.1f} MiB")
    print(f"web worker PSS, [pvoutput] on (after {Taker.taken} status sent): {on / 1024:.1f} MiB")
    print(f"uploader cost: {(on - off) / 1024:+.1f} MiB")
    for minutes in (5, 10, 15):
        per_hour = 60 // minutes
        print(f"{minutes}-minute statuses: {per_hour} requests an hour per system while inverters are online, "
              f"{per_hour * 14} on a 14-hour summer day (limit: 60 an hour per API key)")


if __name__ == "__main__":
    main()
