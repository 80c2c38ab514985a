"""Dashboard page weight and time to first render, in Debian's chromium: ``.venv/bin/python -m bench.ui [loads]``.

Starts the real ``solargw web`` (gunicorn) on a loopback port with seven inverters
(real frames, decoded and stored, as the demo shows), then loads the dashboard in
headless chromium with the cache off, ``loads`` times per setting:

- page weight: every byte the browser fetched for the page (navigation plus
  resources, Resource Timing ``transferSize``, headers included) and per type;
- time to first byte (``responseStart``) and first contentful paint, median;
- the same with chromium's CPU throttled 6x, a rough stand-in for a phone or
  for a browser on a Pi Zero 2 W class device.
"""
from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

from appliance.protocols import enecsys, nep
from appliance.settings import Settings
from appliance.store import Store
from bench._web import running_web

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


def seed(settings: Settings) -> None:
    store = Store(settings.data_dir)
    now = time.time()
    for n, (serial, model) in enumerate((("12345678", "bdm400"), ("deadbeef", "bdm800"), ("0badcafe", "bdm600"))):
        for k in range(50):
            body = nep.encode_i(serial=serial, model=model, ac_power_w=200 + 30 * n + k, energy_today_wh=20 * k)
            store.record(nep.decode(body, model=model, received_at=now - (50 - k) * 60))
    for n, serial in enumerate((100095471, 100012445, 100048236, 100048590)):
        for k in range(50):
            frame = enecsys.encode_report(serial, k, 0, 1.3, 40 + n + k % 5, 0.85, 50, 240, 30, 1_000_000 + 10 * k)
            store.record(enecsys.decode(frame, received_at=now - (50 - k) * 60))
    store.close()


MEASURE = """() => {
  const nav = performance.getEntriesByType('navigation')[0];
  const fcp = performance.getEntriesByName('first-contentful-paint')[0];
  const resources = performance.getEntriesByType('resource').map(r => [r.name, r.initiatorType, r.transferSize]);
  return {nav: nav.transferSize, html: nav.encodedBodySize, ttfb: nav.responseStart, fcp: fcp ? fcp.startTime : null,
          resources};
}"""


def load_dashboard(browser, url: str, throttle: float) -> dict:
    context = browser.new_context(viewport={"width": 390, "height": 844})
    page = context.new_page()
    cdp = context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.setCacheDisabled", {"cacheDisabled": True})
    if throttle > 1:
        cdp.send("Emulation.setCPUThrottlingRate", {"rate": throttle})
    page.goto(url + "/", wait_until="load")
    page.wait_for_function("performance.getEntriesByName('first-contentful-paint').length > 0", timeout=10000)
    result = page.evaluate(MEASURE)
    context.close()
    return result


def main() -> None:
    loads = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    if not Path(CHROMIUM).exists():
        raise SystemExit("needs Debian's chromium (make deps)")
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp, running_web(Path(tmp), seed) as (_process, url, _env):
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            load_dashboard(browser, url, 1)  # warm the server (imports, templates)
            for throttle in (1, 6):
                runs = [load_dashboard(browser, url, throttle) for _ in range(loads)]
                first = runs[0]
                by_type: dict[str, int] = {}
                for _name, kind, size in first["resources"]:
                    by_type[kind] = by_type.get(kind, 0) + size
                total = first["nav"] + sum(by_type.values())
                if throttle == 1:
                    print(f"dashboard, 7 inverters: {total} bytes in {1 + len(first['resources'])} requests "
                          f"(HTML {first['nav']} incl. headers, body {first['html']}; "
                          + ", ".join(f"{k} {v}" for k, v in sorted(by_type.items())) + ")")
                ttfb = statistics.median(r["ttfb"] for r in runs)
                fcp = statistics.median(r["fcp"] for r in runs)
                label = "no CPU throttling" if throttle == 1 else f"CPU throttled {throttle}x"
                print(f"{label:>20}: time to first byte {ttfb:.0f} ms, first contentful paint {fcp:.0f} ms "
                      f"(median of {loads} cold loads)")
            browser.close()


if __name__ == "__main__":
    main()
