"""Synthetic Z-Stack images for the firmware tests.

Shaped like a real CC2652 build where it matters: the default key arrays in a
row, an MT version string with a build-date revision, and a CCFG page at the
end of 352 KB flash.

``make_image`` has the old layout (distributed key, TI's default network key,
TC link key). ``MEASURED`` holds the layouts measured in three real images
(the images themselves are not ours to commit): the same bytes at the same
flash addresses around the TC link key, with BL_CONFIG 0xC5FE0FC5 at 0x57FD8
and MT 2.7.1 as in the originals; the code around them is random filler.
"""
from __future__ import annotations

import io
import random
from dataclasses import dataclass
from pathlib import Path

from intelhex import IntelHex

ENECSYS_KEY = b"ENCSYS-SOLAR-NET"
ALLIANCE_KEY = b"ZigBeeAlliance09"
DISTRIBUTED_KEY = bytes(range(0xD0, 0xE0))
NETWORK_KEY = bytes.fromhex("01030507090b0d0f00020406080a0c0d")
ZEROS = bytes(16)

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


@dataclass(frozen=True)
class Layout:
    """A measured key layout: ``(flash address, bytes)`` runs as found in a real image."""

    name: str
    revision: int
    runs: tuple[tuple[int, bytes], ...]

    @property
    def tc_key_at(self) -> int:
        return next(address for address, data in self.runs if data[:16] in (ENECSYS_KEY, ALLIANCE_KEY))

    @property
    def span(self) -> tuple[int, int]:
        return self.runs[0][0], max(address + len(data) for address, data in self.runs)


MEASURED = {
    "enecsys-20220219": Layout(  # the seed's known-good Enecsys build, CC1352P-2 config
        "seed Enecsys build 20220219", 20220219,
        ((0x27FFC, DISTRIBUTED_KEY), (0x2800C, ZEROS),
         (0x2801C, ENECSYS_KEY + bytes.fromhex("0a0000000200000004"))),
    ),
    "stock-20220219": Layout(  # Koenkk CC1352P2_CC2652P_other_coordinator_20220219
        "Koenkk stock 20220219", 20220219,
        ((0x28068, DISTRIBUTED_KEY), (0x28078, ZEROS), (0x28088, ALLIANCE_KEY)),
    ),
    "stock-20250321": Layout(  # Koenkk CC1352P2_CC2652P_other_coordinator_20250321: D0..DF comes last
        "Koenkk stock 20250321", 20250321,
        ((0x2BBFC, ZEROS), (0x2BC0C, ALLIANCE_KEY), (0x2BC1C, DISTRIBUTED_KEY)),
    ),
}


def make_measured(layout: Layout, *, tc_key: bytes | None = None, zero_surroundings: bool = False,
                  seed: int = 1) -> IntelHex:
    """An image with ``layout``'s bytes at their real addresses (``tc_key`` swaps the key in the slot).

    ``zero_surroundings`` puts 32 zero bytes on each side of the layout, as flash often has,
    so a checker cannot rely on random neighbours to rule out a wrong slot."""
    rng = random.Random(seed)
    image = IntelHex()
    image.puts(0x0, bytes(rng.getrandbits(8) for _ in range(0x4000)))
    low, high = layout.span
    image.puts(low - 0x800, bytes(rng.getrandbits(8) for _ in range(high - low + 0x1000)))
    if zero_surroundings:
        image.puts(low - 32, bytes(32))
        image.puts(high, bytes(32))
    for address, data in layout.runs:
        if tc_key is not None and address == layout.tc_key_at:
            data = tc_key + data[16:]
        image.puts(address, data)
    image.puts(VERSION_AT, mt_version(layout.revision))
    image.puts(FLASH_352K - 0x58, ccfg(GOOD_BL_CONFIG))
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
