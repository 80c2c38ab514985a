#!/usr/bin/env python3
"""Build the solargw SD-card image: ``build/solargw-<version>-arm64.img.xz``.

Stages (each printed with its duration):

1. ``binfmt``: register qemu-aarch64 in binfmt_misc (mounting it if needed).
2. ``base``: debootstrap Debian 13 "trixie" arm64, install the kernel, the Pi
   firmware and every Debian package the Ansible roles ask for (their
   ``*_packages`` variables), with initramfs generation diverted; then ONE
   ``update-initramfs -c -k all``, which also lets Debian's raspi-firmware hook
   write ``config.txt`` / ``cmdline.txt`` from ``/etc/default/raspi-firmware``.
   The result is cached as a tarball keyed by everything that went into it, so a
   rebuild after an appliance code change starts from there (the initramfs does
   not depend on the appliance code, hence it lives in the cached base).
3. ``rootfs``: unpack the base into a fresh work tree.
4. ``provision``: ``ansible-playbook ansible/site.yml`` over the chroot
   connection (services are enabled, not started).
5. ``finalize``: drop build-only state (apt lists, host keys, machine id), add
   ``fstab`` and the commented first-boot ``solargw.toml`` example.
6. ``genimage``: FAT boot partition + labelled ext4 root in an MBR image,
   assembled by genimage from directories (mkdosfs/mcopy, mke2fs -d): no loop
   devices, no mounts.
7. ``compress``: ``xz`` and ``.sha256``.

Caches live outside the repository (``--cache-dir``, default
``/var/cache/solargw-image``): the base tarball and the apt archives, shared by every
checkout (building the base holds a lock on the cache). The provisioned root file
system and genimage's scratch space are per checkout, under ``build/work``.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
IMAGE_DIR = REPO / "image"
SUITE = "trixie"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
SECURITY_MIRROR = "http://deb.debian.org/debian-security"
ROOT_LABEL = "solargw-root"
BOOT_LABEL = "SOLARGWBOOT"
BOOT_SIZE_MB = 256
# Packages only the image needs (a live Pi already boots its own kernel).
IMAGE_PACKAGES = [
    "linux-image-arm64",
    "raspi-firmware",
    "firmware-brcm80211",
    "initramfs-tools",
    "zstd",
]
# Debian's own Python on the build host: it and every library it loads live under /usr.
HOST_PYTHON = Path("/usr/bin/python3")
# Bumped when the base stage's recipe changes in a way the key cannot see.
BASE_RECIPE = "3"


def log(message: str) -> None:
    print(f"[build] {message}", flush=True)


def run(*cmd: str | Path, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], check=True, **kwargs)


@contextlib.contextmanager
def stage(name: str, timings: dict[str, float]) -> Iterator[None]:
    log(f"stage {name} ...")
    start = time.monotonic()
    yield
    timings[name] = time.monotonic() - start
    log(f"stage {name} done in {timings[name]:.0f} s")


def version() -> str:
    text = (REPO / "appliance" / "__init__.py").read_text()
    match = re.search(r'__version__\s*=\s*"([^"]+)"', text)
    if not match:
        raise SystemExit("cannot find appliance.__version__")
    return match.group(1)


def role_packages() -> list[str]:
    """Every ``<role>_packages`` list from the roles' vars and defaults: one source of truth."""
    packages: list[str] = []
    roles = REPO / "ansible" / "roles"
    for path in sorted([*roles.glob("*/vars/main.yml"), *roles.glob("*/defaults/main.yml")]):
        data = yaml.safe_load(path.read_text()) or {}
        for key, value in data.items():
            if key.endswith("_packages"):
                packages.extend(value)
    return sorted(set(packages))


def register_binfmt() -> None:
    """Make the kernel run arm64 binaries through qemu-aarch64-static (F: fixed binary)."""
    binfmt = Path("/proc/sys/fs/binfmt_misc")
    if not (binfmt / "register").exists():
        run("mount", "-t", "binfmt_misc", "binfmt_misc", binfmt)
    entry = binfmt / "qemu-aarch64"
    if entry.exists():
        if "enabled" in entry.read_text().splitlines()[0]:
            return
        entry.write_text("1")
        return
    conf = Path("/usr/lib/binfmt.d/qemu-aarch64.conf")
    if not conf.exists():
        raise SystemExit("qemu-user-static is not installed (run `make deps`)")
    line = conf.read_text().strip()
    (binfmt / "register").write_text(line)


@contextlib.contextmanager
def chroot_mounts(root: Path, apt_cache: Path | None = None) -> Iterator[None]:
    """The pseudo file systems a package's maintainer scripts need inside the chroot."""
    mounted: list[Path] = []
    try:
        for fstype, src, target, opts in (
            ("proc", "proc", root / "proc", []),
            ("sysfs", "sysfs", root / "sys", []),
            (None, "/dev", root / "dev", ["--bind"]),
            (None, "/dev/pts", root / "dev/pts", ["--bind"]),
        ):
            target.mkdir(parents=True, exist_ok=True)
            run("mount", *(["-t", fstype] if fstype else []), *opts, src, target)
            mounted.append(target)
        if apt_cache is not None:
            target = root / "var/cache/apt/archives"
            target.mkdir(parents=True, exist_ok=True)
            run("mount", "--bind", apt_cache, target)
            mounted.append(target)
        yield
    finally:
        for target in reversed(mounted):
            subprocess.run(["umount", "-l", str(target)], check=False)


def in_chroot(root: Path, script: str) -> None:
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "DEBIAN_FRONTEND": "noninteractive",
        "LC_ALL": "C.UTF-8",
        "HOME": "/root",
    }
    run("chroot", root, "/bin/sh", "-euc", script, env=env)


def base_key(mirror: str, packages: list[str]) -> str:
    digest = hashlib.sha256()
    for part in (BASE_RECIPE, SUITE, mirror, *packages, *IMAGE_PACKAGES):
        digest.update(part.encode() + b"\0")
    for name in ("raspi-firmware.default", "raspi-firmware-custom"):
        digest.update((IMAGE_DIR / name).read_bytes())
    return digest.hexdigest()[:16]


APT_OPTS = "-y -q -o Dpkg::Options::=--force-confold -o Dpkg::Options::=--force-confdef --no-install-recommends"


def build_base(work: Path, cache: Path, mirror: str, packages: list[str], tarball: Path) -> None:
    root = work / "base"
    if root.exists():
        run("rm", "-rf", "--one-file-system", root)
    debs = cache / "apt-archives"
    (debs / "partial").mkdir(parents=True, exist_ok=True)
    steps: dict[str, float] = {}
    with stage("base: debootstrap", steps):
        run(
            "debootstrap", "--arch=arm64", "--variant=minbase",
            "--components=main,non-free-firmware", f"--cache-dir={debs}",
            "--include=apt,ca-certificates", SUITE, root, mirror,
        )
    sources = root / "etc/apt/sources.list.d/debian.sources"
    sources.write_text(
        f"Types: deb\nURIs: {mirror}\nSuites: {SUITE} {SUITE}-updates\n"
        "Components: main non-free-firmware\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
        f"Types: deb\nURIs: {SECURITY_MIRROR}\nSuites: {SUITE}-security\n"
        "Components: main non-free-firmware\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    )
    (root / "etc/apt/sources.list").unlink(missing_ok=True)
    # No daemon may start inside the build chroot.
    policy = root / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    (root / "etc/default").mkdir(exist_ok=True)
    shutil.copy(IMAGE_DIR / "raspi-firmware.default", root / "etc/default/raspi-firmware")
    shutil.copy(IMAGE_DIR / "raspi-firmware-custom", root / "etc/default/raspi-firmware-custom")
    (root / "boot/firmware").mkdir(parents=True, exist_ok=True)
    all_packages = " ".join(sorted(set(packages) | set(IMAGE_PACKAGES)))
    with chroot_mounts(root, apt_cache=debs):
        with stage("base: packages", steps):
            in_chroot(root, f"""
                echo 'Acquire::Languages "none";' > /etc/apt/apt.conf.d/90solargw-nolang
                # No fsync inside a throw-away chroot, and no man page index rebuilds.
                echo 'force-unsafe-io' > /etc/dpkg/dpkg.cfg.d/90solargw-build
                echo 'man-db man-db/auto-update boolean false' | debconf-set-selections
                dpkg-divert --local --rename --add /usr/sbin/update-initramfs
                printf '#!/bin/sh\\necho "update-initramfs: deferred by the image build"\\n' > /usr/sbin/update-initramfs
                chmod 755 /usr/sbin/update-initramfs
                apt-get update -q
                apt-get {APT_OPTS} dist-upgrade
                apt-get {APT_OPTS} install {all_packages}
                rm /usr/sbin/update-initramfs
                dpkg-divert --local --rename --remove /usr/sbin/update-initramfs
            """)
        with stage("base: initramfs", steps):
            in_chroot(root, """
                update-initramfs -c -k all
                rm /etc/dpkg/dpkg.cfg.d/90solargw-build
                apt-get clean
            """)
    policy.unlink()
    tarball.parent.mkdir(parents=True, exist_ok=True)
    partial = tarball.with_suffix(".partial")
    with stage("base: tarball", steps):
        run("tar", "--zstd", "--numeric-owner", "--xattrs", "--xattrs-include=*", "--acls",
            "-C", root, "-cf", partial, ".")
    partial.rename(tarball)
    run("rm", "-rf", "--one-file-system", root)


def elf_interpreter(executable: Path) -> Path:
    """The program loader an ELF executable names (its PT_INTERP segment)."""
    data = executable.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2:
        raise ValueError(f"{executable} is not a 64-bit ELF executable")
    order = "<" if data[5] == 1 else ">"
    phoff, = struct.unpack_from(order + "Q", data, 0x20)
    phentsize, phnum = struct.unpack_from(order + "HH", data, 0x36)
    for index in range(phnum):
        header = phoff + index * phentsize
        p_type, = struct.unpack_from(order + "I", data, header)
        if p_type == 3:  # PT_INTERP
            offset, = struct.unpack_from(order + "Q", data, header + 8)
            size, = struct.unpack_from(order + "Q", data, header + 32)
            return Path(data[offset:offset + size].rstrip(b"\0").decode())
    raise ValueError(f"{executable} names no program loader")


@contextlib.contextmanager
def native_module_python(root: Path) -> Iterator[str | None]:
    """Run Ansible's modules on the build host's own Python, inside the chroot.

    Under qemu-user every module spends ~10 s starting the image's Python; the
    host's interpreter, reached through a read-only bind mount of the host's
    ``/usr`` on a tmpfs ``/run`` (so nothing stays in the image), runs one in
    well under a second. What the modules call (systemctl, useradd, the image's
    python3 and pip) is still the image's own. Yields the interpreter path to
    give Ansible, or None when the host's Python does not live under ``/usr``.
    """
    python = Path(os.path.realpath(HOST_PYTHON))
    loader = Path(os.path.realpath(elf_interpreter(python))) if python.exists() else None
    if loader is None or not (python.is_relative_to("/usr") and loader.is_relative_to("/usr")):
        log(f"Ansible's modules run under qemu-user: no {HOST_PYTHON} with its loader under /usr")
        yield None
        return
    run_dir = root / "run"
    mounted: list[Path] = []
    try:
        run("mount", "-t", "tmpfs", "-o", "mode=0755", "solargw-build", run_dir)
        mounted.append(run_dir)
        host_usr = run_dir / "solargw-build/usr"
        host_usr.mkdir(parents=True)
        run("mount", "--bind", "/usr", host_usr)
        mounted.append(host_usr)
        run("mount", "-o", "remount,bind,ro", host_usr)
        inside = Path("/run/solargw-build")
        libdirs = ":".join(str(inside / d.relative_to("/")) for d in (loader.parent, Path("/usr/lib")))
        wrapper = run_dir / "solargw-build/python"
        # -I: the image's environment and the host's user site stay out of it.
        wrapper.write_text(
            "#!/bin/sh\n"
            f'exec {inside / loader.relative_to("/")} --library-path {libdirs} '
            f'{inside / python.relative_to("/")} -I "$@"\n'
        )
        wrapper.chmod(0o755)
        yield str(inside / "python")
    finally:
        for target in reversed(mounted):
            subprocess.run(["umount", "-l", str(target)], check=False)


def provision(root: Path, verbose: bool = False, capture: bool = False) -> subprocess.CompletedProcess:
    """Run the playbook over the chroot connection (units enabled, nothing started)."""
    policy = root / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible/ansible.cfg"), ANSIBLE_FORCE_COLOR="0")
    venv_bin = Path(sys.executable).parent
    playbook = venv_bin / "ansible-playbook"
    try:
        with chroot_mounts(root), native_module_python(root) as interpreter, \
                tempfile.TemporaryDirectory() as scratch:
            # A host variable, not an extra var: tasks delegated to the controller keep their Python.
            host = {"ansible_connection": "community.general.chroot"}
            if interpreter:
                host["ansible_python_interpreter"] = interpreter
            inventory = Path(scratch) / "chroot.yml"
            inventory.write_text(json.dumps({"all": {"hosts": {str(root): host}}}))
            return subprocess.run(
                [str(playbook), "-i", str(inventory),
                 "-e", "solargw_start_services=false", "-e", "solargw_image_build=true",
                 *(["-v"] if verbose else []), str(REPO / "ansible/site.yml")],
                env=env, cwd=REPO, check=not capture, text=True,
                stdout=subprocess.PIPE if capture else None, stderr=subprocess.STDOUT if capture else None,
            )
    finally:
        policy.unlink(missing_ok=True)


# The root file system's mount options, chosen for the SD card's write budget:
# - noatime: reading a file never writes its inode.
# - commit=600: ext4 commits its journal every 10 minutes instead of every 5 seconds, so
#   the metadata of many small changes (a file's size and time stamps, the hourly
#   fake-hwclock save, timesyncd's clock file) costs one journal transaction instead of
#   one each (a transaction is at least a descriptor, the changed blocks and a commit
#   block, and each changed block is written again at checkpoint). The cost is the loss
#   window on a power cut: up to 10 minutes of changes that nobody fsync()ed may be lost,
#   the file system itself stays consistent. What must survive calls fsync(), which
#   commits the journal at once, with every change made before it: the database's
#   commits, the settings file's content (its rename into place then waits for the next
#   fsync anyone makes, or the 10 minutes); first boot syncs before it scrubs the
#   boot partition's copy of the settings.
ROOT_MOUNT_OPTIONS = "noatime,commit=600,errors=remount-ro"


def finalize(root: Path) -> None:
    (root / "etc/fstab").write_text(
        "# <device>  <mount point>  <type>  <options>  <dump>  <pass>\n"
        f"LABEL={ROOT_LABEL}  /  ext4  {ROOT_MOUNT_OPTIONS}  0  1\n"
        f"LABEL={BOOT_LABEL}  /boot/firmware  vfat  noatime,umask=0077,fmask=0177  0  2\n"
    )
    shutil.copy(IMAGE_DIR / "solargw.toml.example", root / "boot/firmware/solargw.toml")
    # Per-device state is created at first boot, never shared between cards.
    for key in root.glob("etc/ssh/ssh_host_*"):
        key.unlink()
    # Empty, not "uninitialized": systemd then generates the card's own ID at boot (committed by
    # systemd-machine-id-commit) without entering "first boot", whose preset-all would enable
    # every unit the playbook left disabled (apt's timers, ssh, hostapd at every boot).
    (root / "etc/machine-id").write_text("")
    (root / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    for path in ("var/lib/apt/lists", "var/cache/apt/archives", "tmp", "var/tmp", "root/.ansible"):
        target = root / path
        if target.is_dir():
            for child in target.iterdir():
                if child.name in ("partial", "lock"):
                    continue
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
    for log_file in (root / "var/log").rglob("*"):
        if log_file.is_file():
            log_file.write_bytes(b"")


def assemble(root: Path, work: Path, out_img: Path) -> None:
    used = int(subprocess.run(["du", "-sxm", str(root)], check=True, capture_output=True,
                              text=True).stdout.split()[0])
    boot_used = int(subprocess.run(["du", "-sm", str(root / "boot/firmware")], check=True,
                                   capture_output=True, text=True).stdout.split()[0])
    # Headroom for the first boot; the root file system grows to the card anyway.
    root_mb = ((used - boot_used) * 13 // 10 + 300 + 63) // 64 * 64
    template = (IMAGE_DIR / "genimage.cfg.in").read_text()
    config = template.format(
        image=out_img.name, boot_label=BOOT_LABEL, boot_size=f"{BOOT_SIZE_MB}M",
        root_label=ROOT_LABEL, root_size=f"{root_mb}M",
    )
    gen = work / "genimage"
    if gen.exists():
        shutil.rmtree(gen)
    (gen / "tmp").mkdir(parents=True)
    (gen / "input").mkdir()
    (gen / "genimage.cfg").write_text(config)
    out_img.parent.mkdir(parents=True, exist_ok=True)
    out_img.unlink(missing_ok=True)
    run("genimage", "--config", gen / "genimage.cfg", "--rootpath", root,
        "--tmppath", gen / "tmp", "--inputpath", gen / "input",
        "--outputpath", out_img.parent)
    for leftover in ("boot.vfat", "root.ext4"):
        (out_img.parent / leftover).unlink(missing_ok=True)


@contextlib.contextmanager
def base_lock(cache: Path):
    """Exclusive use of the cache's base tarball while it is checked or built."""
    import fcntl

    with open(cache / "base.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path,
                        default=Path(os.environ.get("SOLARGW_IMAGE_CACHE", "/var/cache/solargw-image")))
    parser.add_argument("--output-dir", type=Path, default=REPO / "build")
    parser.add_argument("--mirror", default=os.environ.get("SOLARGW_MIRROR", DEFAULT_MIRROR))
    parser.add_argument("--rebuild-base", action="store_true", help="ignore the cached base rootfs")
    parser.add_argument("--no-compress", action="store_true", help="stop after the raw .img")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("the image build needs root (debootstrap, chroot)")

    timings: dict[str, float] = {}
    started = time.monotonic()
    cache: Path = args.cache_dir.resolve()
    cache.mkdir(parents=True, exist_ok=True)
    work = args.output_dir.resolve() / "work"
    work.mkdir(parents=True, exist_ok=True)
    ver = version()
    name = f"solargw-{ver}-arm64"
    out_img = args.output_dir.resolve() / f"{name}.img"
    packages = role_packages()

    with stage("binfmt", timings):
        register_binfmt()
    key = base_key(args.mirror, packages)
    tarball = cache / f"base-{SUITE}-arm64-{key}.tar.zst"
    with base_lock(cache):  # another checkout may be building the same base right now
        cold = args.rebuild_base or not tarball.exists()
        with stage("base" if cold else "base (cached)", timings):
            if cold:
                build_base(cache / "work", cache, args.mirror, packages, tarball)
            log(f"base rootfs: {tarball} ({tarball.stat().st_size / 1e6:.0f} MB)")
            tarball.touch()  # in use: other checkouts' bases are dropped after a week unused
            for stale in cache.glob(f"base-{SUITE}-arm64-*.tar.zst"):
                if stale != tarball and time.time() - stale.stat().st_mtime > 7 * 86400:
                    stale.unlink()
    root = work / "rootfs"
    with stage("rootfs", timings):
        if root.exists():
            run("rm", "-rf", "--one-file-system", root)
        root.mkdir()
        run("tar", "--zstd", "--numeric-owner", "--xattrs", "--xattrs-include=*", "--acls",
            "-C", root, "-xpf", tarball)
    with stage("provision", timings):
        provision(root, args.verbose)
    with stage("finalize", timings):
        finalize(root)
    with stage("genimage", timings):
        assemble(root, work, out_img)
    log(f"image: {out_img} ({out_img.stat().st_size / 1e6:.0f} MB, "
        f"{out_img.stat().st_blocks * 512 / 1e6:.0f} MB allocated)")
    if not args.no_compress:
        with stage("compress", timings):
            xz = out_img.with_name(out_img.name + ".xz")
            with open(xz, "wb") as handle:
                run("xz", "-3", "-T0", "-c", out_img, stdout=handle)
            digest = hashlib.sha256(xz.read_bytes()).hexdigest()
            xz.with_name(xz.name + ".sha256").write_text(f"{digest}  {xz.name}\n")
        log(f"compressed: {xz} ({xz.stat().st_size / 1e6:.0f} MB)")
    total = time.monotonic() - started
    summary = ", ".join(f"{k} {v:.0f}s" for k, v in timings.items())
    log(f"{'cold' if cold else 'warm'} build: {total:.0f} s ({summary})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
