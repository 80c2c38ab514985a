#!/usr/bin/env python3
"""Boot the SD-card image in QEMU and check the appliance from the outside.

The guest is a copy of the image, changed only the way an owner changes a card:
a ``solargw.toml`` in the FAT boot partition (written with mtools, nothing is
mounted) that sets the access point, the admin password, the time zone and an
SSH key generated for the test. The kernel, initrd and device tree are read
from that same FAT partition and the kernel command line is the card's own
``cmdline.txt`` (root by LABEL), with only the console swapped for QEMU's UART.

Machines:
- ``virt``: ``-M virt -cpu cortex-a53``, virtio disk and network.
- ``raspi3b``: the Pi 3 device tree, the SD-card controller and USB network;
  the disk is padded to a power-of-two size, as QEMU's SD card requires.

Host ports are forwarded to the guest's 22 (SSH), 80 (web) and 1883 (MQTT).
Run by tests/test_image.py; standalone: ``python image/boottest.py IMAGE``.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

IMAGE_DIR = Path(__file__).resolve().parent
GUEST_WIFI_SCRIPT = IMAGE_DIR / "guest_wifi.sh"
GUEST_UPSTREAM_SCRIPT = IMAGE_DIR / "guest_upstream_wifi.py"
TEST_SSID = "solargw-boottest"
TEST_PASSPHRASE = "boot-test-passphrase"
TEST_ADMIN_PASSWORD = "boot-test-admin"
TEST_TIMEZONE = "Europe/Amsterdam"
SERVICES = ("solargw-web", "solargw-zigbee", "solargw-net", "mosquitto")
SYSTEMD_FROZE = "Freezing execution"
"""What systemd prints when its manager cannot go on: that boot never answers SSH."""


def log(message: str) -> None:
    print(f"[boottest] {message}", flush=True)


@dataclass
class Partition:
    start: int
    size: int
    type: int


def partitions(image: Path) -> list[Partition]:
    """The MBR's primary partitions (byte offsets)."""
    with open(image, "rb") as handle:
        mbr = handle.read(512)
    if mbr[510:512] != b"\x55\xaa":
        raise ValueError(f"{image}: no MBR signature")
    found = []
    for i in range(4):
        entry = mbr[446 + 16 * i: 446 + 16 * (i + 1)]
        ptype = entry[4]
        lba, sectors = struct.unpack("<II", entry[8:16])
        if ptype:
            found.append(Partition(lba * 512, sectors * 512, ptype))
    return found


class BootPartition:
    """The FAT boot partition inside an image, through mtools (no mounting)."""

    def __init__(self, image: Path):
        boot = partitions(image)[0]
        self.spec = f"{image}@@{boot.start}"

    def _env(self) -> dict[str, str]:
        return dict(os.environ, MTOOLS_SKIP_CHECK="1")

    def list(self) -> list[str]:
        out = subprocess.run(["mdir", "-b", "-i", self.spec, "::/"], check=True, capture_output=True,
                             text=True, env=self._env()).stdout
        return sorted(line.split("/", 3)[-1] for line in out.splitlines() if line.strip())

    def read(self, name: str) -> bytes:
        return subprocess.run(["mtype", "-i", self.spec, f"::/{name}"], check=True, capture_output=True,
                              env=self._env()).stdout

    def extract(self, name: str, dest: Path) -> Path:
        subprocess.run(["mcopy", "-n", "-o", "-i", self.spec, f"::/{name}", str(dest)], check=True,
                       env=self._env())
        return dest

    def write(self, name: str, data: bytes) -> None:
        with tempfile.NamedTemporaryFile() as tmp:
            tmp.write(data)
            tmp.flush()
            subprocess.run(["mcopy", "-o", "-i", self.spec, tmp.name, f"::/{name}"], check=True,
                           env=self._env())

    def config(self) -> dict[str, str]:
        """kernel=, initramfs and the [all] section's view of config.txt."""
        result: dict[str, str] = {}
        for line in self.read("config.txt").decode().splitlines():
            line = line.strip()
            if line.startswith("kernel="):
                result["kernel"] = line.split("=", 1)[1]
            elif line.startswith("initramfs "):
                result["initramfs"] = line.split()[1]
        return result


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def first_boot_file(ssh_public_key: str) -> str:
    return (
        "# written by image/boottest.py\n"
        f'[access_point]\nssid = "{TEST_SSID}"\npassphrase = "{TEST_PASSPHRASE}"\n\n'
        f'[admin]\npassword = "{TEST_ADMIN_PASSWORD}"\n\n'
        f'[system]\ntimezone = "{TEST_TIMEZONE}"\nssh_authorized_keys = ["{ssh_public_key}"]\n\n'
        # The host's simulated inverters reach the guest through QEMU's user network (10.0.2.2),
        # not through its access point: let them in as a LAN-DNS-mode user would let in the LAN.
        '[web]\nnep_sources = ["access_point", "10.0.2.0/24"]\n'
    )


@dataclass
class Guest:
    image: Path
    machine: str = "virt"
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="solargw-boot-")))
    memory_mb: int = 1024
    ports: dict[int, int] = field(default_factory=dict)
    process: subprocess.Popen | None = None
    started: float = 0.0

    @property
    def serial_log(self) -> Path:
        return self.workdir / "serial.log"

    @property
    def key(self) -> Path:
        return self.workdir / "id_ed25519"

    def prepare(self) -> None:
        disk = self.workdir / "disk.img"
        log(f"copying {self.image} ({self.machine})")
        subprocess.run(["cp", "--sparse=always", str(self.image), str(disk)], check=True)
        if self.machine == "raspi3b":
            size = disk.stat().st_size
            padded = 1 << (size - 1).bit_length()
            os.truncate(disk, padded)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "boottest",
                        "-f", str(self.key)], check=True)
        boot = BootPartition(disk)
        boot.write("solargw.toml", first_boot_file(self.key.with_suffix(".pub").read_text().strip()).encode())
        config = boot.config()
        self.kernel = boot.extract(config["kernel"], self.workdir / "vmlinuz")
        self.initrd = boot.extract(config["initramfs"], self.workdir / "initrd.img")
        if self.machine == "raspi3b":
            self.dtb = boot.extract("bcm2837-rpi-3-b.dtb", self.workdir / "pi3.dtb")
        cmdline = boot.read("cmdline.txt").decode().split()
        cmdline = [arg for arg in cmdline if not arg.startswith("console=")]
        cmdline += ["console=ttyAMA0,115200", "systemd.mask=serial-getty@ttyAMA0.service"]
        self.cmdline = " ".join(cmdline)
        self.disk = disk
        self.ports = {22: free_port(), 80: free_port(), 1883: free_port()}

    def command(self) -> list[str]:
        forwards = ",".join(f"hostfwd=tcp:127.0.0.1:{host}-:{guest}" for guest, host in self.ports.items())
        common = ["-kernel", str(self.kernel), "-initrd", str(self.initrd), "-append", self.cmdline,
                  "-display", "none", "-monitor", "none", "-serial", f"file:{self.serial_log}",
                  "-netdev", f"user,id=net0,{forwards}"]
        if self.machine == "virt":
            return ["qemu-system-aarch64", "-M", "virt", "-cpu", "cortex-a53", "-smp", "2",
                    "-accel", "tcg,thread=multi", "-m", str(self.memory_mb), *common,
                    "-drive", f"if=none,id=disk0,format=raw,file={self.disk}",
                    "-device", "virtio-blk-pci,drive=disk0",
                    "-device", "virtio-net-pci,netdev=net0,romfile=",
                    "-device", "virtio-rng-pci"]
        if self.machine == "raspi3b":
            return ["qemu-system-aarch64", "-M", "raspi3b", "-dtb", str(self.dtb), *common,
                    "-drive", f"if=sd,format=raw,file={self.disk}",
                    "-device", "usb-net,netdev=net0"]
        raise ValueError(f"unknown machine {self.machine!r}")

    def start(self) -> None:
        cmd = self.command()
        log("starting: " + shlex.join(cmd))
        self.started = time.monotonic()
        self.process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT)

    def ssh(self, command: str, timeout: float = 120, check: bool = True,
            stdin: bytes | None = None) -> subprocess.CompletedProcess:
        args = ["ssh", "-q", "-i", str(self.key), "-p", str(self.ports[22]),
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "ConnectTimeout=10", "-o", "BatchMode=yes", "root@127.0.0.1", command]
        return subprocess.run(args, input=stdin, capture_output=True, timeout=timeout, check=check)

    def wait_ssh(self, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process and self.process.poll() is not None:
                raise RuntimeError(f"QEMU exited ({self.process.returncode}): "
                                   f"{self.process.stdout.read().decode(errors='replace')[-2000:]}\n"
                                   f"serial:\n{self.tail()}")
            try:
                if self.ssh("true", timeout=30, check=False).returncode == 0:
                    return time.monotonic() - self.started
            except subprocess.TimeoutExpired:
                pass
            if SYSTEMD_FROZE in self.tail():
                raise TimeoutError(f"no SSH: systemd froze after {time.monotonic() - self.started:.0f} s; "
                                   f"serial console:\n{self.tail()}")
            time.sleep(3)
        raise TimeoutError(f"no SSH after {timeout:.0f} s; serial console:\n{self.tail()}")

    def wait_ready(self, timeout: float) -> tuple[str, float]:
        """Wait (over SSH, not in a boot unit) until systemd has finished starting up."""
        done = self.ssh(f"timeout {int(timeout)} systemctl is-system-running --wait", timeout=timeout + 30,
                        check=False)
        return done.stdout.decode().strip(), time.monotonic() - self.started

    def tail(self, lines: int = 60) -> str:
        try:
            text = self.serial_log.read_text(errors="replace")
        except FileNotFoundError:
            return "(no serial output)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            try:
                self.ssh("systemctl poweroff", timeout=20, check=False)
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def cleanup(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


def kernel_stalls(guest: Guest) -> list[str]:
    """The guest kernel's soft-lockup and RCU-stall reports: under TCG they mean the emulated CPUs
    were starved, which explains units that timed out while starting."""
    return [line.strip() for line in guest.tail(100_000).splitlines()
            if "soft lockup" in line or "rcu_sched self-detected stall" in line]


def unit_states(guest: Guest, units: tuple[str, ...]) -> dict[str, str]:
    out = guest.ssh("systemctl is-active " + " ".join(units), check=False).stdout.decode().split()
    return dict(zip(units, out, strict=True))


def failed_units(guest: Guest) -> list[str]:
    out = guest.ssh("systemctl list-units --failed --plain --no-legend --no-pager").stdout.decode()
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def service_memory(guest: Guest) -> dict[str, float]:
    """MemoryCurrent of each service's cgroup, in MiB."""
    units = ("solargw-web", "solargw-zigbee", "solargw-net", "mosquitto")
    memory = {}
    for unit in units:
        value = guest.ssh(f"systemctl show -p MemoryCurrent --value {unit}.service").stdout.decode().strip()
        if value.isdigit():
            memory[unit] = int(value) / 2**20
    return memory


# Sectors written to the root file system's disk, then every process's write_bytes (pid, name,
# bytes: what it sent towards storage; kernel threads such as jbd2 and the flushers included).
_WRITE_SNAPSHOT = r"""
root=$(findmnt -n -o SOURCE /)
disk=$(lsblk -n -o PKNAME "$root" | head -n1)
disk=${disk:-$(basename "$root")}
awk '{print $7}' "/sys/block/$disk/stat"
for io in /proc/[0-9]*/io; do
    pid=${io#/proc/}; pid=${pid%/io}
    bytes=$(sed -n 's/^write_bytes: //p' "$io" 2>/dev/null) || continue
    [ -n "$bytes" ] && printf '%s %s %s\n' "$pid" "$(cat /proc/$pid/comm 2>/dev/null | tr ' ' _)" "$bytes"
done
"""


def _write_snapshot(guest: Guest) -> tuple[int, dict[tuple[str, str], int]]:
    lines = guest.ssh(_WRITE_SNAPSHOT, timeout=60).stdout.decode().splitlines()
    processes = {}
    for line in lines[1:]:
        pid, name, written = line.split()
        processes[(pid, name)] = int(written)
    return int(lines[0]), processes


def idle_writes(guest: Guest, seconds: float) -> dict:
    """What the idle system writes to its root disk over ``seconds`` (nothing else is done to
    the guest meanwhile): KiB in all and per minute, from the disk's own sector count, and the
    processes that wrote, in KiB (write_bytes: their dirty pages, counted when dirtied)."""
    sectors_before, before = _write_snapshot(guest)
    time.sleep(seconds)
    sectors_after, after = _write_snapshot(guest)
    kib = (sectors_after - sectors_before) / 2
    writers = {}
    for key, written in after.items():
        delta = written - before.get(key, 0)
        if delta > 0:
            writers[key[1]] = writers.get(key[1], 0) + delta / 1024
    return {"seconds": round(seconds), "disk_kib": kib, "disk_kib_per_min": round(kib * 60 / seconds, 1),
            "writers_kib": {name: round(v, 1) for name, v in sorted(writers.items(), key=lambda kv: -kv[1])}}


def _result(done: subprocess.CompletedProcess, what: str) -> dict:
    """The ``RESULT {json}`` line a guest script prints last."""
    out = done.stdout.decode(errors="replace")
    for line in reversed(out.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise AssertionError(f"no result from {what} (exit {done.returncode}):\n{out[-3000:]}\n"
                         f"{done.stderr.decode(errors='replace')[-2000:]}")


def run_wifi_test(guest: Guest, timeout: float = 420) -> dict:
    """mac80211_hwsim in the guest: a client in its own netns joins the real hostapd."""
    env = f"SSID={shlex.quote(TEST_SSID)} PASSPHRASE={shlex.quote(TEST_PASSPHRASE)}"
    done = guest.ssh(f"{env} sh -s", stdin=GUEST_WIFI_SCRIPT.read_bytes(), timeout=timeout, check=False)
    return _result(done, "the Wi-Fi test")


def run_upstream_phase(guest: Guest, phase: str, timeout: float = 600) -> dict:
    """One phase of the upstream Wi-Fi test in the guest (image/guest_upstream_wifi.py)."""
    env = f"AP_SSID={shlex.quote(TEST_SSID)} AP_PASSPHRASE={shlex.quote(TEST_PASSPHRASE)}"
    done = guest.ssh(f"{env} python3 - {shlex.quote(phase)}", stdin=GUEST_UPSTREAM_SCRIPT.read_bytes(),
                     timeout=timeout, check=False)
    return _result(done, f"the upstream Wi-Fi phase {phase!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", type=Path)
    parser.add_argument("--machine", choices=("virt", "raspi3b"), default="virt")
    parser.add_argument("--keep", action="store_true", help="leave the guest running, print how to reach it")
    parser.add_argument("--idle-writes", type=float, metavar="SECONDS",
                        help="once the system is up, let it idle this long and print what it wrote")
    parser.add_argument("--settle", type=float, default=120, metavar="SECONDS",
                        help="with --idle-writes: idle this long first (the boot's own writes settle)")
    args = parser.parse_args(argv)
    guest = Guest(args.image, args.machine)
    guest.prepare()
    guest.start()
    try:
        log(f"ssh after {guest.wait_ssh(600):.0f} s")
        state, ready = guest.wait_ready(600)
        log(f"system {state} after {ready:.0f} s")
        log(f"units: {unit_states(guest, SERVICES)}; failed: {failed_units(guest)}")
        log(f"memory (MiB): {service_memory(guest)}")
        if args.idle_writes:
            time.sleep(args.settle)
            log(f"idle writes: {json.dumps(idle_writes(guest, args.idle_writes))}")
        if args.keep:
            log(f"ssh -i {guest.key} -p {guest.ports[22]} root@127.0.0.1; web on port {guest.ports[80]}")
            guest.process.wait()
    finally:
        guest.stop()
        if not args.keep:
            guest.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
