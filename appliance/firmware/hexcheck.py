"""Static analysis of a Z-Stack coordinator image (Intel HEX) for the Enecsys network.

What is looked for, and why:

- **TC link key.** Z-Stack keeps its default keys as constant arrays laid out one
  after the other: the distributed global link key (``D0 D1 .. DF``), the default
  network key (``01 03 05 07 09 0B 0D 0F 00 02 04 06 08 0A 0C 0D``) and then the
  default trust-center link key. The 16 bytes after the first two are the "key
  slot"; an Enecsys build has ``ENCSYS-SOLAR-NET`` there, a stock one
  ``ZigBeeAlliance09``.
- **Version.** Koenkk's builds put the MT version string into flash as
  ``transport, product, major, minor, maint`` followed by a little-endian u32
  "code revision" that is the build date (e.g. 20220219). ``SYS.Version``
  returns the same bytes at run time.
- **CCFG.** The last 88 bytes of flash on a CC26x2/CC13x2. ``BL_CONFIG`` decides
  whether the ROM serial bootloader stays reachable; without it a Sonoff stick
  can no longer be flashed over USB.
"""
from __future__ import annotations

import dataclasses
import datetime
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

from intelhex import IntelHex, IntelHexError

from appliance.protocols import enecsys

ENECSYS_KEY = enecsys.TC_LINK_KEY
ALLIANCE_KEY = b"ZigBeeAlliance09"
DISTRIBUTED_KEY = bytes(range(0xD0, 0xE0))
DEFAULT_NETWORK_KEY = bytes.fromhex("01030507090b0d0f00020406080a0c0d")
KEY_NAMES = {ENECSYS_KEY: "Enecsys (ENCSYS-SOLAR-NET)", ALLIANCE_KEY: "standard (ZigBeeAlliance09)"}

#: First Koenkk build that forwards frames whose profile id does not match the endpoint.
PROFILE_FORWARDING_SINCE = 20210708

# CCFG: the last 0x58 bytes of flash; BL_CONFIG sits 0x30 bytes in.
CCFG_SIZE = 0x58
BL_CONFIG_OFFSET = 0x30
FLASH_SIZES = {0x58000: "352 KB flash: CC2652R/RB/P, CC1352P", 0xB0000: "704 KB flash: CC2652R7, CC1352P7"}
BOOTLOADER_ENABLE_VALUE = 0xC5

# transport rev 2, product 0..2, major 2, minor/maint one digit, then the u32 revision.
_MT_VERSION = re.compile(rb"(?=\x02[\x00-\x02]\x02[\x00-\x0f][\x00-\x0f](....))", re.DOTALL)


class HexError(ValueError):
    """The file cannot be read as an Intel HEX image."""


@dataclass(frozen=True)
class Bootloader:
    """The decoded CCFG ``BL_CONFIG`` word."""

    address: int
    config: int

    @property
    def enabled(self) -> bool:
        return self.config >> 24 == BOOTLOADER_ENABLE_VALUE

    @property
    def backdoor(self) -> bool:
        return self.config & 0xFF == BOOTLOADER_ENABLE_VALUE

    @property
    def pin(self) -> int:
        return (self.config >> 8) & 0xFF

    @property
    def active_high(self) -> bool:
        return bool(self.config & (1 << 16))

    def describe(self) -> str:
        if not self.enabled:
            return "bootloader disabled"
        if not self.backdoor:
            return "bootloader enabled, backdoor disabled"
        level = "active high" if self.active_high else "active low"
        return f"bootloader enabled, backdoor DIO{self.pin} {level}"


@dataclass(frozen=True)
class FirmwareVersion:
    address: int
    transport: int
    product: int
    major: int
    minor: int
    maint: int
    revision: int

    @property
    def mt_version(self) -> str:
        return f"{self.major}.{self.minor}.{self.maint}"

    @property
    def build_date(self) -> str | None:
        return revision_date(self.revision)


def revision_date(revision: int | None) -> str | None:
    """``20220219`` -> ``"20220219"`` when the number is a real calendar date."""
    if revision is None or not 20150101 <= revision <= 20991231:
        return None
    text = str(revision)
    try:
        datetime.datetime.strptime(text, "%Y%m%d")
    except ValueError:
        return None
    return text


@dataclass
class HexReport:
    path: str
    segments: list[tuple[int, int]]
    key_slot: int | None = None  # address of the TC link key slot, if the defaults were found
    slot_key: bytes | None = None
    enecsys_key_at: list[int] = field(default_factory=list)
    alliance_key_at: list[int] = field(default_factory=list)
    version: FirmwareVersion | None = None
    flash_size: int | None = None
    bootloader: Bootloader | None = None

    @property
    def enecsys_in_slot(self) -> bool:
        return self.slot_key == ENECSYS_KEY

    @property
    def good(self) -> bool:
        return not self.problems()

    def problems(self) -> list[str]:
        """Reasons the image is not good for Enecsys; empty when it is."""
        found: list[str] = []
        if self.key_slot is None:
            where = (
                f" (ENCSYS-SOLAR-NET appears at {_addresses(self.enecsys_key_at)}, "
                "but not after the default keys)"
                if self.enecsys_key_at
                else ""
            )
            found.append(
                "Z-Stack's default network key was not found, so the TC "
                f"link key cannot be located: not a Z-Stack 3 coordinator image?{where}"
            )
        elif self.slot_key == ALLIANCE_KEY:
            found.append(
                "the TC link key is the standard ZigBeeAlliance09 key (a stock build): "
                "Enecsys inverters will not join; build with firmware/build.py"
            )
        elif self.slot_key != ENECSYS_KEY:
            found.append(
                f"the TC link key is {self.slot_key.hex() if self.slot_key else '?'}, "
                "not ENCSYS-SOLAR-NET: Enecsys inverters will not join"
            )
        if self.bootloader is None:
            found.append(
                "no CCFG page at the end of flash: the image does not say whether the ROM "
                "bootloader stays enabled"
            )
        elif not self.bootloader.enabled or not self.bootloader.backdoor:
            found.append(
                f"{self.bootloader.describe()} (BL_CONFIG 0x{self.bootloader.config:08X}): "
                "after flashing, the stick could only be re-flashed with a JTAG debugger"
            )
        revision = self.version.revision if self.version else None
        if revision_date(revision) and revision < PROFILE_FORWARDING_SINCE:
            found.append(
                f"build {revision} predates {PROFILE_FORWARDING_SINCE}: it drops frames whose "
                "profile id does not match (Enecsys uses 0xC00F); use a newer Koenkk base"
            )
        return found

    def notes(self) -> list[str]:
        found: list[str] = []
        if self.alliance_key_at and self.enecsys_in_slot:
            found.append("ZigBeeAlliance09 also appears in the image (normal: Z-Stack uses it elsewhere)")
        if self.version is None:
            found.append("no MT version string with a build date found (not a Koenkk-style build?)")
        elif self.version.build_date is None:
            found.append(f"code revision {self.version.revision} is not a date")
        if self.bootloader and self.bootloader.backdoor and (self.bootloader.pin, self.bootloader.active_high) != (15, False):
            found.append(
                "the backdoor is not DIO15 active low: the Sonoff dongle's BOOT button and "
                "auto-bootloader use DIO15 active low"
            )
        return found

    def lines(self) -> list[str]:
        """The human-readable report, verdict last."""
        out = [f"file: {self.path}"]
        if self.segments:
            low, high = self.segments[0][0], self.segments[-1][1]
            total = sum(end - start for start, end in self.segments)
            out.append(f"data: {total} bytes in {len(self.segments)} segment(s), 0x{low:05X}..0x{high - 1:05X}")
        if self.key_slot is None:
            out.append("TC link key: not found (no default network key to locate it by)")
        else:
            name = KEY_NAMES.get(self.slot_key or b"", (self.slot_key or b"").hex())
            out.append(f"TC link key at 0x{self.key_slot:05X}: {name}")
        out.append(f"ENCSYS-SOLAR-NET: {_presence(self.enecsys_key_at)}")
        out.append(f"ZigBeeAlliance09: {_presence(self.alliance_key_at)}")
        if self.version:
            v = self.version
            out.append(
                f"version: MT {v.mt_version}, product id {v.product}, "
                f"build {v.build_date or 'date not found'} (at 0x{v.address:05X})"
            )
        else:
            out.append("version: not found")
        if self.bootloader:
            out.append(
                f"CCFG ({FLASH_SIZES.get(self.flash_size or 0, 'flash')}): BL_CONFIG "
                f"0x{self.bootloader.config:08X} at 0x{self.bootloader.address:05X}: "
                f"{self.bootloader.describe()}"
            )
        else:
            out.append("CCFG: not found")
        out += [f"note: {note}" for note in self.notes()]
        problems = self.problems()
        out += [f"problem: {problem}" for problem in problems]
        out.append("verdict: good for Enecsys" if not problems else "verdict: NOT good for Enecsys")
        return out

    def to_dict(self) -> dict:
        version = dataclasses.asdict(self.version) if self.version else None
        if version:
            version.update(mt_version=self.version.mt_version, build_date=self.version.build_date)
        bootloader = None
        if self.bootloader:
            b = self.bootloader
            bootloader = {
                "address": b.address, "config": f"0x{b.config:08X}", "enabled": b.enabled,
                "backdoor": b.backdoor, "pin": b.pin, "active_high": b.active_high,
                "description": b.describe(),
            }
        return {
            "file": self.path,
            "good_for_enecsys": self.good,
            "tc_link_key": {
                "slot_address": self.key_slot,
                "key_hex": self.slot_key.hex() if self.slot_key else None,
                "is_enecsys": self.enecsys_in_slot,
                "is_zigbee_alliance09": self.slot_key == ALLIANCE_KEY,
            },
            "enecsys_key_at": self.enecsys_key_at,
            "zigbee_alliance09_at": self.alliance_key_at,
            "version": version,
            "flash_size": self.flash_size,
            "bootloader": bootloader,
            "notes": self.notes(),
            "problems": self.problems(),
        }


def load(path: str | Path) -> IntelHex:
    """Read an Intel HEX file; any defect is one clear ``HexError``."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise HexError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not raw.strip():
        raise HexError(f"{path} is empty")
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise HexError(f"{path} is not an Intel HEX file (binary data; a .bin image?)") from None
    try:
        image = IntelHex(io.StringIO(text))
    except IntelHexError as exc:
        records = len(text.rstrip().splitlines())
        if getattr(exc, "line", None) == records and records > 1:
            raise HexError(f"{path} is truncated: its last record (line {records}) is incomplete") from None
        raise HexError(f"{path} is not a valid Intel HEX file: {exc}") from None
    if not any(line.strip().upper().startswith(":00000001") for line in text.splitlines()):
        raise HexError(f"{path} has no end-of-file record: the file is truncated")
    if not image.segments():
        raise HexError(f"{path} holds no data")
    return image


def analyse(image: IntelHex, path: str = "") -> HexReport:
    segments = image.segments()
    report = HexReport(path=path, segments=segments)
    low, high = segments[0][0], segments[-1][1]
    blob = image.tobinstr(start=low, end=high - 1)

    def addr(offset: int) -> int:
        return low + offset

    report.enecsys_key_at = [addr(m.start()) for m in re.finditer(re.escape(ENECSYS_KEY), blob)]
    report.alliance_key_at = [addr(m.start()) for m in re.finditer(re.escape(ALLIANCE_KEY), blob)]
    # Builds without the joining-device code lack the distributed key: fall back to the network key.
    for defaults in (DISTRIBUTED_KEY + DEFAULT_NETWORK_KEY, DEFAULT_NETWORK_KEY):
        anchor = blob.find(defaults)
        if anchor >= 0:
            slot = anchor + len(defaults)
            report.key_slot = addr(slot)
            report.slot_key = blob[slot : slot + 16]
            break
    for match in _MT_VERSION.finditer(blob):
        revision = int.from_bytes(match.group(1), "little")
        if revision_date(revision):
            head = blob[match.start() : match.start() + 5]
            report.version = FirmwareVersion(addr(match.start()), *head, revision=revision)
            break
    for size in FLASH_SIZES:
        bl_address = size - CCFG_SIZE + BL_CONFIG_OFFSET
        if _covered(segments, bl_address, 4):
            report.flash_size = size
            word = image.tobinstr(start=bl_address, size=4)
            report.bootloader = Bootloader(bl_address, int.from_bytes(word, "little"))
            break
    return report


def check_file(path: str | Path) -> HexReport:
    return analyse(load(path), str(path))


def _covered(segments: list[tuple[int, int]], start: int, size: int) -> bool:
    return any(low <= start and start + size <= high for low, high in segments)


def _addresses(addresses: list[int]) -> str:
    return ", ".join(f"0x{a:05X}" for a in addresses)


def _presence(addresses: list[int]) -> str:
    return f"present at {_addresses(addresses)}" if addresses else "absent"
