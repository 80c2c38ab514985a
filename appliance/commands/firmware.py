"""``solargw firmware``: check a coordinator image, flash it, verify the stick.

Exit status: 0 good / ready, 1 readable but with problems (listed), 2 unusable
input (unreadable file, missing tool, unreachable stick).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import sys

from appliance.cli import CommandError, load_settings

EPILOG = """\
examples:
  solargw firmware check znp_CC1352P2_CC2652P_launchpad_enecsys_20220219.hex
  solargw firmware flash FILE.hex --device /dev/ttyUSB0 --dry-run
  solargw firmware verify --device /dev/serial/by-id/usb-ITead_Sonoff_Zigbee_3.0_USB_Dongle_Plus_...
See firmware/README.md for building an image with the Enecsys key.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "firmware",
        help="check, flash and verify the Zigbee coordinator firmware",
        description="Coordinator firmware for Enecsys: the Z-Stack image must carry the "
        "ENCSYS-SOLAR-NET trust-center link key and keep the ROM bootloader enabled.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    check = actions.add_parser("check", help="analyse a Z-Stack .hex image (no stick needed)")
    check.add_argument("hexfile", metavar="FILE.hex")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.set_defaults(func=run_check)

    write = actions.add_parser("flash", help="flash an image through the ROM serial bootloader")
    write.add_argument("hexfile", metavar="FILE.hex")
    write.add_argument("--device", required=True, help="serial port, e.g. /dev/ttyUSB0 or COM3")
    write.add_argument("--dry-run", action="store_true", help="print the command, do not run it")
    write.add_argument("--force", action="store_true",
                       help="flash even an image the checker rejects (still warns)")
    write.add_argument("--tool", help="path of cc2538-bsl.py or cc1352_flasher (default: search)")
    write.set_defaults(func=run_flash)

    verify = actions.add_parser("verify", help="ask a connected stick what it runs and how it is set up")
    verify.add_argument("--device", required=True,
                        help="serial port or socket://host:port of the stick")
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    verify.add_argument("--timeout", type=float, default=None,
                        help="seconds to wait for the stick (default: as long as the Zigbee service waits)")
    verify.set_defaults(func=run_verify)


def run_check(args: argparse.Namespace) -> int:
    from appliance.firmware import hexcheck

    try:
        report = hexcheck.check_file(args.hexfile)
    except hexcheck.HexError as exc:
        if args.json:
            print(json.dumps({"file": args.hexfile, "good_for_enecsys": False, "error": str(exc)}))
            return 2
        raise CommandError(f"verdict: unreadable: {exc}") from None
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print("\n".join(report.lines()))
    return 0 if report.good else 1


def run_flash(args: argparse.Namespace) -> int:
    from appliance.firmware import flash, hexcheck

    try:
        report = hexcheck.check_file(args.hexfile)
    except hexcheck.HexError as exc:
        raise CommandError(f"refusing to flash: {exc}") from None
    problems = report.problems()
    if problems:
        for problem in problems:
            print(f"problem: {problem}", file=sys.stderr)
        if not args.force:
            raise CommandError(
                "refusing to flash an image that is not good for Enecsys (--force overrides)"
            )
        print("warning: flashing anyway because of --force", file=sys.stderr)
    try:
        command = flash.flash_command(flash.find_tool(args.tool), args.device, args.hexfile)
    except flash.FlashError as exc:
        raise CommandError(str(exc)) from None
    print(shlex.join(command))
    if args.dry_run:
        return 0
    try:
        status = flash.run(command)
    except flash.FlashError as exc:
        raise CommandError(str(exc)) from None
    if status != 0:
        raise CommandError(
            f"the bootloader tool failed (exit status {status}); unplug the stick, hold its "
            "BOOT button while plugging it back in, and try again"
        )
    print(f"flashed; now run: solargw firmware verify --device {args.device}")
    return 0


def run_verify(args: argparse.Namespace) -> int:
    from appliance.firmware import stick  # zigpy-znp takes a third of a second to import: only here

    timeout = stick.CONNECT_TIMEOUT if args.timeout is None else args.timeout
    if not timeout > 0:
        raise CommandError(f"--timeout {timeout}: expected a number of seconds above 0")
    zigbee = load_settings().zigbee
    try:
        report = asyncio.run(stick.inspect_device(args.device, timeout=timeout))
    except stick.StickError as exc:
        raise CommandError(str(exc)) from None
    if args.json:
        print(json.dumps(report.to_dict(zigbee.pan_id), indent=2))
    else:
        print("\n".join(report.lines(zigbee.pan_id, zigbee.channel)))
    return 0 if not report.problems(zigbee.pan_id) else 1

