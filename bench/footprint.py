"""Memory and start-up of the services: ``python -m bench footprint [seconds]``.

PSS (proportional set size, /proc/PID/smaps_rollup: each shared page counted once across the
processes that map it) of every solargw service, started with the environment the systemd units
give them (``bench._web.service_env``), while ``solargw demo`` runs (web, zigbee on the
emulated coordinator with four Enecsys inverters, three NEP inverters, mosquitto), after
``seconds`` of that load (default 60); ``solargw net run`` on its own, as root, in a network
namespace with a veth pair for the access-point interface. The processes measured are the services
themselves (gunicorn's arbiter and worker for web), not mosquitto, dnsmasq or the simulators.

Then the zigbee service's start-up import time: ``python -X importtime`` of what ``solargw zigbee``
imports before it opens the stick (``STARTUP``), and the CPU time it takes.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

from bench._proctree import process_tree, pss_kib
from bench._web import service_env

ROOT = Path(__file__).resolve().parents[1]
SERVICES = {"web": re.compile(r"appliance web\b"), "zigbee": re.compile(r"appliance zigbee\b"),
            "net": re.compile(r"appliance net run\b")}


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def service_pss(root: int) -> dict[str, list[tuple[int, int]]]:
    """``service -> [(pid, PSS KiB)]`` for the services under ``root`` (gunicorn's worker is the
    arbiter's child, with the same command line)."""
    found: dict[str, list[tuple[int, int]]] = {}
    for pid in process_tree(root):
        line = command_line(pid)
        for name, pattern in SERVICES.items():
            if pattern.search(line):
                try:
                    found.setdefault(name, []).append((pid, pss_kib(pid)))
                except OSError:
                    pass
    return found


@contextlib.contextmanager
def demo() -> Iterator[int]:
    """``solargw demo`` running; yields its process id."""
    workdir = Path(tempfile.mkdtemp(prefix="bench-footprint-"))
    process = subprocess.Popen([sys.executable, "-m", "appliance", "demo", "--port", "0", "--dir", str(workdir)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                               env=service_env(), start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        assert process.stdout is not None
        for line in process.stdout:
            if "http://" in line or time.monotonic() > deadline:
                break
        yield process.pid
    finally:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def net_service() -> Iterator[int | None]:
    """``solargw net run`` in its own network namespace, with a veth pair for the access point's
    interface (root only; None otherwise)."""
    if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("dnsmasq"):
        yield None
        return
    namespace = f"solargw-footprint-{os.getpid()}"
    workdir = Path(tempfile.mkdtemp(prefix="bench-footprint-net-"))
    workdir.chmod(0o755)  # dnsmasq reads its servers file (--dns-dir) as nobody
    subprocess.run(["ip", "netns", "add", namespace], check=True)
    try:
        subprocess.run(["ip", "-n", namespace, "link", "add", "ap0", "type", "veth", "peer", "name", "ap1"], check=True)
        (workdir / "resolv.conf").write_text("nameserver 127.0.0.53\n")
        settings = workdir / "solargw.toml"
        settings.write_text(f'[data]\ndir = "{workdir}/data"\n[access_point]\ninterface = "ap0"\n'
                            f'passphrase = "footprint-bench"\n[mqtt]\nenabled = false\n')
        net = subprocess.Popen(["ip", "netns", "exec", namespace, sys.executable, "-m", "appliance", "net", "run",
                                "--settings", str(settings), "--run-dir", str(workdir / "run"),
                                "--dns-dir", str(workdir / "dns"),
                                "--resolv-conf", str(workdir / "resolv.conf"), "--no-firewall"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT,
                               env=service_env())
        try:
            yield net.pid
        finally:
            net.terminate()
            try:
                net.wait(15)
            except subprocess.TimeoutExpired:
                net.kill()
    finally:
        subprocess.run(["ip", "netns", "del", namespace], check=False)
        shutil.rmtree(workdir, ignore_errors=True)


STARTUP = """
from appliance.cli import build_parser
try:
    from appliance.cli import command_in
    build_parser(command_in(["zigbee"]))
except ImportError:  # a version that registers every command
    build_parser()
try:
    from appliance.cli import DEFERRED
    from appliance.lazy import defer
    defer(*DEFERRED)
except ImportError:  # a version without deferred imports
    pass
import appliance.zigbee.service, appliance.mqtt, appliance.store
"""
"""What ``solargw zigbee`` imports before it opens the stick: its command line, then the service,
the MQTT publisher and the store."""


def import_ms(runs: int = 7) -> float:
    """``python -X importtime`` of ``STARTUP``, the sum of its top-level imports; best of ``runs``, in ms."""
    best = float("inf")
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-X", "importtime", "-c", STARTUP], capture_output=True, text=True,
                             cwd=ROOT, check=True).stderr
        total = sum(int(m.group(1)) for m in re.finditer(r"import time:\s+\d+ \|\s+(\d+) \| (\S.*)$", out, re.M))
        best = min(best, total / 1000)
    return best


def cpu_ms(code: str, runs: int = 7) -> float:
    """CPU time (user + system) of ``python -c code``, best of ``runs``, in ms: steadier than wall
    time on a busy machine."""
    best = float("inf")
    for _ in range(runs):
        child = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.DEVNULL)
        _, _, usage = os.wait4(child.pid, 0)
        best = min(best, (usage.ru_utime + usage.ru_stime) * 1000)
    return best


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 60.0
    print(f"footprint: PSS of the services after {seconds:g} s of `solargw demo`, with `solargw net run` "
          "beside it in a network namespace")
    with net_service() as net, demo() as demo_pid:
        time.sleep(seconds)
        found = service_pss(demo_pid)
        if net is not None:
            found.update(service_pss(net))
    total = 0
    for name in ("web", "zigbee", "net"):
        processes = found.get(name, [])
        if not processes:
            print(f"  {name:<8} not measured" + (" (needs root)" if name == "net" else ""))
            continue
        kib = sum(p for _, p in processes)
        total += kib
        detail = " + ".join(f"{p / 1024:.1f}" for _, p in processes)
        print(f"  {name:<8} {kib / 1024:7.1f} MiB" + (f"  ({detail}: arbiter, worker)" if len(processes) > 1 else ""))
    print(f"  {'total':<8} {total / 1024:7.1f} MiB")
    print(f"zigbee service start-up imports: {import_ms():.0f} ms (python -X importtime, best of 7), "
          f"{cpu_ms(STARTUP) - cpu_ms('pass'):.0f} ms of CPU (best of 7, the interpreter's own start taken off)")


if __name__ == "__main__":
    main()
