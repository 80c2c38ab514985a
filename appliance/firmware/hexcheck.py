"""Static analysis of a Z-Stack coordinator image (Intel HEX) for the Enecsys network.

What is looked for, and why:

- **TC link key.** Z-Stack keeps its default keys as 16-byte constant arrays
  side by side: the distributed global link key (``D0 D1 .. DF``), the default
  network key and the default trust-center link key. Koenkk's builds ship an
  all-zero network key (the host sets a random one when it forms the network);
  TI's own default is ``01 03 05 07 09 0B 0D 0F 00 02 04 06 08 0A 0C 0D``. The
  order varies: measured builds have ``distributed, network, TC link`` (Koenkk
  20220219, the known-good Enecsys build) and ``network, TC link, distributed``
  (Koenkk 20250321). The "key slot" is the 16 bytes that complete either run;
  an Enecsys build has ``ENCSYS-SOLAR-NET`` there, a stock one
  ``ZigBeeAlliance09``. A plain search for both keys backs the slot up, and
  decides alone when no slot is found (a layout not seen yet); the report says
  which it was.
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
from typing import TYPE_CHECKING

from appliance.protocols import enecsys

if TYPE_CHECKING:
    from intelhex import IntelHex

ENECSYS_KEY = enecsys.TC_LINK_KEY
ALLIANCE_KEY = b"ZigBeeAlliance09"
DISTRIBUTED_KEY = bytes(range(0xD0, 0xE0))
DEFAULT_NETWORK_KEY = bytes.fromhex("01030507090b0d0f00020406080a0c0d")
ZERO_NETWORK_KEY = bytes(16)
NETWORK_KEYS = {ZERO_NETWORK_KEY: "all-zero network key", DEFAULT_NETWORK_KEY: "TI's default network key"}
KEY_NAMES = {ENECSYS_KEY: "Enecsys (ENCSYS-SOLAR-NET)", ALLIANCE_KEY: "standard (ZigBeeAlliance09)"}

STANDARD_KEY = "standard key (ZigBeeAlliance09): inverters cannot join"
NOT_AN_IMAGE = "no TC link key found: not a Z-Stack 3 coordinator image?"

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
class KeySlot:
    """Where the TC link key was found, and the default keys that located it."""

    address: int
    key: bytes
    network_key_at: int
    network_key: bytes
    distributed_key_at: int | None  # None: located by TI's default network key alone

    def layout(self) -> str:
        """The default-key arrays in flash order, e.g. ``all-zero network key at 0x2BBFC, ...``."""
        parts = [(self.network_key_at, NETWORK_KEYS[self.network_key]), (self.address, "TC link key")]
        if self.distributed_key_at is not None:
            parts.append((self.distributed_key_at, "distributed key D0..DF"))
        return ", ".join(f"{name} at 0x{address:05X}" for address, name in sorted(parts))


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
    slot: KeySlot | None = None  # the TC link key slot, if the default keys around it were found
    enecsys_key_at: list[int] = field(default_factory=list)
    alliance_key_at: list[int] = field(default_factory=list)
    version: FirmwareVersion | None = None
    flash_size: int | None = None
    bootloader: Bootloader | None = None

    @property
    def key_slot(self) -> int | None:
        return self.slot.address if self.slot else None

    @property
    def slot_key(self) -> bytes | None:
        return self.slot.key if self.slot else None

    @property
    def enecsys_in_slot(self) -> bool:
        return self.slot_key == ENECSYS_KEY

    @property
    def search_result(self) -> str:
        """What a plain search for the two keys finds: ``enecsys``, ``standard``, ``both`` or ``neither``."""
        return {(True, False): "enecsys", (False, True): "standard", (True, True): "both"}.get(
            (bool(self.enecsys_key_at), bool(self.alliance_key_at)), "neither"
        )

    @property
    def good(self) -> bool:
        return not self.problems()

    def key_basis(self) -> str:
        """What the key part of the verdict rests on, in one sentence."""
        found = (
            f"ENCSYS-SOLAR-NET {_presence(self.enecsys_key_at)}, "
            f"ZigBeeAlliance09 {_presence(self.alliance_key_at)}"
        )
        if self.slot is None:
            return (
                "a plain search only (no 16-byte slot next to a default network key and the "
                f"distributed key, in either order): {found}"
            )
        slot_says = {ENECSYS_KEY: "enecsys", ALLIANCE_KEY: "standard"}.get(self.slot.key)
        agreement = "agrees" if slot_says == self.search_result else "does not agree; the slot decides"
        return f"the TC link key slot at 0x{self.slot.address:05X}; a plain search {agreement} ({found})"

    def _key_problem(self) -> tuple[str, str] | None:
        """(headline, advice) when the key is not Enecsys's; None when it is."""
        stock = "a stock build: flash one built with firmware/build.py"
        if self.slot is not None:
            if self.slot.key == ENECSYS_KEY:
                return None
            if self.slot.key == ALLIANCE_KEY:
                return STANDARD_KEY, f"the TC link key slot at 0x{self.slot.address:05X} holds it ({stock})"
            return (
                f"unknown TC link key {self.slot.key.hex()}: inverters cannot join",
                f"the slot at 0x{self.slot.address:05X} holds neither ENCSYS-SOLAR-NET nor ZigBeeAlliance09",
            )
        if self.search_result == "enecsys":
            return None
        if self.search_result == "standard":
            return STANDARD_KEY, f"ZigBeeAlliance09 is in the image and ENCSYS-SOLAR-NET is not ({stock})"
        if self.search_result == "both":
            return (
                "cannot tell which key is the TC link key",
                "both ENCSYS-SOLAR-NET and ZigBeeAlliance09 are in the image and no key slot was "
                f"found next to the default keys (ENCSYS-SOLAR-NET at {_addresses(self.enecsys_key_at)})",
            )
        return NOT_AN_IMAGE, "neither ENCSYS-SOLAR-NET nor ZigBeeAlliance09 nor the default keys are in it"

    def _findings(self) -> list[tuple[str, str]]:
        """(headline, detail) for each reason the image is not good for Enecsys."""
        found: list[tuple[str, str]] = []
        key = self._key_problem()
        if key:
            found.append(key)
        if self.bootloader is None:
            found.append((
                "no CCFG page at the end of flash",
                "the image does not say whether the ROM bootloader stays enabled",
            ))
        elif not self.bootloader.enabled or not self.bootloader.backdoor:
            found.append((
                f"{self.bootloader.describe()} (BL_CONFIG 0x{self.bootloader.config:08X})",
                "after flashing, the stick could only be re-flashed with a JTAG debugger",
            ))
        revision = self.version.revision if self.version else None
        if revision_date(revision) and revision < PROFILE_FORWARDING_SINCE:
            found.append((
                f"build {revision} predates {PROFILE_FORWARDING_SINCE}",
                "it drops frames whose profile id does not match (Enecsys uses 0xC00F); "
                "use a newer Koenkk base",
            ))
        return found

    def problems(self) -> list[str]:
        """Reasons the image is not good for Enecsys; empty when it is."""
        return [f"{headline}; {detail}" for headline, detail in self._findings()]

    def verdict(self) -> str:
        headlines = [headline for headline, _ in self._findings()]
        return "good for Enecsys" if not headlines else "NOT good for Enecsys: " + "; ".join(headlines)

    def notes(self) -> list[str]:
        found: list[str] = []
        if self.slot is None and self.search_result == "enecsys":
            found.append(
                "the key slot was not found (a layout this checker does not know): the verdict on "
                "the key rests on the plain search alone"
            )
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
        if self.slot is None:
            out.append("key layout: not found (no 16-byte slot next to a default network key and D0..DF)")
            out.append("TC link key slot: not found")
        else:
            out.append(f"key layout: {self.slot.layout()}")
            out.append(f"TC link key at 0x{self.slot.address:05X}: {KEY_NAMES.get(self.slot.key, self.slot.key.hex())}")
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
        out += [f"problem: {problem}" for problem in self.problems()]
        out.append(f"key verdict based on: {self.key_basis()}")
        out.append(f"verdict: {self.verdict()}")
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
            "verdict": self.verdict(),
            "tc_link_key": {
                "slot_address": self.key_slot,
                "key_hex": self.slot_key.hex() if self.slot_key else None,
                "layout": self.slot.layout() if self.slot else None,
                "is_enecsys": self.enecsys_in_slot,
                "is_zigbee_alliance09": self.slot_key == ALLIANCE_KEY,
                "plain_search": self.search_result,
                "verdict_based_on": self.key_basis(),
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
    from intelhex import IntelHex, IntelHexError  # here: the Zigbee service reads no file (stick.py)

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
    report.slot = find_key_slot(blob, low)
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


def find_key_slot(blob: bytes, base: int = 0) -> KeySlot | None:
    """The TC link key slot in ``blob`` (flash from address ``base``), or None.

    A candidate is the 16 bytes that complete ``distributed, network, slot`` or
    ``network, slot, distributed``, the network key being all zeros or TI's
    default; a build without the distributed key is located by TI's default
    network key alone (``network, slot``). A slot holding one of the two known
    keys wins over one that does not (runs of zeros are common in flash)."""
    candidates: list[KeySlot] = []
    for match in re.finditer(re.escape(DISTRIBUTED_KEY), blob):
        d = match.start()
        after, before = blob[d + 16 : d + 32], blob[d - 32 : d - 16] if d >= 32 else b""
        if after in NETWORK_KEYS and len(blob) >= d + 48:
            candidates.append(KeySlot(base + d + 32, blob[d + 32 : d + 48], base + d + 16, after, base + d))
        if before in NETWORK_KEYS:
            candidates.append(KeySlot(base + d - 16, blob[d - 16 : d], base + d - 32, before, base + d))
    if not candidates:
        for match in re.finditer(re.escape(DEFAULT_NETWORK_KEY), blob):
            n = match.start()
            if len(blob) >= n + 32:
                candidates.append(KeySlot(base + n + 16, blob[n + 16 : n + 32], base + n, DEFAULT_NETWORK_KEY, None))
    known = [slot for slot in candidates if slot.key in KEY_NAMES]
    return (known or candidates or [None])[0]


def check_file(path: str | Path) -> HexReport:
    return analyse(load(path), str(path))


def _covered(segments: list[tuple[int, int]], start: int, size: int) -> bool:
    return any(low <= start and start + size <= high for low, high in segments)


def _addresses(addresses: list[int]) -> str:
    return ", ".join(f"0x{a:05X}" for a in addresses)


def _presence(addresses: list[int]) -> str:
    return f"present at {_addresses(addresses)}" if addresses else "absent"
