#!/usr/bin/env python3
"""Bundle the appliance and its dependencies for an offline install on the Pi.

Runs on the Ansible controller: builds a wheel of this repository (from a clean
copy of its sources, with fixed timestamps), downloads the dependencies' wheels
for the target (CPython 3.13 on aarch64 glibc, Debian 13) and packs them into
one tar whose bytes only change when a wheel does. The playbook copies that tar
and installs from it with ``pip --no-index``: the target needs no internet
access and the copy task is what makes a second run report no change.

Usage: wheelhouse.py OUTPUT.tar [MACHINE [PYTHON_VERSION]]   (default aarch64 3.13;
prints the app wheel's file name)
"""
from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MANYLINUX = ("manylinux_2_36", "manylinux_2_28", "manylinux_2_17", "manylinux2014", "linux")
SOURCES = ("appliance", "pyproject.toml", "README.md")
EPOCH = "315532800"  # 1980-01-01, the earliest time a zip entry can carry


def pip(*args: str, env: dict[str, str] | None = None) -> None:
    done = subprocess.run([sys.executable, "-m", "pip", "-q", *args], env=env,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"pip {args[0]} failed (exit {done.returncode})")


def build(output: Path, machine: str = "aarch64", python_version: str = "3.13") -> str:
    with tempfile.TemporaryDirectory(prefix="solargw-wheelhouse-") as tmp:
        src, wheels = Path(tmp) / "src", Path(tmp) / "wheels"
        src.mkdir()
        for name in SOURCES:
            path = REPO / name
            if path.is_dir():
                shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy(path, src / name)
        env = dict(os.environ, SOURCE_DATE_EPOCH=EPOCH, PIP_DISABLE_PIP_VERSION_CHECK="1")
        pip("wheel", "--no-deps", "-w", str(wheels), str(src), env=env)
        (app,) = wheels.glob("solargw-*.whl")
        platform_args = [arg for tag in MANYLINUX for arg in ("--platform", f"{tag}_{machine}")]
        pip("download", "-d", str(wheels), "--only-binary=:all:", *platform_args,
            "--python-version", python_version, "--implementation", "cp", str(app), env=env)
        payload = io.BytesIO()
        with tarfile.open(fileobj=payload, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for wheel in sorted(wheels.glob("*.whl")):
                info = tarfile.TarInfo(wheel.name)
                info.size, info.mtime, info.mode = wheel.stat().st_size, int(EPOCH), 0o644
                with open(wheel, "rb") as handle:
                    tar.addfile(info, handle)
        output.parent.mkdir(parents=True, exist_ok=True)
        if not output.exists() or output.read_bytes() != payload.getvalue():
            output.write_bytes(payload.getvalue())
        return app.name


if __name__ == "__main__":
    if not 2 <= len(sys.argv) <= 4:
        raise SystemExit("usage: wheelhouse.py OUTPUT.tar [MACHINE [PYTHON_VERSION]]")
    print(build(Path(sys.argv[1]), *sys.argv[2:]))
