"""``solargw decode``: decode NEP bodies, Enecsys frames and ``WS=`` lines pasted on the command line."""
from __future__ import annotations

import argparse
import json
import time
from typing import Any

from appliance.cli import CommandError
from appliance.fields import unit_for
from appliance.protocols import nep
from appliance.protocols.detect import decode_text
from appliance.protocols.enecsys import Handshake
from appliance.reading import FrameError, Reading

USAGE = """\
FRAME is a NEP body or an Enecsys frame in hex (spaces and colons allowed), or a
WS= line from a genuine Enecsys gateway (quote it). Examples:
  solargw decode 7926004014ffff...395f
  solargw decode --model bdm800 --json '79 26 00 40 14 ...'
  solargw decode 'WS=62_2BQCaxjQAALBeIQEAAAGGFDADiAAAEAAOA2sxAOkWAXIEVAAADC'
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "decode",
        help="decode inverter frames given in hex or as WS= lines",
        description="Decode NEP and Enecsys frames: every field with its unit and raw value, "
        "the checksum verdict and the decoder's notes.",
        epilog=USAGE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", default="auto", choices=nep.MODELS,
                        help="NEP model whose scales to use (default: auto, guessed from the packet)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per frame")
    parser.add_argument("frames", nargs="+", metavar="FRAME", help="hex frame or WS= line")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    received_at = time.time()
    decoded = []
    for number, text in enumerate(args.frames, 1):
        try:
            decoded.append(decode_text(text, model=args.model, received_at=received_at))
        except FrameError as exc:
            where = f"frame {number}: " if len(args.frames) > 1 else ""
            raise CommandError(f"{where}{exc}") from None
    for item in decoded:
        if args.json:
            print(json.dumps(as_json(item), ensure_ascii=False))
        else:
            print(as_text(item))
    return 0


def as_json(item: Reading | Handshake) -> dict[str, Any]:
    if isinstance(item, Handshake):
        return {
            "family": "enecsys", "kind": "handshake", "step": item.step, "serial": item.serial,
            "ieee": item.ieee_hex, "checksum_ok": item.checksum_ok, "detail": item.detail.hex(),
            "frame": item.frame.hex(),
        }
    return {
        "family": item.family, "serial": item.serial, "model": item.model, "model_guessed": item.model_guessed,
        "kind": item.kind, "timestamp": item.timestamp, "checksum_ok": item.checksum_ok,
        "fields": dict(item.fields), "units": {name: unit_for(name) for name in item.fields if unit_for(name)},
        "raw": dict(item.raw),
        "energy": {"kind": item.energy.kind, "wh": item.energy.wh} if item.energy else None,
        "notes": list(item.notes), "frame": item.frame.hex(),
    }


def _show(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else str(round(value, 4))
    if isinstance(value, tuple):
        return ", ".join(value) if value else "none"
    return str(value)


def as_text(item: Reading | Handshake) -> str:
    checksum = "ok" if item.checksum_ok else "FAILED"
    if isinstance(item, Handshake):
        return "\n".join([
            f"enecsys handshake {item.step}",
            f"  serial    {item.serial}",
            f"  ieee      {item.ieee_hex}",
            f"  detail    {item.detail.hex(' ')}",
            f"  checksum  {checksum}",
        ])
    model = item.model or "unknown"
    if item.model_guessed:
        model += " (guessed)"
    lines = [
        f"{item.family} {item.kind}",
        f"  serial    {item.serial}",
        f"  model     {model}",
        f"  checksum  {checksum}" + ("" if item.checksum_ok else "  (would not be recorded)"),
    ]
    width = max(len(name) for name in item.fields)
    for name, value in item.fields.items():
        shown = _show(value)
        unit = unit_for(name)
        if unit and value is not None:
            shown += f" {unit}"
        line = f"  {name:<{width}}  {shown}"
        if name in item.raw and item.raw[name] != value:
            line = f"{line:<{width + 26}}  raw {item.raw[name]}"
        lines.append(line)
    shown_names = set(item.fields)
    extra_raw = {name: value for name, value in item.raw.items() if name not in shown_names}
    if extra_raw:
        lines.append("  raw       " + ", ".join(f"{name}={value}" for name, value in extra_raw.items()))
    if item.energy:
        lines.append(f"  energy    {item.energy.kind} counter {_show(item.energy.wh)} Wh")
    lines.extend(f"  note: {note}" for note in item.notes)
    return "\n".join(lines)
