"""The web UI in Debian's chromium (headless, driven by Playwright) against the real gunicorn server.

Screenshots land in docs/screenshots/ (the README shows some of them).
"""
from __future__ import annotations

import math
import re
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import requests

from appliance.protocols import enecsys, nep
from appliance.settings import Settings, load
from appliance.store import Store
from support.web_service import start_web
from werkzeug.security import generate_password_hash

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
PASSWORD = "sunny-roof-2024"
NEP_SERIALS = {"12345678": "bdm400", "deadbeef": "bdm800", "0badcafe": "bdm600"}
ENECSYS_SERIALS = (100095471, 100048590)

if not Path(CHROMIUM).exists():
    pytest.skip("Debian's chromium is not installed (make deps)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")


def seed_history(settings: Settings) -> None:
    """Real frames, decoded, for today so far and the last weeks: the charts have data."""
    store = Store(settings.data_dir)
    tz = ZoneInfo(settings.system.timezone)
    now = time.time()
    midnight = datetime.now(tz).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
    for serial, model in NEP_SERIALS.items():
        peak = {"bdm400": 380, "bdm800": 760, "bdm600": 560}[model]
        for day in range(20, -1, -1):
            start = midnight - day * 86400
            energy = 0.0
            for minute in range(6 * 60, 20 * 60, 20 if day else 10):
                ts = start + minute * 60
                if ts > now - 60:
                    break
                hour = minute / 60
                power = peak * max(0.0, math.sin(math.pi * (hour - 6) / 14)) ** 1.5
                power *= 0.6 + 0.4 * ((day * 7) % 5) / 4
                energy += power * (20 if day else 10) / 60
                body = nep.encode_i(serial=serial, model=model, ac_power_w=power, energy_today_wh=energy,
                                    dc_current_1_a=power / 32 / 2, dc_current_2_a=power / 32 / 2,
                                    temperature_c=25 + power / 40, ac_voltage_v=236)
                store.record(nep.decode(body, model=model, received_at=ts), source="10.42.0.51")
    for n, serial in enumerate(ENECSYS_SERIALS):
        lifetime = 1_347_515 + n * 400_000
        for k in range(30):
            ts = now - (30 - k) * 120
            lifetime += 2
            frame = enecsys.encode_report(serial, counter=k, state=0, dc_current_a=1.3, dc_power_w=44 + k + n * 5,
                                          efficiency=0.846, ac_frequency_hz=50, ac_voltage_v=243, temperature_c=32,
                                          lifetime_wh=lifetime)
            store.record(enecsys.decode(frame, received_at=ts), source="zigbee")
    store.reject(frame=bytes.fromhex("7926004014ffff"), family="nep", source="10.42.0.77", reason="truncated frame")
    store.set_status("zigbee", {"coordinator": {"firmware": "Z-Stack 3.x.0 20220219", "channel": 13, "pan_id": "0x02AA"},
                                "joined_inverters": [str(s) for s in ENECSYS_SERIALS]})
    store.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The real ``solargw web`` (gunicorn) on a free loopback port (tests/support/web_service.py)."""
    web = start_web(tmp_path_factory.mktemp("ui-browser"), {
        "access_point": {"passphrase": "inverters-only-42"},
        "admin": {"password_hash": generate_password_hash(PASSWORD)},
        "system": {"timezone": "UTC"},
        "web": {"threads": 8},  # the appliance default
    })
    try:
        seed_history(load(web.settings_path, env={}))
        yield {"url": web.url.rstrip("/"), "settings_path": web.settings_path}
    finally:
        web.stop()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=server["url"])
    # Nothing may leave the LAN: fail on any request that is not to the appliance itself.
    outside: list[str] = []
    context.on("request", lambda r: None if r.url.startswith(server["url"]) or r.url.startswith("data:") else outside.append(r.url))
    page = context.new_page()
    yield page
    context.close()
    assert not outside, f"requests left the appliance: {outside}"


def shot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / name), full_page=True)


def log_in(page) -> None:
    page.goto("/login")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit] >> text=Log in")
    page.wait_for_url(re.compile(r"/$"))


def post_nep(url: str, serial: str, model: str, power: float) -> None:
    body = nep.encode_i(serial=serial, model=model, ac_power_w=power, energy_today_wh=2500, temperature_c=41.5)
    reply = requests.post(url + "/i.php", data=body, headers={"Host": "www.nepviewer.net"}, timeout=10)
    assert reply.status_code == 200 and re.fullmatch(r"\d{14}", reply.text)


def test_login_and_logout(page):
    page.goto("/settings")
    page.wait_for_url(re.compile(r"/login"))
    page.fill("input[name=password]", "not the password")
    page.click("button[type=submit] >> text=Log in")
    assert page.locator("text=Wrong password.").is_visible()
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit] >> text=Log in")
    page.wait_for_url(re.compile(r"/settings$"))
    assert page.locator("h1", has_text="Settings").is_visible()
    page.click("text=Log out")
    page.goto("/settings")
    page.wait_for_url(re.compile(r"/login"))


def test_dashboard_updates_live_without_reload(page, server):
    page.goto("/")
    card = page.locator('[data-serial="deadbeef"]')
    assert card.is_visible() and page.locator(".card").count() == 5
    page.wait_for_selector('#live[data-state="open"]', timeout=10000)
    page.evaluate("window.__sameDocument = true")
    post_nep(server["url"], "deadbeef", "bdm800", 612.0)
    sync_api.expect(card.locator('[data-key="power_text"]')).to_have_text("612 W", timeout=15000)
    post_nep(server["url"], "deadbeef", "bdm800", 640.0)
    sync_api.expect(card.locator('[data-key="power_text"]')).to_have_text("640 W", timeout=15000)
    assert page.evaluate("window.__sameDocument") is True  # no reload happened
    # a brand-new inverter appears as a new card, live
    post_nep(server["url"], "00c0ffee", "bdm400", 123.0)
    sync_api.expect(page.locator('[data-serial="00c0ffee"] [data-key="power_text"]')).to_have_text("123 W", timeout=15000)
    assert page.evaluate("window.__sameDocument") is True
    page.wait_for_timeout(900)  # let the highlight fade before the picture
    shot(page, "dashboard-desktop.png")


def test_inverter_page_chart_and_fields(page):
    page.goto("/inverter/12345678")
    page.click("text=Day before")  # a whole seeded day, whatever the time is now
    page.wait_for_url(re.compile(r"day="))
    line = page.locator("svg.chart path.line").first
    assert line.is_visible()
    points = line.get_attribute("d").count("L")
    assert points > 30, f"power chart has only {points} segments"
    box = line.bounding_box()
    assert box["width"] > 100 and box["height"] > 50  # drawn across the plot, not a dot
    assert page.locator("svg.chart rect.bar").count() >= 20  # energy per day over 4 weeks
    assert page.locator('td[data-field="temperature_c"]').inner_text().endswith("°C")
    assert page.locator('td[data-field="ac_power_w"]').inner_text().endswith(" W")
    shot(page, "inverter-desktop.png")


def test_settings_change_is_applied(page, server):
    log_in(page)
    page.goto("/settings")
    page.fill("form:has(#system) input[name=timezone]", "Pacific/Kiritimati")
    page.click("text=Save time zone")
    assert page.locator(".flash.ok", has_text="Time zone: saved and applied").is_visible()
    assert load(server["settings_path"], env={}).system.timezone == "Pacific/Kiritimati"
    page.goto("/status")  # the running server formats times in the new zone at once
    shot(page, "status-desktop.png")
    shown = page.locator("table.kv tr:has(th:text('Time')) td").inner_text()[:19]
    expected = datetime.now(ZoneInfo("Pacific/Kiritimati"))
    assert abs((datetime.fromisoformat(shown) - expected.replace(tzinfo=None)).total_seconds()) < 120
    page.goto("/settings")  # back to UTC for the tests after this one
    page.fill("form:has(#system) input[name=timezone]", "UTC")
    page.click("text=Save time zone")
    assert load(server["settings_path"], env={}).system.timezone == "UTC"


def test_short_passphrase_is_rejected_with_a_message(page, server):
    log_in(page)
    page.goto("/settings")
    page.fill("form:has(#access_point) input[name=passphrase]", "short")
    page.click("text=Save access point")
    message = page.locator("#error-access_point-passphrase")
    sync_api.expect(message).to_have_text(re.compile("passphrase is 8 to 63 characters"))
    message.scroll_into_view_if_needed()
    page.screenshot(path=str(SCREENSHOTS / "settings-error.png"))
    assert load(server["settings_path"], env={}).access_point.passphrase == "inverters-only-42"


def test_csrf_refusal_in_the_browser(page, server):
    log_in(page)
    page.goto("/inverter/12345678")
    page.evaluate("document.querySelectorAll('input[name=csrf_token]').forEach(e => e.value = 'forged')")
    page.fill("input[name=name]", "Should not stick")
    page.click("text=Rename")
    assert page.locator("h1", has_text="Request refused").is_visible()
    assert requests.get(server["url"] + "/api/inverters", timeout=10).text.count("Should not stick") == 0
    # and with the real token the same form works
    page.goto("/inverter/12345678")
    page.fill("input[name=name]", "Garage roof")
    page.click("text=Rename")
    assert page.locator("h1", has_text="Garage roof").is_visible()


@pytest.mark.parametrize("path,name", [("/", "dashboard-phone.png"), ("/inverter/deadbeef", "inverter-phone.png"),
                                       ("/settings", "settings-phone.png"), ("/status", None)])
def test_phone_width_has_no_horizontal_scroll(browser, server, path, name):
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True,
                                  has_touch=True, base_url=server["url"])
    page = context.new_page()
    if path == "/settings":
        log_in(page)
    page.goto(path)
    page.wait_for_load_state("load")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"{path} is {width}px wide on a 390px phone"
    if name:
        page.screenshot(path=str(SCREENSHOTS / name))  # the first screenful, as a phone shows it
    context.close()
