#!/usr/bin/env python3
"""Runs inside the booted image (sent over SSH by image/boottest.py), as root, one phase per call:
the upstream Wi-Fi on the access point's own radio, against a home router.

Three ``mac80211_hwsim`` radios with ``channels=1`` (every interface of a radio on one channel,
the Pi's ``#channels <= 1``): the first stays with the appliance (hostapd starts by itself when
wlan0 appears; solargw-net adds the station wlan1 beside it once [upstream_wifi] is set); the
second is the home router in network namespace "home" (hostapd + dnsmasq: DHCP, DNS, a name only
it knows); the third is an inverter in namespace "inverter" (wpa_supplicant, udhcpc, the NEP
simulator). Settings change the way the web UI changes them (``settings.save``).

Phases (each prints ``RESULT {json}`` last; state between them in /run/boottest-upstream):
  setup    radios, namespaces, home router on channel 1, inverter on the access point
  join     [upstream_wifi] on: lease, channel, DNS, route, web UI and mDNS from home, isolation,
           the inverter after the move posts a report
  channel  the home router announces channel 11: the appliance follows, so does the inverter
  wrong    a wrong home passphrase: said in the status, no restart, the inverters still served
  absent   home router gone, services restarted (as at boot): the access point serves, the
           station keeps looking; the router comes back: joined again
  cleanup  [upstream_wifi] off, namespaces and daemons gone
Needs AP_SSID and AP_PASSPHRASE (the appliance's access point) in the environment.
"""
from __future__ import annotations

import json
import os
import re
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

RUN = Path("/run/boottest-upstream")
STATE = RUN / "state.json"
HOME, INVERTER = "home", "inverter"
HOME_SSID, HOME_PASSPHRASE = "solargw-home", "home-network-key"
HOME_IP, HOME_NAME = "192.168.77.1", "home-router.lan"
STATION = "wlan1"  # [upstream_wifi] interface's default
VENV_PYTHON = "/opt/solargw/venv/bin/python"
SOLARGW = "/opt/solargw/venv/bin/solargw"


def sh(command: str, check: bool = True, timeout: float = 60) -> str:
    done = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise RuntimeError(f"{command!r} failed ({done.returncode}): {(done.stderr or done.stdout).strip()[-600:]}")
    return done.stdout


def wait_for(predicate, seconds: float, step: float = 0.5):
    """The predicate's first true value, or None after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            value = predicate()
        except Exception:  # noqa: BLE001 - not there yet
            value = None
        if value:
            return value
        if time.monotonic() >= deadline:
            return None
        time.sleep(step)


def load_state() -> dict:
    return json.loads(STATE.read_text()) if STATE.exists() else {}


def save_state(state: dict) -> None:
    STATE.write_text(json.dumps(state))


# -- what the kernel and the daemons say ---------------------------------------------------------
def freq(interface: str, namespace: str | None = None) -> int | None:
    """The interface's operating frequency from ``iw dev X info`` (None: no channel)."""
    prefix = f"ip netns exec {namespace} " if namespace else ""
    match = re.search(r"channel \d+ \((\d+) MHz\)", sh(f"{prefix}iw dev {interface} info", check=False))
    return int(match.group(1)) if match else None


def ipv4(interface: str, namespace: str | None = None) -> str | None:
    prefix = f"-n {namespace} " if namespace else ""
    match = re.search(r"inet (\d+\.\d+\.\d+\.\d+)/", sh(f"ip {prefix}-4 -o addr show dev {interface}", check=False))
    return match.group(1) if match else None


def supplicant_status(ctrl_dir: str, namespace: str | None = None) -> dict[str, str]:
    prefix = f"ip netns exec {namespace} " if namespace else ""
    out = sh(f"{prefix}wpa_cli -p {ctrl_dir} status", check=False)
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def inverter_status() -> dict[str, str]:
    return supplicant_status(str(RUN / "inverter-ctrl"), INVERTER)


def net_status() -> dict:
    """The ``net`` status solargw-net wrote to the store: what the status page shows."""
    code = ("import json; from appliance import settings; from appliance.store import Store; "
            "print(json.dumps(Store.from_settings(settings.load()).status().get('net', [0, {}])[1]))")
    return json.loads(sh(f"{VENV_PYTHON} -c \"{code}\""))


def upstream_status() -> dict:
    return net_status().get("upstream_wifi", {})


def set_upstream(enabled: bool, passphrase: str = HOME_PASSPHRASE) -> None:
    """[upstream_wifi] saved the way the web UI saves it (solargw-net follows the file)."""
    code = ("from appliance import settings as s; x = s.load(); u = x.upstream_wifi; "
            f"u.enabled = {enabled}; u.ssid = {HOME_SSID!r}; u.passphrase = {passphrase!r}; s.save(x)")
    sh(f"runuser -u solargw -- {VENV_PYTHON} -c \"{code}\"")


def unit(name: str) -> dict[str, str]:
    out = sh(f"systemctl show -p ActiveState -p MainPID -p NRestarts {name}", check=False)
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def journal(lines: int = 60) -> str:
    return sh(f"journalctl -b --no-pager -o cat -n {lines} -u solargw-net", check=False)


# -- the home router and the inverter ------------------------------------------------------------
def start_home_router(channel: int) -> None:
    conf = RUN / "home-hostapd.conf"
    conf.write_text(
        f"interface=wlan1\ndriver=nl80211\nctrl_interface={RUN}/home-ctrl\nssid={HOME_SSID}\n"
        f"hw_mode=g\nchannel={channel}\nieee80211n=1\nwmm_enabled=1\ncountry_code=GB\n"
        f"wpa=2\nwpa_key_mgmt=WPA-PSK\nrsn_pairwise=CCMP\nwpa_passphrase={HOME_PASSPHRASE}\n")
    sh(f"ip netns exec {HOME} hostapd -B -P {RUN}/home-hostapd.pid -f {RUN}/home-hostapd.log {conf}")


def stop_pidfile(pid_file: Path) -> None:
    try:
        pid = int(pid_file.read_text())
        os.kill(pid, 15)
        wait_for(lambda: not Path(f"/proc/{pid}").exists(), 10)
    except (OSError, ValueError):
        pass


def stop_leftovers() -> None:
    """Stop the daemons an earlier run of this script started (their command lines name RUN)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if str(RUN).encode() in (proc / "cmdline").read_bytes():
                os.kill(int(proc.name), 15)
        except OSError:
            pass
    time.sleep(1)
    for leftover in RUN.glob("*-ctrl"):
        for socket_file in leftover.iterdir():
            socket_file.unlink(missing_ok=True)


def start_inverter_supplicant() -> None:
    conf = RUN / "inverter.conf"
    conf.write_text(f"ctrl_interface={RUN}/inverter-ctrl\nnetwork={{\n\tssid=\"{os.environ['AP_SSID']}\"\n"
                    f"\tpsk=\"{os.environ['AP_PASSPHRASE']}\"\n\tkey_mgmt=WPA-PSK\n}}\n")
    sh(f"ip netns exec {INVERTER} wpa_supplicant -B -i wlan2 -c {conf} -P {RUN}/inverter.pid "
       f"-f {RUN}/inverter.log")


# udhcpc's own script hands DNS servers to resolvconf, which is resolvectl here (systemd-resolved
# of the appliance, outside the namespace): this one writes the namespace's resolv.conf itself.
UDHCPC_SCRIPT = """#!/bin/sh
case "$1" in
bound|renew)
    ip -4 addr flush dev "$interface"
    ip -4 addr add "$ip/$mask" dev "$interface"
    [ -z "$router" ] || ip -4 route replace default via "${router%% *}" dev "$interface"
    : > /etc/resolv.conf
    for server in $dns; do echo "nameserver $server" >> /etc/resolv.conf; done ;;
deconfig)
    ip link set "$interface" up
    ip -4 addr flush dev "$interface" ;;
esac
"""


def inverter_lease() -> str | None:
    script = Path("/var/tmp/boottest-udhcpc.script")  # /run is mounted noexec
    script.write_text(UDHCPC_SCRIPT)
    script.chmod(0o755)
    sh(f"ip netns exec {INVERTER} udhcpc -i wlan2 -n -q -t 10 -T 3 -s {script}", check=False, timeout=60)
    return ipv4("wlan2", INVERTER)


def inverter_posts(seed: int, tries: int = 3) -> tuple[bool, str]:
    """A simulated NEP inverter in the inverter's namespace posts to www.nepviewer.net (the
    appliance's DNS answers it); True when /data.json lists it. Like a real inverter it tries
    again when a post fails (a lookup failed once in the join phase, when solargw-net still
    restarted dnsmasq for the home network's resolvers; now dnsmasq reads them on SIGHUP)."""
    for attempt in range(1, tries + 1):
        done = subprocess.run(f"ip netns exec {INVERTER} {SOLARGW} simulate nep --url http://www.nepviewer.net/ "
                              f"--inverters 1 --rounds 1 --seed {seed} --start 12:00", shell=True,
                              capture_output=True, text=True, timeout=120)
        out = done.stdout + done.stderr
        match = re.search(r"^inverter ([0-9a-f]{8}) ", out, re.MULTILINE)
        serial = match.group(1) if match and done.returncode == 0 else ""
        if serial:
            break
        print(f"post {attempt} of {tries} failed: {out[-300:]}", file=sys.stderr, flush=True)
        if attempt < tries:
            time.sleep(5)

    def recorded():
        with urllib.request.urlopen("http://127.0.0.1/data.json", timeout=10) as reply:
            return serial and serial in reply.read().decode()

    return bool(wait_for(recorded, 30)), serial or out[-300:]


def http_from(namespace: str, url: str) -> tuple[int, str]:
    code = ("import sys, urllib.request; r = urllib.request.urlopen(sys.argv[1], timeout=15); "
            "print(r.status); print(r.read().decode(errors='replace'))")
    out = sh(f"ip netns exec {namespace} python3 -c \"{code}\" {url}", check=False, timeout=60)
    status, _, body = out.partition("\n")
    return (int(status) if status.strip().isdigit() else 0), body


def mdns_query(namespace: str, source: str, name: str) -> str | None:
    """Ask ``name``'s A record by multicast DNS from ``namespace`` (a one-shot "legacy unicast"
    query from an ephemeral port: the responder answers to that port, RFC 6762 section 6.7)."""
    code = f"""
import socket, struct, sys
name, source = {name!r}, {source!r}
query = struct.pack(">6H", 0x1234, 0, 1, 0, 0, 0)
query += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\\0" + struct.pack(">2H", 1, 1)
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(source))
sock.bind((source, 0))
sock.settimeout(3)
for attempt in range(3):
    sock.sendto(query, ("224.0.0.251", 5353))
    try:
        data = sock.recv(1500)
    except TimeoutError:
        continue
    def skip(offset):
        while data[offset]:
            if data[offset] >= 0xC0:
                return offset + 2
            offset += data[offset] + 1
        return offset + 1
    questions, answers = struct.unpack(">2H", data[4:8])
    offset = 12
    for _ in range(questions):
        offset = skip(offset) + 4
    for _ in range(answers):
        offset = skip(offset)
        kind, _cls, _ttl, length = struct.unpack(">HHIH", data[offset:offset + 10])
        offset += 10
        if kind == 1 and length == 4:
            print(socket.inet_ntoa(data[offset:offset + 4]))
            sys.exit(0)
        offset += length
"""
    (RUN / "mdns.py").write_text(code)
    out = sh(f"ip netns exec {namespace} python3 {RUN}/mdns.py", check=False, timeout=30).strip()
    return out or None


def reaches(namespace: str | None, address: str) -> bool:
    """Whether a TCP connection attempt from ``namespace`` gets an answer from ``address`` (its
    kernel's refusal counts: the packet got there); a timeout or an ICMP rejection does not."""
    code = ("import socket, sys\n"
            "try:\n socket.create_connection((sys.argv[1], 9), timeout=3); print('answered')\n"
            "except ConnectionRefusedError:\n print('answered')\n"
            "except OSError as exc:\n print('no answer', exc)\n")
    (RUN / "reach.py").write_text(code)
    prefix = f"ip netns exec {namespace} " if namespace else ""
    return sh(f"{prefix}python3 {RUN}/reach.py {address}", check=False).startswith("answered")


# -- phases --------------------------------------------------------------------------------------
def phase_setup(result: dict) -> None:
    RUN.mkdir(parents=True, exist_ok=True)
    set_upstream(False)  # hwsim's own second radio will be called wlan1 for a moment
    wait_for(lambda: not Path(f"/sys/class/net/{STATION}").exists(), 30)
    stop_leftovers()
    for name in (HOME, INVERTER):
        sh(f"ip netns del {name}", check=False)
    sh("modprobe -r mac80211_hwsim", check=False)
    sh("modprobe mac80211_hwsim radios=3 channels=1")
    if not wait_for(lambda: all(Path(f"/sys/class/net/wlan{i}").exists() for i in range(3)), 30):
        raise RuntimeError(f"no wlan0-2: {sorted(os.listdir('/sys/class/net'))}")
    phys = [Path(f"/sys/class/net/wlan{i}/phy80211/name").read_text().strip() for i in range(3)]
    info = sh(f"iw phy {phys[0]} info")
    combos = re.findall(r"valid interface combinations:(.*?)(?:\n\t\S|\Z)", info, re.S)
    result["combinations"] = " ".join(combos[0].split()) if combos else ""
    for name, phy in ((HOME, phys[1]), (INVERTER, phys[2])):
        sh(f"ip netns add {name}")
        sh(f"iw phy {phy} set netns name {name}")
        sh(f"ip -n {name} link set lo up")
    Path(f"/etc/netns/{INVERTER}").mkdir(parents=True, exist_ok=True)
    Path(f"/etc/netns/{INVERTER}/resolv.conf").write_text("")
    # The home router: channel 1, DHCP and DNS (a name only it answers).
    sh(f"ip -n {HOME} addr add {HOME_IP}/24 dev wlan1")
    sh(f"ip -n {HOME} link set wlan1 up")
    start_home_router(channel=1)
    sh(f"ip netns exec {HOME} dnsmasq --conf-file=/dev/null --interface=wlan1 --bind-interfaces "
       f"--except-interface=lo --no-resolv --no-hosts --dhcp-range=192.168.77.50,192.168.77.150,12h "
       f"--dhcp-option=option:router,{HOME_IP} --dhcp-option=option:dns-server,{HOME_IP} "
       f"--address=/{HOME_NAME}/{HOME_IP} --dhcp-leasefile={RUN}/home.leases --pid-file={RUN}/home-dnsmasq.pid")
    # The appliance's access point comes back with wlan0; then the inverter joins it.
    if not wait_for(lambda: sh("systemctl is-active hostapd", check=False).strip() == "active", 120):
        raise RuntimeError("hostapd did not start on the new wlan0")
    if not wait_for(lambda: ipv4("wlan0"), 60):
        raise RuntimeError("solargw-net gave wlan0 no address")
    result["access_point_freq"] = wait_for(lambda: freq("wlan0"), 30)
    start_inverter_supplicant()
    joined = wait_for(lambda: inverter_status().get("wpa_state") == "COMPLETED", 90)
    result["inverter_associated"] = bool(joined)
    result["inverter_ip"] = inverter_lease() if joined else None
    save_state({"inverter_ip": result["inverter_ip"]})


def phase_join(result: dict) -> None:
    state = load_state()
    started, since = time.monotonic(), int(time.time()) - 1
    set_upstream(True)
    station_ip = wait_for(lambda: (ipv4(STATION) or "").startswith("192.168.77.") and ipv4(STATION), 180)
    result["join_s"] = round(time.monotonic() - started, 1) if station_ip else None
    result["station_ip"] = station_ip
    result["station_freq"] = freq(STATION)
    result["access_point_freq"] = freq("wlan0")
    result["upstream_status"] = upstream_status()
    result["default_route"] = sh(f"ip -4 route show default dev {STATION}", check=False).strip()
    result["dns_answer"] = wait_for(
        lambda: sh(f"getent ahostsv4 {HOME_NAME}", check=False).split()[0], 20) or ""
    result["resolvectl"] = sh(f"resolvectl dns {STATION}", check=False).strip()
    # The home router's resolver reaches dnsmasq by SIGHUP, not by a restart (solargw-net reads the
    # resolvers every 5 s: the station may have its lease before that).
    def net_log() -> str:
        return sh(f"journalctl -o cat -u solargw-net --since @{since}", check=False)

    result["dnsmasq_reread_servers"] = bool(wait_for(lambda: "dnsmasq reads its servers again" in net_log(), 30))
    result["dnsmasq_restarted_for_config"] = "restarting dnsmasq: configuration changed" in net_log()
    # The inverter went along with the move (CSA) or came back; it still posts.
    result["inverter_after_move"] = wait_for(
        lambda: (s := inverter_status()).get("wpa_state") == "COMPLETED" and s.get("freq"), 90)
    result["inverter_posted"], result["serial"] = inverter_posts(seed=4243)
    # The home side: the web UI over the station's link, mDNS, and no way into the inverters' net.
    if station_ip:
        status, body = http_from(HOME, f"http://{station_ip}/login")
        result["home_web_status"], result["home_web_has_login"] = status, "password" in body.lower()
        # avahi answers on the station once it has seen its address and probed the name there: that
        # can take a while after the join (one query of 9 s came back empty once in CI).
        asked = time.monotonic()
        result["home_mdns"] = wait_for(lambda: mdns_query(HOME, HOME_IP, "solargw.local"), 30)
        result["home_mdns_s"] = round(time.monotonic() - asked, 1)
        inverter_ip = state.get("inverter_ip")
        if inverter_ip:
            sh(f"ip -n {HOME} route replace 10.42.0.0/24 via {station_ip}")
            result["appliance_reaches_inverter"] = reaches(None, inverter_ip)
            result["home_reaches_inverter"] = reaches(HOME, inverter_ip)
            result["appliance_reaches_home"] = reaches(None, HOME_IP)
            result["inverter_reaches_home"] = reaches(INVERTER, HOME_IP)
    save_state({**state, "station_ip": station_ip})


def phase_channel(result: dict) -> None:
    result["before"] = {"station": freq(STATION), "access_point": freq("wlan0")}
    started = time.monotonic()
    sh(f"ip netns exec {HOME} hostapd_cli -p {RUN}/home-ctrl -i wlan1 chan_switch 5 2462 ht")
    result["home_freq"] = wait_for(lambda: freq("wlan1", HOME) == 2462 and 2462, 30)

    def followed():
        return freq(STATION) == 2462 and freq("wlan0") == 2462 and (ipv4(STATION) or "").startswith("192.168.77.")

    result["follow_s"] = round(time.monotonic() - started, 1) if wait_for(followed, 120) else None
    result["after"] = {"station": freq(STATION), "access_point": freq("wlan0")}
    inverter = wait_for(lambda: (s := inverter_status()).get("wpa_state") == "COMPLETED"
                        and s.get("freq") == "2462" and s, 120)
    result["inverter_follow_s"] = round(time.monotonic() - started, 1) if inverter else None
    result["inverter_freq"] = (inverter or inverter_status()).get("freq")
    result["inverter_posted"], result["serial"] = inverter_posts(seed=4244)
    result["upstream_status"] = upstream_status()


def phase_wrong(result: dict) -> None:
    before = unit("solargw-net")
    started = time.monotonic()
    set_upstream(True, passphrase="not-the-home-key")
    problem = wait_for(lambda: "wrong passphrase" in upstream_status().get("problem", "")
                       and upstream_status(), 120)
    result["shown_s"] = round(time.monotonic() - started, 1) if problem else None
    result["upstream_status"] = problem or upstream_status()
    time.sleep(15)  # it keeps retrying: still said, nothing restarted
    result["still_shown"] = "wrong passphrase" in upstream_status().get("problem", "")
    after = unit("solargw-net")
    result["service_untouched"] = (before.get("MainPID") == after.get("MainPID")
                                   and after.get("NRestarts") == before.get("NRestarts") == "0"
                                   and after.get("ActiveState") == "active")
    result["station_ip"] = ipv4(STATION)
    result["hostapd"] = sh("systemctl is-active hostapd", check=False).strip()
    result["inverter_state"] = inverter_status().get("wpa_state")
    result["inverter_posted"], result["serial"] = inverter_posts(seed=4245)


def phase_absent(result: dict) -> None:
    set_upstream(True)  # the right key again, but the home router is gone:
    stop_pidfile(RUN / "home-hostapd.pid")
    time.sleep(35)  # the radio forgets the home network (cfg80211 drops a BSS unseen for 30 s)
    sh("systemctl restart solargw-net hostapd")  # the appliance starts as at boot
    started = time.monotonic()
    result["hostapd"] = wait_for(lambda: sh("systemctl is-active hostapd", check=False).strip() == "active"
                                 and "active", 60)
    result["access_point_freq"] = wait_for(lambda: freq("wlan0"), 30)
    result["inverter_back_s"] = None
    if wait_for(lambda: inverter_status().get("wpa_state") == "COMPLETED", 120):
        result["inverter_back_s"] = round(time.monotonic() - started, 1)
    result["not_found"] = wait_for(lambda: upstream_status().get("state") == "home network not found"
                                   and upstream_status(), 90)
    result["inverter_posted"], result["serial"] = inverter_posts(seed=4246)
    before = unit("solargw-net")
    time.sleep(20)  # still looking, nothing failed
    result["still_looking"] = upstream_status()
    result["failed_units"] = sh("systemctl list-units --failed --plain --no-legend --no-pager", check=False).split()
    after = unit("solargw-net")
    result["service_untouched"] = (before.get("MainPID") == after.get("MainPID")
                                   and before.get("NRestarts") == after.get("NRestarts"))
    # The home router comes back (where it was last: channel 11).
    started = time.monotonic()
    start_home_router(channel=11)

    def joined():
        return freq(STATION) == 2462 and freq("wlan0") == 2462 and (ipv4(STATION) or "").startswith("192.168.77.")

    result["rejoin_s"] = round(time.monotonic() - started, 1) if wait_for(joined, 180) else None
    result["upstream_status"] = upstream_status()


def phase_cleanup(result: dict) -> None:
    set_upstream(False)
    result["station_removed"] = bool(wait_for(lambda: not Path(f"/sys/class/net/{STATION}").exists(), 30))
    stop_leftovers()
    for name in (HOME, INVERTER):
        sh(f"ip netns del {name}", check=False)


PHASES = {"setup": phase_setup, "join": phase_join, "channel": phase_channel, "wrong": phase_wrong,
          "absent": phase_absent, "cleanup": phase_cleanup}


def main() -> int:
    phase = sys.argv[1]
    result: dict = {"phase": phase}
    try:
        PHASES[phase](result)
    except Exception as exc:  # noqa: BLE001 - reported to the test, with the service's journal
        result["error"] = f"{type(exc).__name__}: {exc}"
    if result.get("error") or os.environ.get("JOURNAL"):
        result["journal"] = journal()
    print("RESULT " + json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
