"""``solargw firstboot``: apply the boot partition's solargw.toml (run by solargw-firstboot.service)."""
from __future__ import annotations

import argparse
from pathlib import Path

from appliance.cli import CommandError
from appliance.settings import SettingsError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "firstboot",
        help="apply the boot partition's solargw.toml and generate per-device secrets",
        description="Apply the first-boot settings file, generate what it leaves unset (access point "
        "passphrase, session key, machine id, SSH host keys), then remove its secrets. "
        "Safe to run again: a second run changes nothing.",
    )
    parser.add_argument("--boot-dir", type=Path, default=Path("/boot/firmware"),
                        help="where the boot partition is mounted (default: /boot/firmware)")
    parser.add_argument("--root", type=Path, default=Path("/"),
                        help="root of the system to configure (default: /)")
    parser.add_argument("--settings", type=Path, default=None,
                        help="settings file (default: <root>/etc/solargw/solargw.toml)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from appliance.firstboot import FirstBoot, FirstBootError  # werkzeug & co: not for every command

    if not args.root.is_dir():
        raise CommandError(f"--root {args.root}: no such directory")
    try:
        result = FirstBoot(args.boot_dir, root=args.root, settings_path=args.settings).run()
    except (FirstBootError, SettingsError) as exc:
        raise CommandError(str(exc)) from None
    except PermissionError as exc:
        raise CommandError(f"cannot write {exc.filename}: permission denied (run as root)") from None
    except OSError as exc:
        raise CommandError(f"{exc.filename or args.root}: {exc.strerror or exc}") from None
    for line in result.repaired:
        print(f"repaired: {line}")
    for line in result.applied:
        print(f"applied: {line}")
    for line in result.generated:
        print(f"generated: {line}")
    if result.boot_file_scrubbed:
        print(f"removed the secrets from {args.boot_dir / 'solargw.toml'}")
    if not result.changed:
        print("nothing to do")
    return 0
