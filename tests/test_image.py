"""The SD-card image: its boot partition for Pi 3/4/Zero 2 W, then booted in QEMU.

Marker ``image``: the ``image`` fixture (conftest.py) builds the image unless a
fresh one is in build/, then these tests boot it in
``qemu-system-aarch64 -M virt`` and ``-M raspi3b`` (see image/boottest.py).
Figures (boot-to-ready, service memory) go to build/boottest-<machine>.json.
"""
from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

pytestmark = pytest.mark.image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "image"))
import boottest

SERVICES = ("solargw-web", "solargw-zigbee", "solargw-net", "mosquitto")


@pytest.fixture(scope="module")
def boot(image: Path) -> boottest.BootPartition:
    return boottest.BootPartition(image)


# -- the card as the Pi firmware sees it -----------------------------------------------------

def test_partition_table(image):
    boot_part, root_part = boottest.partitions(image)
    assert boot_part.type == 0x0C and root_part.type == 0x83
    assert boot_part.start % (4 << 20) == 0  # aligned for SD erase blocks
    label = subprocess.run(["blkid", "-p", "-o", "value", "-s", "LABEL", "-O", str(root_part.start),
                            str(image)], capture_output=True, text=True, check=True).stdout.strip()
    assert label == "solargw-root"


@pytest.mark.parametrize(
    ("model", "dtb", "firmware"),
    [
        ("Pi 3 B", "bcm2837-rpi-3-b.dtb", ("bootcode.bin", "start.elf", "fixup.dat")),
        ("Pi 3 B+", "bcm2837-rpi-3-b-plus.dtb", ("bootcode.bin", "start.elf", "fixup.dat")),
        ("Pi 4 B", "bcm2711-rpi-4-b.dtb", ("start4.elf", "fixup4.dat")),
        ("Pi 400", "bcm2711-rpi-400.dtb", ("start4.elf", "fixup4.dat")),
        ("Pi Zero 2 W", "bcm2837-rpi-zero-2-w.dtb", ("bootcode.bin", "start.elf", "fixup.dat")),
    ],
)
def test_boot_partition_boots(boot, model, dtb, firmware):
    """Debian ships the mainline device-tree names (bcm2837-*, not the vendor's bcm2710-*);
    ``upstream_kernel=1`` in config.txt makes the Pi firmware load exactly those."""
    files = set(boot.list())
    missing = [name for name in (dtb, *firmware) if name not in files]
    assert not missing, f"{model}: missing {missing} in the boot partition ({sorted(files)})"
    assert boot.read(dtb)[:4] == b"\xd0\x0d\xfe\xed", f"{dtb} is not a flattened device tree"


def test_config_txt_boots_the_debian_kernel_in_64_bit(boot):
    config = boot.read("config.txt").decode()
    files = set(boot.list())
    assert re.search(r"^arm_64bit=1$", config, re.MULTILINE)
    assert re.search(r"^upstream_kernel=1$", config, re.MULTILINE)
    kernel = re.search(r"^kernel=(\S+)$", config, re.MULTILINE).group(1)
    initrd = re.search(r"^initramfs (\S+)", config, re.MULTILINE).group(1)
    assert kernel.startswith("vmlinuz-") and kernel.endswith("-arm64") and kernel in files
    assert initrd.startswith("initrd.img-") and initrd in files
    assert boot.read(kernel)[:2] == b"\x1f\x8b" or b"ARM\x64" in boot.read(kernel)[:64]
    assert re.search(r"^gpu_mem=16$", config, re.MULTILINE)  # from /etc/default/raspi-firmware-custom


def test_cmdline_selects_root_by_label(boot):
    cmdline = boot.read("cmdline.txt").decode().split()
    assert "root=LABEL=solargw-root" in cmdline
    assert "rootwait" in cmdline or any(a.startswith("rootwait") for a in cmdline)
    assert "console=ttyS1,115200" in cmdline and "cma=64M" in cmdline


def test_first_boot_example_is_shipped(boot):
    text = boot.read("solargw.toml").decode()
    assert "[access_point]" in text and "# passphrase =" in text
    assert text == (REPO / "image/solargw.toml.example").read_text()


# -- booted in QEMU: figures and diagnostics to build/ -----------------------------------------

def save_figures(machine: str, figures: dict) -> None:
    path = REPO / "build" / f"boottest-{machine}.json"
    path.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"\n{machine}: {json.dumps(figures)}")


GUEST_DIAGNOSTICS = ("systemctl --failed --no-pager; journalctl -b --no-pager -p warning -n 300; "
                     "journalctl -b --no-pager -u solargw-firstboot -u solargw-net -u solargw-web "
                     "-u solargw-zigbee -u hostapd -u mosquitto; ls -l /var/lib/solargw")


def save_guest_diagnostics(guest: boottest.Guest, machine: str) -> None:
    """The services' journal and the data directory, to build/boottest-<machine>-journal.log."""
    try:
        text = guest.ssh(GUEST_DIAGNOSTICS, timeout=60, check=False).stdout.decode(errors="replace")
    except (OSError, subprocess.SubprocessError) as exc:  # a guest that never came up has no journal
        text = f"(no diagnostics: {exc})\n"
    (REPO / "build" / f"boottest-{machine}-journal.log").write_text(text)


def shut_down(guest: boottest.Guest, machine: str, serial_log: str = "serial") -> None:
    save_guest_diagnostics(guest, machine)
    guest.stop()
    (REPO / "build" / f"boottest-{machine}-{serial_log}.log").write_text(guest.tail(100_000))
    guest.cleanup()


def start_guest(image: Path, machine: str, ssh_timeout: float) -> tuple[boottest.Guest, float, int]:
    """A guest that answers SSH, the seconds that took and the boots it needed.

    Boots a second time only when the first never answered and its kernel reported soft lockups:
    QEMU's emulated CPUs were starved (a CI run saw modprobe take over 100 s in a module's signature
    check, then systemd freeze). The starved boot's serial log is kept, and a warning says so."""
    for boots in (1, 2):
        guest = boottest.Guest(image, machine)
        guest.prepare()
        guest.start()
        try:
            return guest, guest.wait_ssh(ssh_timeout), boots
        except (TimeoutError, RuntimeError) as failed:
            stalls = boottest.kernel_stalls(guest)
            shut_down(guest, machine, "serial" if boots == 2 or not stalls else "serial-starved")
            if boots == 2 or not stalls:
                raise
            warnings.warn(f"{machine}: the guest's CPUs were starved ({stalls[0]}; {str(failed).splitlines()[0]}); "
                          f"booting once more, the starved boot's serial log is build/boottest-{machine}-"
                          f"serial-starved.log")
    raise AssertionError("unreachable")


@contextlib.contextmanager
def booted(image: Path, machine: str, ssh_timeout: float) -> Iterator[boottest.Guest]:
    """``image`` booted on a copy in QEMU ``machine``, up to ``systemctl is-system-running``
    (``guest.figures``); afterwards its diagnostics and serial log go to build/."""
    guest, ssh_after, boots = start_guest(image, machine, ssh_timeout)
    try:
        state, ready = guest.wait_ready(600)
        guest.figures = {"ssh_after_s": round(ssh_after), "ready_after_s": round(ready), "state": state,
                         "boots": boots}
        yield guest
    finally:
        shut_down(guest, machine)


STARVED_SERIAL = ("[ 40.06] watchdog: BUG: soft lockup - CPU#0 stuck for 26s! [modprobe:221]\n"
                  "[142.44] systemd[1]: Freezing execution.")


class FakeGuest:
    """Stands in for QEMU in the boot-retry tests: each boot prints the next of ``serials`` and
    answers SSH only if that shows a login prompt."""

    serials: list[str] = []
    boots: list[FakeGuest] = []

    def __init__(self, image: Path, machine: str) -> None:
        self.serial = self.serials[len(self.boots)]
        self.stopped = False
        self.boots.append(self)

    def prepare(self) -> None: ...
    def start(self) -> None: ...
    def cleanup(self) -> None: ...

    def stop(self) -> None:
        self.stopped = True

    def tail(self, lines: int = 60) -> str:
        return self.serial

    def ssh(self, command: str, **_: object) -> subprocess.CompletedProcess:
        return subprocess.CompletedProcess(command, 255, b"", b"")

    def wait_ssh(self, timeout: float) -> float:
        if "login:" not in self.serial:
            raise TimeoutError(f"no SSH: systemd froze; serial console:\n{self.serial}")
        return 64.0


@pytest.fixture
def fake_qemu(monkeypatch, tmp_path):
    monkeypatch.setattr(boottest, "Guest", FakeGuest)
    monkeypatch.setattr(FakeGuest, "boots", [])
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    (tmp_path / "build").mkdir()
    return FakeGuest


def test_a_starved_boot_is_booted_once_more(fake_qemu, monkeypatch, tmp_path):
    monkeypatch.setattr(fake_qemu, "serials", [STARVED_SERIAL, "solargw login:"])
    with pytest.warns(UserWarning, match=r"CPUs were starved \(.*soft lockup.*\); booting once more"):
        guest, ssh_after, boots = start_guest(Path("card.img"), "fake", 600)
    assert (boots, ssh_after, len(fake_qemu.boots)) == (2, 64.0, 2)
    assert fake_qemu.boots[0].stopped and guest is fake_qemu.boots[1] and not guest.stopped
    assert (tmp_path / "build" / "boottest-fake-serial-starved.log").read_text() == STARVED_SERIAL


def test_a_boot_that_fails_without_starving_is_not_retried(fake_qemu, monkeypatch):
    monkeypatch.setattr(fake_qemu, "serials", ["[142.44] systemd[1]: Freezing execution.", "solargw login:"])
    with pytest.raises(TimeoutError, match="systemd froze"):
        start_guest(Path("card.img"), "fake", 600)
    assert len(fake_qemu.boots) == 1 and fake_qemu.boots[0].stopped


def test_a_second_starved_boot_fails(fake_qemu, monkeypatch):
    monkeypatch.setattr(fake_qemu, "serials", [STARVED_SERIAL, STARVED_SERIAL])
    with pytest.warns(UserWarning, match="booting once more"), pytest.raises(TimeoutError, match="systemd froze"):
        start_guest(Path("card.img"), "fake", 600)
    assert len(fake_qemu.boots) == 2


def test_waiting_for_ssh_ends_once_systemd_froze(tmp_path):
    guest = boottest.Guest(Path("card.img"), workdir=tmp_path, ports={22: boottest.free_port()})
    guest.serial_log.write_text(STARVED_SERIAL)
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="systemd froze"):
        guest.wait_ssh(600)
    assert time.monotonic() - started < 60


# -- booted in QEMU -M raspi3b ----------------------------------------------------------------

def test_raspi3b_boots_from_the_sd_card(image):
    with booted(image, "raspi3b", ssh_timeout=900) as guest:
        root = guest.ssh("findmnt -n -o SOURCE /").stdout.decode().strip()
        model = guest.ssh("tr -d '\\0' < /proc/device-tree/model").stdout.decode().strip()
        states = boottest.unit_states(guest, SERVICES)
        failed = boottest.failed_units(guest)
        stalls = boottest.kernel_stalls(guest)
        page = requests.get(f"http://127.0.0.1:{guest.ports[80]}/login", timeout=60)
        save_figures("raspi3b", {**guest.figures, "root": root, "model": model,
                                 "memory_mib": {k: round(v, 1) for k, v in boottest.service_memory(guest).items()}})
    assert root.startswith("/dev/mmcblk0p2"), root
    assert "Raspberry Pi 3" in model
    assert states == dict.fromkeys(SERVICES, "active"), states
    assert failed == [], (failed, stalls)
    assert page.status_code == 200


# -- booted in QEMU -virt ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def virt(image):
    with booted(image, "virt", ssh_timeout=600) as guest:
        yield guest


def test_virt_services_active_and_nothing_failed(virt):
    units = SERVICES + ("solargw-firstboot",)
    assert boottest.unit_states(virt, units) == dict.fromkeys(units, "active")
    assert boottest.failed_units(virt) == [], boottest.kernel_stalls(virt)
    assert virt.figures["state"] == "running"
    memory = boottest.service_memory(virt)
    virt.figures["memory_mib"] = {k: round(v, 1) for k, v in memory.items()}
    save_figures("virt", virt.figures)


def test_virt_first_boot_file_applied(virt):
    # SSH works only because the first-boot file's key was installed.
    settings = virt.ssh("cat /etc/solargw/solargw.toml").stdout.decode()
    assert f'ssid = "{boottest.TEST_SSID}"' in settings
    assert re.search(r'password_hash = "(scrypt|pbkdf2):', settings)
    boot_file = virt.ssh("cat /boot/firmware/solargw.toml").stdout.decode()
    assert "applied on" in boot_file
    assert boottest.TEST_PASSPHRASE not in boot_file and boottest.TEST_ADMIN_PASSWORD not in boot_file
    assert virt.ssh("readlink /etc/localtime").stdout.decode().strip().endswith(boottest.TEST_TIMEZONE)
    assert virt.ssh("stat -c %U:%G:%a /etc/solargw/solargw.toml").stdout.decode().strip() == \
        "solargw:solargw:640"
    assert virt.ssh("ls /etc/ssh/").stdout.decode().count("_key.pub") >= 2
    machine_id = virt.ssh("cat /etc/machine-id").stdout.decode().strip()
    assert re.fullmatch(r"[0-9a-f]{32}", machine_id)


def test_virt_web_runs_unprivileged_on_port_80(virt):
    procs = "/sys/fs/cgroup/system.slice/solargw-web.service/cgroup.procs"
    users = virt.ssh(f"for pid in $(cat {procs}); do stat -c %U /proc/$pid; done").stdout.decode().split()
    assert users and set(users) == {"solargw"}, users
    caps = virt.ssh("grep CapEff /proc/$(systemctl show -p MainPID --value solargw-web)/status").stdout
    assert caps.split()[-1] == b"0000000000000400", caps  # CAP_NET_BIND_SERVICE only
    page = requests.get(f"http://127.0.0.1:{virt.ports[80]}/login", timeout=30)
    assert page.status_code == 200 and "password" in page.text.lower()


def test_virt_nep_report_reaches_json_metrics_and_mqtt(virt):
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    messages: list[tuple[str, bytes]] = []
    subscribed = threading.Event()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="boottest")
    client.on_connect = lambda c, *a: c.subscribe("#")
    client.on_subscribe = lambda *a: subscribed.set()
    client.on_message = lambda c, u, m: messages.append((m.topic, bytes(m.payload)))
    client.connect("127.0.0.1", virt.ports[1883])
    client.loop_start()
    try:
        assert subscribed.wait(30), "no MQTT subscription through the forwarded port"
        done = subprocess.run(
            [sys.executable, "-m", "appliance", "simulate", "nep", "--url",
             f"http://127.0.0.1:{virt.ports[80]}/", "--inverters", "1", "--rounds", "1",
             "--seed", "99", "--start", "12:00"],
            capture_output=True, text=True, timeout=120, check=True)
        serial = re.search(r"^inverter ([0-9a-f]{8}) ", done.stdout, re.MULTILINE).group(1)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if any(serial in topic or serial.encode() in payload for topic, payload in messages):
                break
            time.sleep(1)
        else:
            journal = virt.ssh("journalctl -b --no-pager -n 40 -u solargw-web; ls -l /var/lib/solargw",
                               check=False).stdout.decode(errors="replace")
            pytest.fail(f"{serial} not seen on MQTT; topics: {sorted({t for t, _ in messages})[:20]}\n"
                        f"guest:\n{journal}")
    finally:
        client.loop_stop()
        client.disconnect()
    data = requests.get(f"http://127.0.0.1:{virt.ports[80]}/data.json", timeout=30)
    assert data.status_code == 200 and serial in data.text
    metrics = requests.get(f"http://127.0.0.1:{virt.ports[80]}/metrics", timeout=30)
    assert metrics.status_code == 200
    assert re.search(rf'^solargw_\w+\{{[^}}]*serial="{serial}"[^}}]*\}} ', metrics.text, re.MULTILINE)


def test_virt_database_is_shared_by_the_services_group(virt):
    """solargw-net (root), solargw-web and solargw-zigbee (user solargw) share one SQLite database
    (with its -wal and -shm files): whichever service creates it, group solargw can write to it."""
    listing = virt.ssh("stat -c '%n %G %a' /var/lib/solargw/solargw.db*").stdout.decode().splitlines()
    assert listing, "no database in /var/lib/solargw"
    for line in listing:
        _name, group, mode = line.split()
        assert group == "solargw" and int(mode, 8) & 0o060 == 0o060, line
    assert virt.ssh("journalctl -b --no-pager -u solargw-web -u solargw-net -u solargw-zigbee "
                    "| grep -c 'readonly database'", check=False).stdout.decode().strip() == "0"


def test_virt_wifi_access_point_with_hwsim(virt):
    result = boottest.run_wifi_test(virt)
    virt.figures["wifi"] = result
    save_figures("virt", virt.figures)
    assert result["associated"], result
    assert result["lease"] and result["lease_ip"].startswith("10.42.0."), result
    assert result["dns"], result
    assert result["posted"], result
    assert result["wrong_passphrase_refused"], result
    data = requests.get(f"http://127.0.0.1:{virt.ports[80]}/data.json", timeout=30).text
    assert result["serial"] and result["serial"] in data


DNSMASQ_RUNNING = ("for pid in $(cat /sys/fs/cgroup/system.slice/solargw-net.service/cgroup.procs); do "
                   "[ \"$(cat /proc/$pid/comm 2>/dev/null)\" = dnsmasq ] && exit 0; done; exit 1")


def _until_in_guest(guest, condition: str, seconds: int = 30) -> bool:
    script = f"for i in $(seq {seconds}); do ({condition}) && exit 0; sleep 1; done; exit 1"
    return guest.ssh(script, timeout=seconds + 30, check=False).returncode == 0


def test_virt_access_point_can_be_switched_off(virt):
    """``[access_point] enabled = false``, saved the way the web UI saves it: hostapd is skipped by
    its ExecCondition (inactive, not failed), solargw-net stops dnsmasq; true brings both back."""
    def set_enabled(value: bool) -> None:
        virt.ssh("runuser -u solargw -- /opt/solargw/venv/bin/python -c 'from appliance import settings as s; "
                 f"x = s.load(); x.access_point.enabled = {value}; s.save(x)'")

    set_enabled(False)
    try:
        virt.ssh("systemctl restart hostapd.service", check=False)
        shown = virt.ssh("systemctl show -p ActiveState -p Result hostapd.service").stdout.decode()
        assert "ActiveState=inactive" in shown and "Result=exec-condition" in shown, shown
        assert _until_in_guest(virt, f"! ({DNSMASQ_RUNNING})"), "dnsmasq still runs"
        assert boottest.failed_units(virt) == []
    finally:
        set_enabled(True)
    virt.ssh("systemctl restart hostapd.service")
    assert virt.ssh("systemctl is-active hostapd.service", check=False).stdout.decode().strip() == "active"
    assert _until_in_guest(virt, DNSMASQ_RUNNING), "dnsmasq did not come back"


def test_virt_dnsmasq_reads_the_lan_resolvers_as_nobody(virt):
    """solargw-net (root, umask 0007) writes the LAN's resolvers to /run/solargw-dns/servers; dnsmasq,
    running as nobody, reads them at start and again on SIGHUP (how new resolvers reach it, without
    a restart)."""
    modes = virt.ssh("stat -c '%a %U' /run/solargw-dns /run/solargw-dns/servers").stdout.decode().split()
    assert modes == ["755", "root", "644", "root"], modes
    servers = [line.split("=", 1)[1] for line in virt.ssh("cat /run/solargw-dns/servers").stdout.decode().splitlines()
               if line.startswith("server=")]
    assert servers, "no LAN resolver: QEMU's (DHCP on eth0) should be there"
    dnsmasq = ("for pid in $(cat /sys/fs/cgroup/system.slice/solargw-net.service/cgroup.procs); do "
               "[ \"$(cat /proc/$pid/comm 2>/dev/null)\" = dnsmasq ] && echo $pid $(stat -c %U /proc/$pid); done; true")
    pid = virt.ssh(dnsmasq).stdout.decode().split()
    assert len(pid) == 2 and pid[1] == "nobody", pid
    used = f"using nameserver {servers[0]}#53"
    journal = "journalctl -b -o cat -u solargw-net"
    before = virt.ssh(journal).stdout.decode().count(used)
    virt.ssh(f"kill -HUP {pid[0]}")
    assert _until_in_guest(virt, f"[ $({journal} | grep -cF '{used}') -gt {before} ]"), "dnsmasq did not read it again"
    log = virt.ssh(journal).stdout.decode()
    assert "cannot read /run/solargw-dns" not in log, log[-3000:]
    assert virt.ssh(dnsmasq).stdout.decode().split() == pid  # the same dnsmasq


# -- the upstream Wi-Fi: AP + station on one radio (image/guest_upstream_wifi.py) -------------

@pytest.fixture(scope="module")
def upstream(virt):
    """hwsim radios with one channel each: the appliance's, a home router's (namespace "home"),
    an inverter's (namespace "inverter") on the appliance's access point. The phases' figures go
    to build/boottest-virt.json under "upstream_wifi"."""
    figures: dict = {}
    virt.figures["upstream_wifi"] = figures
    setup = boottest.run_upstream_phase(virt, "setup")
    figures["combinations"] = setup.get("combinations")
    yield setup, figures
    cleanup = boottest.run_upstream_phase(virt, "cleanup")
    figures["station_removed_when_off"] = cleanup.get("station_removed")
    save_figures("virt", virt.figures)


def test_virt_upstream_wifi_radio_has_one_channel_and_the_inverter_joins(upstream):
    setup, _ = upstream
    assert "error" not in setup, setup
    assert "#channels <= 1" in setup["combinations"], setup["combinations"]
    assert setup["access_point_freq"] == 2437, setup  # [access_point] channel 6 before any upstream
    assert setup["inverter_associated"] and setup["inverter_ip"].startswith("10.42.0."), setup


def test_virt_upstream_wifi_joins_the_home_network(virt, upstream):
    """The station gets a home lease, DNS and a default route; the access point moved to the home
    network's channel 1 and the inverter with it; the web UI and mDNS answer the home side; the
    inverters' subnet and the home network cannot reach each other through the appliance."""
    _, figures = upstream
    result = boottest.run_upstream_phase(virt, "join")
    figures["time_to_join_s"] = result.get("join_s")
    assert "error" not in result, result
    assert result["station_ip"] and result["station_ip"].startswith("192.168.77."), result
    assert result["station_freq"] == result["access_point_freq"] == 2412, result
    assert result["upstream_status"]["state"] == "connected", result["upstream_status"]
    assert result["upstream_status"]["channel"] == result["upstream_status"]["access_point_channel"] == 1
    assert result["default_route"].startswith("default via 192.168.77.1"), result
    assert result["dns_answer"] == "192.168.77.1", result  # a name only the home router's DNS knows
    assert result["dnsmasq_reread_servers"] and not result["dnsmasq_restarted_for_config"], result
    assert result["inverter_after_move"] == "2412", result
    assert result["inverter_posted"], result
    assert result["home_web_status"] == 200 and result["home_web_has_login"], result
    assert result["home_mdns"] == result["station_ip"], result
    assert result["appliance_reaches_inverter"] and result["appliance_reaches_home"], result  # controls
    assert not result["home_reaches_inverter"] and not result["inverter_reaches_home"], result
    data = requests.get(f"http://127.0.0.1:{virt.ports[80]}/data.json", timeout=30).text
    assert result["serial"] in data


def test_virt_upstream_wifi_follows_the_home_network_s_channel_change(virt, upstream):
    _, figures = upstream
    result = boottest.run_upstream_phase(virt, "channel")
    figures["time_to_follow_channel_change_s"] = result.get("follow_s")
    figures["inverter_on_new_channel_after_s"] = result.get("inverter_follow_s")
    assert "error" not in result, result
    assert result["before"] == {"station": 2412, "access_point": 2412}, result
    assert result["home_freq"] == 2462, result
    assert result["follow_s"] is not None and result["follow_s"] <= 60, result
    assert result["after"] == {"station": 2462, "access_point": 2462}, result
    assert result["inverter_freq"] == "2462" and result["inverter_follow_s"] is not None, result
    assert result["inverter_posted"], result
    assert result["upstream_status"]["channel_moves"] >= 2, result["upstream_status"]


def _status_page(virt) -> str:
    """The status page as the owner sees it, logged in."""
    session = requests.Session()
    base = f"http://127.0.0.1:{virt.ports[80]}"
    login = session.get(f"{base}/login", timeout=30)
    token = re.search(r'name="csrf_token" value="([^"]+)"', login.text).group(1)
    session.post(f"{base}/login", data={"csrf_token": token, "password": boottest.TEST_ADMIN_PASSWORD},
                 timeout=30)
    page = session.get(f"{base}/status", timeout=30)
    assert page.status_code == 200, page.status_code
    return page.text


def test_virt_upstream_wifi_wrong_passphrase_is_shown_not_a_restart_loop(virt, upstream):
    _, figures = upstream
    result = boottest.run_upstream_phase(virt, "wrong")
    figures["wrong_passphrase_shown_after_s"] = result.get("shown_s")
    assert "error" not in result, result
    assert "wrong passphrase" in result["upstream_status"]["problem"], result
    assert result["still_shown"] and result["service_untouched"], result
    assert result["hostapd"] == "active" and result["inverter_state"] == "COMPLETED", result
    assert result["inverter_posted"], result
    assert "wrong passphrase: the home network refused the key" in _status_page(virt)


def test_virt_upstream_wifi_home_network_absent_at_start(virt, upstream):
    """Home router gone, the appliance's services started again as at boot: the access point
    serves the inverters, the station keeps looking and says so; the router comes back on
    channel 11: the station joins and the access point follows."""
    _, figures = upstream
    result = boottest.run_upstream_phase(virt, "absent")
    figures["inverter_back_after_restart_s"] = result.get("inverter_back_s")
    figures["time_to_rejoin_s"] = result.get("rejoin_s")
    assert "error" not in result, result
    assert result["hostapd"] == "active" and result["access_point_freq"] == 2437, result
    assert result["inverter_back_s"] is not None and result["inverter_posted"], result
    assert result["not_found"] and result["still_looking"]["state"] == "home network not found", result
    assert result["failed_units"] == [] and result["service_untouched"], result
    assert result["rejoin_s"] is not None, result
    assert result["upstream_status"]["state"] == "connected", result


def test_virt_wifi_firmware_for_every_model(virt):
    # Pi 3 B and Zero 2 W: BCM43430; Pi 3 B+/3 A+/4/400/CM4: BCM43455; each board has its NVRAM file.
    # test -s follows the symbolic links Debian ships for some of them: the target must be there.
    names = ("brcmfmac43430-sdio.bin", "brcmfmac43430-sdio.raspberrypi,3-model-b.txt",
             "brcmfmac43430-sdio.raspberrypi,model-zero-2-w.txt", "brcmfmac43455-sdio.bin",
             "brcmfmac43455-sdio.raspberrypi,3-model-b-plus.txt", "brcmfmac43455-sdio.raspberrypi,4-model-b.txt")
    script = "; ".join(f"test -s '/usr/lib/firmware/brcm/{name}' || echo '{name}'" for name in names)
    missing = virt.ssh(script).stdout.decode().split()
    assert missing == [], f"Wi-Fi firmware missing: {missing}"


# -- the SD card's write budget: what the system itself writes (after the tests above, so the
# Wi-Fi test's hostapd has run and every service has had its chance to write) ---------------

def test_virt_root_mount_spares_the_card(virt):
    options = virt.ssh("findmnt -n -o OPTIONS /").stdout.decode().strip().split(",")
    assert "noatime" in options and "commit=600" in options, options
    assert virt.ssh("findmnt -n -o FSTYPE /tmp").stdout.decode().strip() == "tmpfs"


def test_virt_first_boot_keeps_the_playbooks_unit_choices(virt):
    """The card's first boot is not systemd's "first boot", whose preset-all would enable every
    unit the playbook left disabled: apt's timers stay off (no daily list downloads to the card),
    hostapd starts only when its Wi-Fi device appears."""
    states = virt.ssh("systemctl is-enabled apt-daily.timer apt-daily-upgrade.timer", check=False)
    assert states.stdout.decode().split() == ["disabled", "disabled"]
    wanted = virt.ssh("ls /etc/systemd/system/multi-user.target.wants/").stdout.decode().split()
    assert "hostapd.service" not in wanted and "solargw-web.service" in wanted, wanted
    first_boot = virt.ssh("journalctl -b -o cat | grep -c 'Detected first boot'", check=False)
    assert first_boot.stdout.decode().strip() == "0"


def test_virt_logs_stay_in_ram(virt):
    """The journal is in /run, no syslog daemon is installed, and no log under /var/log grew
    since boot (mosquitto's own log file included: its log goes to the journal). Login
    accounting (wtmp: a record per boot, shutdown and login) is not a log that grows by itself."""
    journal = virt.ssh("journalctl --header | sed -n 's/^ *File path: //p'").stdout.decode().split()
    assert journal and all(path.startswith("/run/log/journal/") for path in journal), journal
    installed = virt.ssh("dpkg-query -W -f '${db:Status-Abbrev} ${Package}\\n'").stdout.decode()
    syslogs = {"rsyslog", "syslog-ng", "busybox-syslogd", "inetutils-syslogd", "logrotate"}
    assert {line.split()[-1] for line in installed.splitlines() if line.startswith("ii")} & syslogs == set()
    grown = virt.ssh("find /var/log -type f -size +0 -newermt @$(awk '/^btime/{print $2}' /proc/stat) "
                     "! -name wtmp ! -name btmp ! -name lastlog")
    assert grown.stdout.decode().split() == []


# journald's "Suppressed N messages from <unit>" (SD_MESSAGE_JOURNAL_DROPPED).
JOURNAL_DROPPED = "MESSAGE_ID=a596d6fe7bfa4994828e72309e95d61e"


def test_virt_journal_rate_limits_a_flooding_service(virt):
    """10,000 lines at once from one service: journald keeps its burst (1000 per 30 s, doubled
    for the free space it has) and, at the service's first line after the interval, says how many
    it dropped. journald's settings are the appliance's, not Debian's syslog forwarding."""
    config = virt.ssh("systemd-analyze cat-config systemd/journald.conf").stdout.decode()
    assert re.findall(r"^ForwardToSyslog=(\w+)", config, re.MULTILINE)[-1] == "no", config
    virt.ssh("systemd-run --unit=solargw-flood-test --wait --quiet sh -c "
             "'seq 10000 | sed s/^/flood-line-/; sleep 35; echo after-the-interval'", timeout=300)
    kept = virt.ssh("journalctl -b -o cat -u solargw-flood-test | grep -c flood-line-", check=False)
    assert 500 < int(kept.stdout.decode()) < 3000, kept.stdout
    dropped = virt.ssh(f"journalctl -b -o cat {JOURNAL_DROPPED}").stdout.decode()
    assert re.search(r"Suppressed \d+ messages from solargw-flood-test\.service", dropped), dropped


def test_virt_mosquitto_keeps_nothing_on_the_card(virt):
    """Debian's mosquitto saves its whole database at every stop and every 30 minutes;
    the appliance's runs with persistence off."""
    virt.ssh("systemctl restart mosquitto.service")
    assert virt.ssh("ls -A /var/lib/mosquitto").stdout.decode().split() == []
    assert virt.ssh("systemctl is-active mosquitto.service", check=False).stdout.decode().strip() == "active"
    log = virt.ssh("journalctl -b -o cat -u mosquitto.service").stdout.decode()
    assert re.search(r"mosquitto version \S+ running", log), log[-2000:]


def test_virt_run_dir_is_shared_by_every_service(virt):
    """/run/solargw (tmpfs) is group solargw, set-group-ID, and each service can write to it from
    inside its own sandbox, as its own user, whatever order they started in."""
    assert virt.ssh("stat -c '%U %G %a' /run/solargw").stdout.decode().strip() == "root solargw 2770"
    for unit in ("solargw-web", "solargw-zigbee", "solargw-net"):
        pid = virt.ssh(f"systemctl show -p MainPID --value {unit}.service").stdout.decode().strip()
        user = virt.ssh(f"stat -c %U /proc/{pid}").stdout.decode().strip()
        enter = f"nsenter -t {pid} -m -S $(id -u {user}) -G $(id -g {user}) --"
        probe = f"/run/solargw/.probe-{unit}"
        virt.ssh(f"{enter} sh -c 'echo ok > {probe}'")
        assert virt.ssh(f"stat -c '%G %s' {probe} && rm {probe}").stdout.decode().split() == ["solargw", "3"]
        if unit == "solargw-zigbee":
            # The same way in, the settings directory user solargw owns but the Zigbee service may
            # not write (not among its ReadWritePaths) is refused: the probes went through the sandbox.
            refused = virt.ssh(f"{enter} sh -c 'echo no > /etc/solargw/.probe'", check=False)
            assert refused.returncode != 0 and b"Read-only file system" in refused.stderr, refused
