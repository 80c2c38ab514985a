#!/usr/bin/env python3
"""The Home Assistant the ``ha`` test tier runs: a pinned release in its own Debian root file system.

    python tests/ha_rootfs.py            # build it unless cached (what `make ha-rootfs` runs); prints its path
    python tests/ha_rootfs.py --rebuild  # build it again

Home Assistant needs a newer Python than Debian 12 and 13 have, so it gets a ``debootstrap
--variant=minbase`` root file system of the Debian release that has one, with a venv in
``/opt/ha``: ``homeassistant`` at :data:`HA_VERSION`, then the requirements of every integration
the test loads (read from Home Assistant's own manifests, pinned by its own constraints file),
all installed by uv (pip cannot resolve Home Assistant's dependencies). Nothing is downloaded at
test time: the test runs Home Assistant with ``--skip-pip``.

The result is cached outside the repository in ``$SOLARGW_HA_CACHE`` (default
``/var/cache/solargw-ha``), one directory per key (everything pinned below plus this file's
recipe), shared by every checkout: a version change builds a new one, unused ones are dropped
after a week. Building holds a lock on the cache. Needs root (debootstrap, chroot).

To try the next Home Assistant release, change :data:`HA_VERSION` (or run with
``SOLARGW_HA_VERSION=2026.12.0``) and run ``make test-ha``.

This file runs twice: on the host (Debian's Python), and inside the new root file system with
``--requirements`` (its Python, Home Assistant importable). It needs only the standard library.
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, Sequence

HA_VERSION = os.environ.get("SOLARGW_HA_VERSION") or "2026.11.0"
"""The Home Assistant release the tier tests. The next release: change this line."""
SUITE = "forky"
"""Debian release of the root file system: Home Assistant 2026.3 and later need Python >= 3.14.2."""
DEBOOTSTRAP_SCRIPTS = ("forky", "sid")
"""Debian 12's debootstrap has no ``forky`` script; ``sid``'s bootstraps testing the same way."""
DEBIAN_PACKAGES = ("python3", "python3-venv", "ca-certificates", "g++", "python3-dev")
"""g++ and python3-dev: a few requirements (pymicro-vad, pyspeex-noise) have no wheel for Python 3.14."""
UV_VERSION = "0.13.9"
"""The uv that installs Home Assistant (which then brings the uv it pins itself)."""
INTEGRATIONS = ("api", "websocket_api", "config", "onboarding", "energy", "history", "recorder", "mqtt")
"""What the test configures (configuration.yaml, plus the MQTT config entry); Home Assistant's
default integrations come on top."""
RECIPE = "1"
"""Bumped when the build steps change in a way the key cannot see."""
DEFAULT_MIRROR = "http://deb.debian.org/debian"
VENV = "/opt/ha"
HA_PYTHON = f"{VENV}/bin/python"
CHROOT_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
UNUSED_DAYS = 7


def cache_dir() -> Path:
    return Path(os.environ.get("SOLARGW_HA_CACHE") or "/var/cache/solargw-ha")


def mirror() -> str:
    return os.environ.get("SOLARGW_MIRROR") or DEFAULT_MIRROR


def key() -> str:
    digest = hashlib.sha256()
    for part in (RECIPE, SUITE, mirror(), HA_VERSION, UV_VERSION, *DEBIAN_PACKAGES, *INTEGRATIONS):
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()[:12]


def rootfs_path() -> Path:
    """Where the root file system for the pinned versions lives (built or not)."""
    return cache_dir() / f"ha-{HA_VERSION}-{SUITE}-{key()}" / "rootfs"


def is_built(root: Path | None = None) -> bool:
    root = root or rootfs_path()
    return (root.parent / "versions.json").exists()


def versions(root: Path | None = None) -> dict[str, str]:
    """What the cached root file system holds (Home Assistant, Python, Debian release, when built)."""
    return json.loads(((root or rootfs_path()).parent / "versions.json").read_text())


# -- running things inside it --------------------------------------------------------------------

def chroot_command(root: Path, argv: Sequence[str], *, env: dict[str, str] | None = None,
                   binds: Sequence[tuple[str | Path, str, bool]] = (), read_only: bool = False) -> list[str]:
    """``argv`` run inside ``root``, in a mount namespace of its own.

    The pseudo file systems (``/proc``, ``/dev``) and ``binds`` (``(host path, path inside,
    writable)``) are mounted in that namespace only: they vanish with its last process, even
    one killed with SIGKILL, and never show on the host. ``read_only`` mounts the root file
    system read-only (with a tmpfs on ``/tmp``), so a test cannot change the shared cache.
    Everything is ``exec``-ed: the returned command's process is ``argv``'s process, and it gets
    SIGTERM if the process that started it dies first (a killed test run leaves nothing behind).
    """
    r = shlex.quote(str(root))
    steps = []
    if read_only:
        steps += [f"mount --bind {r} {r}", f"mount -o remount,bind,ro {r}", f"mount -t tmpfs tmpfs {r}/tmp"]
    steps += [f"mount -t proc proc {r}/proc", f"mount --rbind /dev {r}/dev"]
    for source, target, writable in binds:
        inside = shlex.quote(f"{root}{target}")
        steps.append(f"mount --bind {shlex.quote(str(source))} {inside}")
        if not writable:
            steps.append(f"mount -o remount,bind,ro {inside}")
    variables = {"PATH": CHROOT_PATH, "HOME": "/root", "LANG": "C.UTF-8", **(env or {})}
    inner = ["chroot", str(root), "/usr/bin/env", "-i", *(f"{k}={v}" for k, v in variables.items()), *argv]
    script = " && ".join(steps) + " && exec " + shlex.join(inner)
    return ["setpriv", "--pdeathsig", "SIGTERM", "--",
            "unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-ec", script]


def in_chroot(root: Path, script: str) -> None:
    """Run a shell script inside ``root`` (with the host's CA bundle, for PyPI); raise if it fails."""
    env = {"SSL_CERT_FILE": CA_BUNDLE, "PIP_CERT": CA_BUNDLE, "UV_NATIVE_TLS": "1",
           "PIP_DISABLE_PIP_VERSION_CHECK": "1", "UV_NO_PROGRESS": "1"}
    # The root file system trusts what the host trusts (e.g. a proxy's CA the host was given).
    binds = [("/etc/ssl/certs", "/etc/ssl/certs", False)]
    subprocess.run(chroot_command(root, ["/bin/sh", "-euc", script], env=env, binds=binds), check=True)


# -- building it ---------------------------------------------------------------------------------

def log(message: str) -> None:
    print(f"[ha-rootfs] {message}", flush=True)


@contextlib.contextmanager
def cache_lock() -> Iterator[None]:
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / "lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def debootstrap_script() -> str:
    for name in DEBOOTSTRAP_SCRIPTS:
        path = Path("/usr/share/debootstrap/scripts") / name
        if path.exists():
            return str(path)
    raise SystemExit(f"debootstrap knows none of {', '.join(DEBOOTSTRAP_SCRIPTS)} (make apt-deps)")


def build(final: Path) -> None:
    """Build the root file system in a scratch directory, then move it into place."""
    scratch = final.parent.with_name(final.parent.name + ".partial")
    if scratch.exists():
        subprocess.run(["rm", "-rf", "--one-file-system", str(scratch)], check=True)
    root = scratch / "rootfs"
    debs = cache_dir() / "debs"
    (debs / "partial").mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    log(f"debootstrap {SUITE} ({', '.join(DEBIAN_PACKAGES)}) ...")
    subprocess.run(["debootstrap", "--variant=minbase", f"--cache-dir={debs}",
                    f"--include={','.join(DEBIAN_PACKAGES)}", SUITE, str(root), mirror(),
                    debootstrap_script()], check=True, stdout=subprocess.DEVNULL)
    log(f"debootstrap done in {time.monotonic() - started:.0f} s")
    (root / "config").mkdir()
    shutil.copy(__file__, root / "tmp/ha_rootfs.py")
    step = time.monotonic()
    log(f"venv {VENV}: uv {UV_VERSION}, homeassistant {HA_VERSION} ...")
    constraints = f"{VENV}/lib/python3*/site-packages/homeassistant/package_constraints.txt"  # its own pins
    in_chroot(root, f"""
        python3 -m venv {VENV}
        {VENV}/bin/pip install -q uv=={UV_VERSION}
        {VENV}/bin/uv pip install -q --python {HA_PYTHON} --compile-bytecode homeassistant=={HA_VERSION}
        {HA_PYTHON} /tmp/ha_rootfs.py --requirements {' '.join(INTEGRATIONS)} > /tmp/requirements.txt
        {VENV}/bin/uv pip install -q --python {HA_PYTHON} --compile-bytecode \\
            -r /tmp/requirements.txt -c {constraints}
        {HA_PYTHON} -c 'import sys, homeassistant.const as c; sys.exit(c.__version__ != "{HA_VERSION}")'
        rm -rf /root/.cache /tmp/ha_rootfs.py /var/cache/apt/archives/*.deb /var/lib/apt/lists/*
    """)
    log(f"venv done in {time.monotonic() - step:.0f} s")
    python = subprocess.run(["chroot", str(root), HA_PYTHON, "-c", "import platform; print(platform.python_version())"],
                            check=True, capture_output=True, text=True).stdout.strip()
    requirements = (root / "tmp/requirements.txt").read_text().split()
    (scratch / "versions.json").write_text(json.dumps({
        "homeassistant": HA_VERSION, "python": python, "debian": SUITE, "uv": UV_VERSION,
        "requirements": requirements, "built": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "build_seconds": round(time.monotonic() - started),
    }, indent=2) + "\n")
    if final.parent.exists():
        subprocess.run(["rm", "-rf", "--one-file-system", str(final.parent)], check=True)
    scratch.rename(final.parent)


def drop_unused(keep: Path) -> None:
    for other in cache_dir().glob("ha-*"):
        if other != keep and other.is_dir() and time.time() - other.stat().st_mtime > UNUSED_DAYS * 86400:
            log(f"dropping {other} (unused for {UNUSED_DAYS} days)")
            subprocess.run(["rm", "-rf", "--one-file-system", str(other)], check=False)


def ensure(rebuild: bool = False) -> Path:
    """The root file system for the pinned versions, built first if it is not cached."""
    if os.geteuid() != 0:
        raise SystemExit("building Home Assistant's root file system needs root (debootstrap, chroot)")
    root = rootfs_path()
    with cache_lock():  # another checkout may be building the same one right now
        if rebuild or not is_built(root):
            started = time.monotonic()
            build(root)
            log(f"built {root} in {time.monotonic() - started:.0f} s")
        os.utime(root.parent)  # in use: see drop_unused
        drop_unused(root.parent)
    return root


# -- inside the root file system: the requirements Home Assistant would install ------------------

def requirements(domains: Sequence[str]) -> list[str]:
    """The requirements of ``domains``, Home Assistant's core and default integrations and all
    they depend on: what Home Assistant's own requirement manager installs when it sets them up
    (``dependencies``, ``after_dependencies`` and the discovery integrations a manifest asks for)."""
    import homeassistant
    from homeassistant import bootstrap, requirements as ha_requirements

    components = Path(homeassistant.__file__).parent / "components"
    todo = [*bootstrap.CORE_INTEGRATIONS, *bootstrap.DEFAULT_INTEGRATIONS, *domains]
    seen: set[str] = set()
    found: set[str] = set()
    while todo:
        domain = todo.pop()
        if domain in seen:
            continue
        seen.add(domain)
        manifest_path = components / domain / "manifest.json"
        if not manifest_path.exists():
            raise SystemExit(f"Home Assistant {HA_VERSION} has no integration {domain!r}")
        manifest = json.loads(manifest_path.read_text())
        found.update(manifest.get("requirements", []))
        todo += manifest.get("dependencies", []) + manifest.get("after_dependencies", [])
        todo += [name for name, keys in ha_requirements.DISCOVERY_INTEGRATIONS.items()
                 if any(k in manifest for k in keys)]
    return sorted(found)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rebuild", action="store_true", help="build again even if cached")
    parser.add_argument("--requirements", nargs="+", metavar="DOMAIN", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.requirements:
        print("\n".join(requirements(args.requirements)))
        return 0
    root = ensure(args.rebuild)
    info = versions(root)
    log(f"Home Assistant {info['homeassistant']} on Python {info['python']} (Debian {info['debian']}): {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
