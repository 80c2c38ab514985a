"""``solargw net run`` for real, in network namespaces: real dnsmasq, real nftables, real DHCP.

Topology (names unique per run):
    inverter ns  inv0 ---- ap0  appliance ns  lan0 ---- lan1  lan ns
                 (DHCP client)  10.42.0.1/24  192.168.77.2    192.168.77.1: fake resolver (53),
                                HTTP :80, :22, :8081, :5040     HTTP :8080
The appliance namespace forwards IP (a router would), so only the firewall keeps the inverter
off the LAN. This file is also a script run inside the namespaces (``upstream``, ``query``,
``fetch``): see the bottom.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from support.processes import stop
from support.waiting import wait_for

HERE = Path(__file__).resolve()
PYTHON = sys.executable
SOLARGW = str(Path(PYTHON).with_name("solargw"))
AP_IP, LAN_APPLIANCE_IP, LAN_PEER_IP = "10.42.0.1", "192.168.77.2", "192.168.77.1"
UPSTREAM_NAME, UPSTREAM_ANSWER = "lan-only.example", "192.0.2.77"

SETTINGS = """\
[data]
dir = "{data}"

[mqtt]
enabled = false

[access_point]
interface = "ap0"
address = "10.42.0.1/24"
dhcp_start = "{start}"
dhcp_end = "10.42.0.120"
"""


def _missing_tools() -> str:
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    for tool in ("ip", "nft", "dnsmasq", "busybox"):
        if not shutil.which(tool):
            return f"needs {tool} (make apt-deps)"
    return ""


pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(bool(_missing_tools()), reason=_missing_tools() or "ok"),
]


def sh(*argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=timeout)


class Topology:
    def __init__(self, tmp: Path) -> None:
        tag = uuid.uuid4().hex[:8]
        self.app, self.inv, self.lan = f"sgw-{tag}-app", f"sgw-{tag}-inv", f"sgw-{tag}-lan"
        self.tmp = tmp
        self.processes: list[subprocess.Popen] = []
        self.dns_dir: Path | None = None

    def build(self) -> None:
        for ns in (self.app, self.inv, self.lan):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", self.app, "link", "add", "ap0", "type", "veth", "peer", "name", "inv0", "netns", self.inv)
        sh("ip", "-n", self.app, "link", "add", "lan0", "type", "veth", "peer", "name", "lan1", "netns", self.lan)
        sh("ip", "-n", self.app, "addr", "add", f"{LAN_APPLIANCE_IP}/24", "dev", "lan0")
        sh("ip", "-n", self.lan, "addr", "add", f"{LAN_PEER_IP}/24", "dev", "lan1")
        for ns, dev in ((self.app, "lan0"), (self.inv, "inv0"), (self.lan, "lan1")):
            sh("ip", "-n", ns, "link", "set", dev, "up")
        sh("ip", "netns", "exec", self.app, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        # the LAN knows the way back to the access-point subnet (as a home router might)
        sh("ip", "-n", self.lan, "route", "add", "10.42.0.0/24", "via", LAN_APPLIANCE_IP)

    def spawn(self, ns: str, *argv: str, log: str | None = None, env: dict | None = None) -> subprocess.Popen:
        out = open(self.tmp / log, "ab") if log else subprocess.DEVNULL
        process = subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdout=out, stderr=out,
                                   env={**os.environ, **(env or {})})
        self.processes.append(process)
        return process

    def run_in(self, ns: str, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", ns, *argv, check=False, timeout=timeout)

    def query(self, name: str, rdtype: str = "A", server: str = AP_IP) -> dict:
        result = self.run_in(self.inv, PYTHON, str(HERE), "query", server, name, rdtype)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def fetch(self, ns: str, url: str) -> str:
        return self.run_in(ns, PYTHON, str(HERE), "fetch", url).stdout.strip()

    def status(self) -> dict | None:
        """The service's status, as the web UI reads it from the store."""
        from appliance.store import Store

        if not (self.data / "solargw.db").exists():
            return None
        store = Store(self.data)
        try:
            entry = store.status().get("net")
        finally:
            store.close()
        return entry[1] if entry else None

    def teardown(self) -> None:
        for process in reversed(self.processes):
            stop(process)
        # a dnsmasq orphaned by a failing test still holds the namespace's sockets
        pid_file = self.tmp / "run" / "dnsmasq.pid"
        if pid_file.exists():
            try:
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
            except (ValueError, ProcessLookupError):
                pass
        for ns in (self.app, self.inv, self.lan):
            sh("ip", "netns", "del", ns, check=False)
        if self.dns_dir is not None:
            shutil.rmtree(self.dns_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("net")
    topo = Topology(tmp)
    try:
        topo.build()
        for ns, addr, port in ((topo.app, "0.0.0.0", "80"), (topo.app, "0.0.0.0", "22"),
                               (topo.app, "0.0.0.0", "8081"), (topo.app, "0.0.0.0", "5040"),
                               (topo.lan, LAN_PEER_IP, "8080")):
            topo.spawn(ns, PYTHON, "-m", "http.server", "--bind", addr, "--directory", str(tmp), port)
        topo.spawn(topo.lan, PYTHON, str(HERE), "upstream", LAN_PEER_IP, str(tmp / "upstream.log"),
                   log="upstream.out")
        wait_for(lambda: (tmp / "upstream.log").exists(), 10, "the fake upstream resolver")

        # Control: before the firewall, routing does carry the inverter to the LAN's web server.
        sh("ip", "-n", topo.inv, "addr", "add", "10.42.0.9/24", "dev", "inv0")
        sh("ip", "-n", topo.app, "addr", "add", "10.42.0.1/24", "dev", "ap0")
        sh("ip", "-n", topo.app, "link", "set", "ap0", "up")
        sh("ip", "-n", topo.inv, "route", "add", "default", "via", AP_IP)
        wait_for(lambda: topo.fetch(topo.inv, f"http://{LAN_PEER_IP}:8080/") == "200", 15,
                 "the LAN web server through the appliance (control, no firewall yet)")
        sh("ip", "-n", topo.inv, "addr", "flush", "dev", "inv0")
        sh("ip", "-n", topo.app, "addr", "flush", "dev", "ap0")
        sh("ip", "-n", topo.app, "link", "set", "ap0", "down")  # the service must bring it up

        topo.settings = tmp / "solargw.toml"
        topo.data = tmp / "data"
        topo.good_settings = SETTINGS.format(data=topo.data, start="10.42.0.100")
        topo.settings.write_text(topo.good_settings)
        topo.resolv = tmp / "resolv.conf"
        topo.resolv.write_text(f"nameserver 127.0.0.53\nnameserver {LAN_PEER_IP}\n")
        # dnsmasq reads its servers file as nobody: a directory nobody can reach, as /run/solargw-dns
        topo.dns_dir = Path(tempfile.mkdtemp(prefix="solargw-dns-"))
        topo.dns_dir.chmod(0o755)
        topo.service = topo.spawn(
            topo.app, SOLARGW, "-v", "net", "run", "--settings", str(topo.settings),
            "--run-dir", str(tmp / "run"), "--dns-dir", str(topo.dns_dir), "--resolv-conf", str(topo.resolv),
            log="service.log",
        )
        wait_for(lambda: (topo.status() or {}).get("dnsmasq", {}).get("running"), 20,
                 "the service to report dnsmasq running")
        yield topo
    finally:
        log = tmp / "service.log"
        if log.exists():
            sys.stderr.write("---- solargw net run log ----\n" + log.read_text()[-6000:])
        topo.teardown()


def upstream_queries(net) -> list[str]:
    return (net.tmp / "upstream.log").read_text().split()


def test_inverter_gets_a_lease_in_the_range(net):
    lease_file = net.tmp / "lease.env"
    script = net.tmp / "udhcpc.sh"
    script.write_text('#!/bin/sh\ncase "$1" in bound|renew) env > "$LEASE_OUT";; esac\n')
    script.chmod(0o755)
    result = subprocess.run(
        ["ip", "netns", "exec", net.inv, "busybox", "udhcpc", "-i", "inv0", "-f", "-q", "-n",
         "-t", "5", "-T", "2", "-s", str(script)],
        capture_output=True, text=True, timeout=60, env={**os.environ, "LEASE_OUT": str(lease_file)},
    )
    assert lease_file.exists(), result.stdout + result.stderr
    lease = dict(line.split("=", 1) for line in lease_file.read_text().splitlines() if "=" in line)
    last = int(lease["ip"].rsplit(".", 1)[1])
    assert lease["ip"].startswith("10.42.0.") and 100 <= last <= 120, lease
    assert lease["router"].split()[0] == AP_IP and lease["dns"].split()[0] == AP_IP, lease
    assert lease["subnet"] == "255.255.255.0"

    sh("ip", "-n", net.inv, "addr", "add", f"{lease['ip']}/24", "dev", "inv0")
    sh("ip", "-n", net.inv, "route", "add", "default", "via", AP_IP)
    mac = sh("ip", "netns", "exec", net.inv, "cat", "/sys/class/net/inv0/address").stdout.strip()
    clients = wait_for(
        lambda: [c for c in (net.status() or {}).get("clients", []) if c["mac"] == mac], 15,
        "the lease in the service status",
    )
    assert clients[0]["ip"] == lease["ip"]
    assert clients[0]["associated"] is None  # no radio here: stations unknown, said so
    assert "no Wi-Fi radio" in net.status()["stations_note"] or "not a Wi-Fi" in net.status()["stations_note"]
    listed = json.loads(sh("ip", "netns", "exec", net.app, SOLARGW, "net", "clients",
                           "--settings", str(net.settings), "--run-dir", str(net.tmp / "run")).stdout)
    assert [c["ip"] for c in listed["clients"] if c["mac"] == mac] == [lease["ip"]]


def test_portal_names_answer_with_the_appliance(net):
    for name in ("www.nepviewer.net", "nepviewer.net", "api.nepviewer.net", "www.nepviewer.com",
                 "gw.enecsys.net"):
        answer = net.query(name)
        assert answer["rcode"] == "NOERROR" and answer["addresses"] == [AP_IP], (name, answer)
    for name in ("www.nepviewer.net", "gw.enecsys.net"):
        aaaa = net.query(name, "AAAA")
        assert aaaa["rcode"] == "NOERROR" and aaaa["addresses"] == [], (name, aaaa)
    leaked = [q for q in upstream_queries(net) if "nepviewer" in q or "gw.enecsys.net" in q]
    assert not leaked, "a portal or gateway-server query leaked upstream"
    # only the gateway's server is ours: the rest of enecsys.net is asked upstream as usual
    net.query("www.enecsys.net")
    assert "www.enecsys.net/A" in upstream_queries(net)


def test_other_names_go_to_the_lan_resolver(net):
    answer = net.query(UPSTREAM_NAME)
    assert answer["rcode"] == "NOERROR" and answer["addresses"] == [UPSTREAM_ANSWER], answer
    assert f"{UPSTREAM_NAME}/A" in upstream_queries(net)


def test_hard_coded_dns_server_is_redirected_to_the_appliance(net):
    answer = net.query("www.nepviewer.net", server="8.8.8.8")
    assert answer["rcode"] == "NOERROR" and answer["addresses"] == [AP_IP], answer


def test_firewall_isolates_the_access_point(net):
    assert net.fetch(net.inv, f"http://{AP_IP}/") == "200"
    # a hard-coded cloud address lands on the appliance's collector too
    assert net.fetch(net.inv, "http://198.51.100.7/") == "200"
    # nothing on the LAN (the control in the fixture showed routing would carry it)
    assert net.fetch(net.inv, f"http://{LAN_PEER_IP}:8080/") != "200"
    # nothing else on the appliance
    assert net.fetch(net.inv, f"http://{AP_IP}:8081/") != "200"
    assert net.fetch(net.inv, f"http://{AP_IP}:22/") != "200"
    assert net.fetch(net.inv, f"http://{AP_IP}:5040/") != "200"  # [gateway] is off
    # the LAN reaches the web UI, not SSH (disabled) nor other ports; and not the inverters' DNS
    assert net.fetch(net.lan, f"http://{LAN_APPLIANCE_IP}/") == "200"
    assert net.fetch(net.lan, f"http://{LAN_APPLIANCE_IP}:22/") != "200"
    assert net.fetch(net.lan, f"http://{LAN_APPLIANCE_IP}:8081/") != "200"
    result = net.run_in(net.lan, PYTHON, str(HERE), "query", LAN_APPLIANCE_IP, "www.nepviewer.net", "A")
    assert json.loads(result.stdout)["rcode"] != "NOERROR"


def test_without_upstream_other_names_fail_fast(net):
    """The LAN's resolvers gone, then back: dnsmasq follows both changes without a restart (a
    restart left the inverters without DNS and DHCP for a moment; the upstream Wi-Fi's joins change
    the resolvers)."""
    pid = net.status()["dnsmasq"]["pid"]
    net.resolv.write_text("nameserver 127.0.0.1\n")  # loopback only: nothing usable
    try:
        wait_for(lambda: (net.status() or {}).get("upstream_dns") == [], 20, "the upstream to go away")
        wait_for(lambda: net.query(UPSTREAM_NAME)["rcode"] == "REFUSED", 10, "REFUSED answers")
        answer = net.query("unknown-name.example")
        assert answer["rcode"] == "REFUSED" and answer["elapsed"] < 1.0, answer
        assert net.query("www.nepviewer.net")["addresses"] == [AP_IP]
    finally:
        net.resolv.write_text(f"nameserver {LAN_PEER_IP}\n")
    wait_for(lambda: (net.status() or {}).get("upstream_dns") == [LAN_PEER_IP], 20, "the upstream again")
    wait_for(lambda: net.query(UPSTREAM_NAME)["addresses"] == [UPSTREAM_ANSWER], 10, "answers from the LAN again")
    status = net.status()
    assert (status["dnsmasq"]["pid"], status["dnsmasq"]["running"]) == (pid, True), status["dnsmasq"]
    log = (net.tmp / "service.log").read_text()
    assert log.count("dnsmasq reads its servers again (SIGHUP): no restart") >= 2, log[-3000:]
    assert "restarting dnsmasq" not in log, log[-3000:]


@pytest.mark.parametrize("bad, error", [
    ('dhcp_start = "10.43.0.5"', "dhcp_start: 10.43.0.5 is outside the access point subnet 10.42.0.0/24"),
    ("this is not toml", "Expected '=' after a key"),
    (b'[access_point]\nssid = "caf\xe9"\n', "not UTF-8 text"),
])
def test_bad_setting_keeps_the_old_configuration(net, bad, error):
    pid = net.status()["dnsmasq"]["pid"]
    if isinstance(bad, bytes):
        net.settings.write_bytes(bad)
    else:
        net.settings.write_text(net.good_settings.replace('dhcp_start = "10.42.0.100"', bad) if "dhcp" in bad else bad)
    try:
        status = wait_for(lambda: error in (net.status() or {}).get("config_error", ""), 15,
                          f"the error {error!r} in the status")
        status = net.status()
        assert status["dnsmasq"]["pid"] == pid and status["dnsmasq"]["running"]
        assert status["dhcp_range"] == ["10.42.0.100", "10.42.0.120"]
        assert net.query("www.nepviewer.net")["addresses"] == [AP_IP]
        assert (net.tmp / "run" / "dnsmasq.conf").read_text().count("10.42.0.100") == 1
    finally:
        net.settings.write_text(net.good_settings + "\n")
    wait_for(lambda: (net.status() or {}).get("config_error") == "", 15, "the error to clear")
    assert (net.tmp / "service.log").read_text().count(error) == 1, "the error is logged once"


def test_settings_change_is_applied(net):
    net.settings.write_text(net.good_settings.replace('"10.42.0.120"', '"10.42.0.130"'))
    try:
        wait_for(lambda: (net.status() or {}).get("dhcp_range") == ["10.42.0.100", "10.42.0.130"], 15,
                 "the new DHCP range")
        assert "10.42.0.130" in (net.tmp / "run" / "dnsmasq.conf").read_text()
        wait_for(lambda: net.status()["dnsmasq"]["running"], 10, "dnsmasq running again")
        assert net.query("www.nepviewer.net")["addresses"] == [AP_IP]
    finally:
        net.settings.write_text(net.good_settings)
    wait_for(lambda: (net.status() or {}).get("dhcp_range") == ["10.42.0.100", "10.42.0.120"], 15,
             "the old DHCP range")
    net.service.send_signal(signal.SIGHUP)
    wait_for(lambda: "SIGHUP: reloading the settings" in (net.tmp / "service.log").read_text(), 10,
             "the SIGHUP reload")
    assert net.service.poll() is None


def test_lan_dns_mode_answers_the_lan_with_the_lan_address(net):
    net.settings.write_text(net.good_settings + "lan_dns_mode = true\n")
    try:
        wait_for(lambda: (net.status() or {}).get("lan_dns_mode") is True, 15, "LAN DNS mode")

        def lan_query(name: str) -> dict:
            result = net.run_in(net.lan, PYTHON, str(HERE), "query", LAN_APPLIANCE_IP, name, "A")
            return json.loads(result.stdout)

        answer = wait_for(lambda: (lambda a: a if a["rcode"] == "NOERROR" else None)(
            lan_query("www.nepviewer.net")), 10, "an answer on the LAN")
        assert answer["addresses"] == [LAN_APPLIANCE_IP]
        assert lan_query("gw.enecsys.net")["addresses"] == [LAN_APPLIANCE_IP]  # an Ethernet gateway's DNS
        assert net.query("gw.enecsys.net")["addresses"] == [AP_IP]
        assert lan_query(UPSTREAM_NAME)["addresses"] == [UPSTREAM_ANSWER]
        assert net.query("www.nepviewer.net")["addresses"] == [AP_IP]
        assert "lan0" in (net.tmp / "run" / "dnsmasq.conf").read_text()
    finally:
        net.settings.write_text(net.good_settings)
    wait_for(lambda: (net.status() or {}).get("lan_dns_mode") is False, 15, "LAN DNS mode off")
    result = net.run_in(net.lan, PYTHON, str(HERE), "query", LAN_APPLIANCE_IP, "www.nepviewer.net", "A")
    assert json.loads(result.stdout)["rcode"] != "NOERROR"


def test_gateway_listener_port_opens_on_both_sides_when_enabled(net):
    gateway_on = net.good_settings + '\n[gateway]\nenabled = true\nport = 5040\n'
    net.settings.write_text(gateway_on)
    try:
        wait_for(lambda: net.fetch(net.inv, f"http://{AP_IP}:5040/") == "200", 15, "5040 from the access point")
        assert net.fetch(net.lan, f"http://{LAN_APPLIANCE_IP}:5040/") == "200"  # a gateway on the LAN
        # a gateway that dials the old server's address lands on the appliance
        assert net.fetch(net.inv, "http://198.51.100.7:5040/") == "200"
        assert net.fetch(net.inv, f"http://{AP_IP}:8081/") != "200"  # nothing else opened
    finally:
        net.settings.write_text(net.good_settings)
    wait_for(lambda: net.fetch(net.inv, f"http://{AP_IP}:5040/") != "200", 15, "5040 closed again")
    assert net.fetch(net.lan, f"http://{LAN_APPLIANCE_IP}:5040/") != "200"


def test_killed_dnsmasq_is_restarted(net):
    before = net.status()["dnsmasq"]
    os.kill(before["pid"], signal.SIGKILL)
    after = wait_for(
        lambda: (lambda d: d if d["running"] and d["pid"] not in (None, before["pid"]) else None)(
            net.status()["dnsmasq"]), 15, "a new dnsmasq")
    assert after["restarts"] == before["restarts"] + 1 and after["last_exit"] == -signal.SIGKILL
    assert after["error"] == "" and "SIGKILL" in (net.tmp / "service.log").read_text()
    wait_for(lambda: net.query("www.nepviewer.net")["addresses"] == [AP_IP], 10, "answers again")


SQUATTER = """
import socket, sys, time
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
while True:
    try:
        sock.bind(("10.42.0.1", 53))
        break
    except OSError:
        time.sleep(0.01)
open(sys.argv[1], "w").close()
time.sleep(600)
"""


def test_dnsmasq_that_cannot_start_is_retried_with_backoff_and_says_why(net):
    before = net.status()["dnsmasq"]
    bound = net.tmp / "squatter.bound"
    squatter = net.spawn(net.app, PYTHON, "-c", SQUATTER, str(bound))
    os.kill(before["pid"], signal.SIGKILL)
    try:
        wait_for(bound.exists, 10, "the squatter to take port 53")
        failed = wait_for(lambda: (lambda d: d if "Address already in use" in d["error"] else None)(
            net.status()["dnsmasq"]), 20, "dnsmasq's own reason in the status")
        assert not failed["running"] and failed["last_exit"] > 0
    finally:
        squatter.kill()
        squatter.wait()
    after = wait_for(lambda: (lambda d: d if d["running"] else None)(net.status()["dnsmasq"]), 20,
                     "dnsmasq back once port 53 is free")
    assert after["restarts"] >= before["restarts"] + 2
    log = (net.tmp / "service.log").read_text()
    assert "dnsmasq restarts in 0.5 s" in log and "dnsmasq restarts in 1.0 s" in log
    assert net.query("www.nepviewer.net")["addresses"] == [AP_IP]


def test_disabled_access_point_serves_nothing_until_enabled_again(net):
    """``[access_point] enabled = false``: dnsmasq stops (and stays stopped), the isolation stays."""
    pid = net.status()["dnsmasq"]["pid"]
    net.settings.write_text(net.good_settings.replace("[access_point]\n", "[access_point]\nenabled = false\n"))
    try:
        status = wait_for(lambda: (lambda s: s if s and s["state"] == "disabled" else None)(net.status()), 15,
                          "the service to report the access point disabled")
        assert not status["dnsmasq"]["running"] and not Path(f"/proc/{pid}").exists()
        assert net.query("www.nepviewer.net")["rcode"] in ("TIMEOUT", "ERROR Connection refused")
        assert net.fetch(net.inv, f"http://{LAN_PEER_IP}:8080/") != "200"
        time.sleep(2)  # no restart of dnsmasq behind the setting's back
        assert not net.status()["dnsmasq"]["running"]
    finally:
        net.settings.write_text(net.good_settings)
    wait_for(lambda: (net.status() or {}).get("state") == "running", 15, "the access point back")
    wait_for(lambda: net.query("www.nepviewer.net")["addresses"] == [AP_IP], 10, "DNS back")
    assert "the access point is disabled" in (net.tmp / "service.log").read_text()


@pytest.mark.parametrize("broken, error", [
    (b'[access_point]\nssid = "caf\xe9"\n', "not UTF-8 text"),
    (b"[access_point\ninterface = 'ap0'\n", "Expected ']' at the end of a table declaration"),
], ids=["not-utf8", "not-toml"])
def test_a_restart_on_a_broken_file_serves_the_last_good_settings(net, broken, error):
    """Issue 14: a corrupt file at start must not crash-loop the service (the access point would go
    down with it): it runs on the last good settings, says why once, and takes the fixed file."""
    net.service.send_signal(signal.SIGTERM)
    assert net.service.wait(15) == 0
    net.settings.write_bytes(broken)
    log = net.tmp / f"service-restarted-{len(error)}.log"
    net.service = net.spawn(net.app, SOLARGW, "-v", "net", "run", "--settings", str(net.settings),
                            "--run-dir", str(net.tmp / "run"), "--resolv-conf", str(net.resolv),
                            log=log.name)
    try:
        status = wait_for(lambda: (lambda s: s if s and s["dnsmasq"]["running"] and error in s["config_error"]
                                   else None)(net.status()), 20, "dnsmasq running on the last good settings")
        assert status["dhcp_range"] == ["10.42.0.100", "10.42.0.120"] and status["interface"] == "ap0"
        assert "running on the last good copy until the file is fixed" in status["config_error"]
        wait_for(lambda: net.query("www.nepviewer.net")["addresses"] == [AP_IP], 10, "DNS answers")
        assert net.service.poll() is None
    finally:
        net.settings.write_text(net.good_settings)
    wait_for(lambda: (net.status() or {}).get("config_error") == "", 15, "the fixed file taken")
    text = log.read_text()
    assert "Traceback" not in text and len([line for line in text.splitlines() if error in line]) == 1, text


DEAF_ONCE = """#!/bin/sh
# dnsmasq that, the first time it serves, runs without opening its sockets: what a missed
# address event left behind in the booted image (a lease, but no DNS socket on the address).
[ "$1" = --test ] && exec dnsmasq "$@"
[ -e "$0.ran" ] && exec dnsmasq "$@"
: > "$0.ran"
exec sleep 600
"""


def test_dnsmasq_without_a_socket_on_the_address_is_restarted(net):
    net.service.send_signal(signal.SIGTERM)
    assert net.service.wait(15) == 0
    deaf = net.tmp / "deaf-dnsmasq"
    deaf.write_text(DEAF_ONCE)
    deaf.chmod(0o755)
    net.service = net.spawn(net.app, SOLARGW, "-v", "net", "run", "--settings", str(net.settings),
                            "--run-dir", str(net.tmp / "run"), "--resolv-conf", str(net.resolv),
                            "--dnsmasq", str(deaf), log="service-deaf.log")
    wait_for(lambda: Path(f"{deaf}.ran").exists(), 15, "the deaf dnsmasq to start")
    assert net.query("www.nepviewer.net").get("addresses") != [AP_IP]  # deaf: no answer
    status = wait_for(lambda: (lambda d: d if d["running"] and d["restarts"] >= 1 else None)(
        net.status()["dnsmasq"]), 30, "the service to restart the deaf dnsmasq")
    assert status["error"] == ""
    wait_for(lambda: net.query("www.nepviewer.net")["addresses"] == [AP_IP], 10, "DNS answers")
    assert "dnsmasq has no DNS socket on 10.42.0.1:53" in (net.tmp / "service-deaf.log").read_text()


def test_sigterm_stops_dnsmasq_and_the_service(net):
    pid = net.status()["dnsmasq"]["pid"]
    net.service.send_signal(signal.SIGTERM)  # to `ip netns exec`, which exec'd solargw
    assert net.service.wait(15) == 0
    assert not Path(f"/proc/{pid}").exists(), "dnsmasq outlived the service"
    assert net.status()["state"] == "stopped"
    # the isolation stays when the service stops
    assert net.fetch(net.inv, f"http://{LAN_PEER_IP}:8080/") != "200"


ENSURE = """
import ipaddress, json, sys
from appliance.net.interface import ensure_address, InterfaceError
steps = []
for cidr in sys.argv[1:]:
    try:
        steps.append(ensure_address("ap9", ipaddress.IPv4Interface(cidr)))
    except InterfaceError as exc:
        steps.append(str(exc))
print(json.dumps(steps))
"""


def test_interface_setup_is_idempotent_and_replaces_an_old_address():
    ns = f"sgw-{uuid.uuid4().hex[:8]}-if"
    sh("ip", "netns", "add", ns)
    try:
        sh("ip", "-n", ns, "link", "add", "ap9", "type", "veth", "peer", "name", "peer9")
        sh("ip", "-n", ns, "addr", "add", "192.0.2.9/24", "dev", "ap9")  # a stale address
        result = sh("ip", "netns", "exec", ns, PYTHON, "-c", ENSURE, "10.42.0.1/24", "10.42.0.1/24", "10.43.0.1/16")
        first, again, moved = json.loads(result.stdout)
        assert sorted(first) == ["added 10.42.0.1/24 to ap9", "ap9 up", "removed 192.0.2.9/24 from ap9"]
        assert again == []
        assert sorted(moved) == ["added 10.43.0.1/16 to ap9", "removed 10.42.0.1/24 from ap9"]
        shown = sh("ip", "-n", ns, "-4", "-o", "addr", "show", "dev", "ap9").stdout
        assert "10.43.0.1/16" in shown and "10.42.0.1" not in shown and "UP" in sh(
            "ip", "-n", ns, "link", "show", "ap9").stdout
        sh("ip", "-n", ns, "link", "del", "ap9")
        missing = json.loads(sh("ip", "netns", "exec", ns, PYTHON, "-c", ENSURE, "10.42.0.1/24").stdout)
        assert missing == ["interface ap9 does not exist (yet)"]
    finally:
        sh("ip", "netns", "del", ns, check=False)


# -- run inside the namespaces ------------------------------------------------------------------
def _serve_upstream(address: str, log_path: str) -> None:
    """A fake LAN resolver: answers UPSTREAM_NAME, NXDOMAIN otherwise; logs name/type per query."""
    import socket

    import dns.message
    import dns.rcode
    import dns.rdatatype
    import dns.rrset

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((address, 53))
    log = open(log_path, "a", buffering=1)
    while True:
        data, peer = sock.recvfrom(4096)
        try:
            query = dns.message.from_wire(data)
        except Exception:
            continue
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True)
        log.write(f"{name}/{dns.rdatatype.to_text(question.rdtype)}\n")
        response = dns.message.make_response(query)
        if name == UPSTREAM_NAME and question.rdtype == dns.rdatatype.A:
            response.answer.append(dns.rrset.from_text(question.name, 60, "IN", "A", UPSTREAM_ANSWER))
        elif name != UPSTREAM_NAME:
            response.set_rcode(dns.rcode.NXDOMAIN)
        sock.sendto(response.to_wire(), peer)


def _query(server: str, name: str, rdtype: str) -> None:
    import dns.exception
    import dns.message
    import dns.query
    import dns.rcode

    started = time.monotonic()
    try:
        response = dns.query.udp(dns.message.make_query(name, rdtype), server, timeout=3)
        rcode = dns.rcode.to_text(response.rcode())
        addresses = [r.to_text() for rrset in response.answer for r in rrset]
    except dns.exception.Timeout:
        rcode, addresses = "TIMEOUT", []
    except OSError as exc:
        rcode, addresses = f"ERROR {exc.strerror}", []
    print(json.dumps({"rcode": rcode, "addresses": addresses, "elapsed": time.monotonic() - started}))


def _fetch(url: str) -> None:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            print(response.status)
    except urllib.error.HTTPError as exc:
        print(exc.code)
    except (urllib.error.URLError, OSError) as exc:
        print(f"unreachable: {getattr(exc, 'reason', exc)}")


if __name__ == "__main__":
    mode, *rest = sys.argv[1:]
    {"upstream": _serve_upstream, "query": _query, "fetch": _fetch}[mode](*rest)
