"""Synthetic Z-Stack images for the firmware tests.

Shaped like a real CC2652 build where it matters: the default key arrays in a
row (distributed key, network key, TC link key), an MT version string with a
build-date revision, and a CCFG page at the end of 352 KB flash.
"""
from __future__ import annotations

import io
import random
from pathlib import Path

from intelhex import IntelHex

ENECSYS_KEY = b"ENCSYS-SOLAR-NET"
ALLIANCE_KEY = b"ZigBeeAlliance09"
DISTRIBUTED_KEY = bytes(range(0xD0, 0xE0))
NETWORK_KEY = bytes.fromhex("01030507090b0d0f00020406080a0c0d")

FLASH_352K = 0x58000
KEYS_AT = 0x2F3C0
VERSION_AT = 0x31A08
GOOD_BL_CONFIG = 0xC5FE0FC5  # bootloader on, backdoor DIO15 active low (the known-good build)


def mt_version(revision: int, product: int = 1, version: tuple[int, int, int] = (2, 7, 1)) -> bytes:
    return bytes([2, product, *version]) + revision.to_bytes(4, "little")


def ccfg(bl_config: int) -> bytes:
    page = bytearray(b"\xff" * 0x58)
    page[0x30:0x34] = bl_config.to_bytes(4, "little")
    page[0x44:0x48] = (0).to_bytes(4, "little")  # IMAGE_VALID_CONF: vector table at 0
    return bytes(page)


def make_image(
    tc_key: bytes = ENECSYS_KEY,
    *,
    revision: int | None = 20220219,
    bl_config: int | None = GOOD_BL_CONFIG,
    flash_size: int = FLASH_352K,
    seed: int = 1,
) -> IntelHex:
    rng = random.Random(seed)
    image = IntelHex()
    image.puts(0x0, bytes(rng.getrandbits(8) for _ in range(0x4000)))  # "code"
    image.puts(KEYS_AT, DISTRIBUTED_KEY + NETWORK_KEY + tc_key)
    image.puts(KEYS_AT + 0x200, bytes(rng.getrandbits(8) for _ in range(0x400)))
    if revision is not None:
        image.puts(VERSION_AT, mt_version(revision))
    if bl_config is not None:
        image.puts(flash_size - 0x58, ccfg(bl_config))
    return image


def hex_text(image: IntelHex) -> str:
    out = io.StringIO()
    image.write_hex_file(out)
    return out.getvalue()


def write(path: Path, image: IntelHex) -> Path:
    path.write_text(hex_text(image))
    return path


def with_bad_checksum(text: str, line: int = 3) -> str:
    lines = text.splitlines(keepends=True)
    record = lines[line].rstrip("\n")
    last = int(record[-2:], 16)
    lines[line] = f"{record[:-2]}{(last + 1) & 0xFF:02X}\n"
    return "".join(lines)


def truncated(text: str) -> str:
    """Cut in the middle of a record, as an interrupted download leaves it."""
    return text[: len(text) // 2]


def cut_at_line(text: str) -> str:
    """Cut on a line boundary: every record is well formed, the EOF record is missing."""
    lines = text.splitlines(keepends=True)
    return "".join(lines[: len(lines) // 2])
