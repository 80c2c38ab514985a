"""What a Z-Stack stick reports about itself, and what is wrong with it for Enecsys.

``inspect(znp)`` takes an already connected ``zigpy_znp.api.ZNP`` (the Zigbee
service passes its own at start-up); ``inspect_device(path)`` connects itself.
Only read requests are sent: inspecting never changes the stick.

The trust-center link key cannot be read back through the ZNP interface (it is
compiled in), so the report points to ``solargw firmware check`` for that.
"""
from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass

import zigpy_znp.commands as c
import zigpy_znp.types as t
from zigpy_znp.api import ZNP
from zigpy_znp.config import CONFIG_SCHEMA
from zigpy_znp.exceptions import CommandNotRecognized
from zigpy_znp.types.nvids import OsalNvIds

from appliance.firmware.hexcheck import PROFILE_FORWARDING_SINCE, revision_date
from appliance.protocols import enecsys

DEFAULT_STACK_PROFILE = 2
CONNECT_TIMEOUT = 30.0
#: zigpy-znp's ``ZNP.version`` values.
ZSTACK_NAMES = {1.2: "Z-Stack Home 1.2", 3.0: "Z-Stack 3.0.x", 3.30: "Z-Stack 3.x.0 (3.30+)"}

TC_KEY_NOTE = (
    "the trust-center link key cannot be read from the stick (Z-Stack compiles it in); "
    "check the image you flashed with `solargw firmware check FILE.hex`"
)
#: ``UTIL.GetDeviceInfo`` states of a coordinator: held after a reset until the host starts
#: the network (what a stick reports when the Zigbee service is not running), starting, started.
COORDINATOR_STATES = ("InitializedNotStarted", "StartingAsCoordinator", "StartedAsCoordinator")
RESET_ADVICE = (
    "reset the stick's network with `python -m zigpy_znp.tools.nvram_reset {device}` "
    "and restart the Zigbee service, which forms a new one with PAN id 0x02AA "
    "(if zigpy's database holds a network backup it restores that instead: delete it first)"
)


class StickError(RuntimeError):
    """The stick could not be reached or did not answer."""


@dataclass
class StickReport:
    device: str = ""
    zstack: float | None = None  # zigpy-znp's detected Z-Stack generation: 1.2, 3.0 or 3.30
    transport_rev: int | None = None
    product_id: int | None = None
    mt_version: str | None = None
    code_revision: int | None = None
    device_state: str | None = None
    ieee: str | None = None
    formed: bool = False
    pan_id: int | None = None
    extended_pan_id: str | None = None
    channel: int | None = None
    stack_profile: int | None = None

    @property
    def build_date(self) -> str | None:
        return revision_date(self.code_revision)

    def problems(self, expected_pan_id: int = enecsys.PAN_ID) -> list[str]:
        """What keeps Enecsys inverters off this stick, each with how to fix it."""
        found: list[str] = []
        device = self.device or "DEVICE"
        if self.zstack is not None and self.zstack < 3.30:
            found.append(
                f"this stick runs {ZSTACK_NAMES.get(self.zstack, self.zstack)} (a CC253x-class stick): the Enecsys "
                "key build is for CC26x2/CC13x2 sticks; see firmware/README.md"
            )
        if self.code_revision and self.build_date and self.code_revision < PROFILE_FORWARDING_SINCE:
            found.append(
                f"firmware build {self.code_revision} predates {PROFILE_FORWARDING_SINCE}: it drops "
                "Enecsys frames (profile 0xC00F); flash a build from firmware/build.py"
            )
        if not self.formed:
            found.append(
                "no network is formed yet: start the Zigbee service (`solargw zigbee`), which forms "
                "it with PAN id 0x02AA and stack profile 0"
            )
            return found
        if self.device_state and self.device_state not in COORDINATOR_STATES:
            found.append(
                f"the stick is in state {self.device_state}, not running as coordinator: "
                + RESET_ADVICE.format(device=device)
            )
        if self.pan_id != expected_pan_id:
            found.append(
                f"PAN id is 0x{self.pan_id or 0:04X}, Enecsys inverters need 0x{expected_pan_id:04X}: "
                + RESET_ADVICE.format(device=device)
            )
        if self.stack_profile != enecsys.STACK_PROFILE:
            shown = "missing" if self.stack_profile is None else str(self.stack_profile)
            found.append(
                f"stack profile NV item (0x002A) is {shown}, Enecsys needs 0: "
                "`solargw zigbee` writes it at start-up"
            )
        return found

    def notes(self, expected_channel: int | None = None) -> list[str]:
        found = [TC_KEY_NOTE]
        if self.code_revision is not None and not self.build_date:
            found.append(f"code revision {self.code_revision} is not a build date (not a Koenkk build?)")
        if self.formed and self.device_state == "InitializedNotStarted":
            found.append("the network is formed but not started: `solargw zigbee` starts it when it connects")
        if expected_channel and self.formed and self.channel != expected_channel:
            found.append(
                f"the network is on channel {self.channel}; the settings ask for {expected_channel}"
            )
        return found

    def lines(self, expected_pan_id: int = enecsys.PAN_ID, expected_channel: int | None = None) -> list[str]:
        out = [f"device: {self.device}"]
        out.append(
            f"firmware: {ZSTACK_NAMES.get(self.zstack, f'Z-Stack {self.zstack}')}, MT {self.mt_version}, "
            f"product id {self.product_id}, build {self.build_date or self.code_revision or 'unknown'}"
        )
        out.append(f"state: {self.device_state or 'unknown'}, IEEE {self.ieee or 'unknown'}")
        if self.formed:
            out.append(
                f"network: formed, PAN id 0x{self.pan_id:04X}, extended PAN id "
                f"{self.extended_pan_id}, channel {self.channel}"
            )
        else:
            out.append("network: not formed")
        out.append(f"stack profile: {'missing' if self.stack_profile is None else self.stack_profile}")
        out += [f"note: {note}" for note in self.notes(expected_channel)]
        problems = self.problems(expected_pan_id)
        out += [f"problem: {problem}" for problem in problems]
        out.append("verdict: ready for Enecsys" if not problems else "verdict: NOT ready for Enecsys")
        return out

    def to_dict(self, expected_pan_id: int = enecsys.PAN_ID) -> dict:
        return {
            **dataclasses.asdict(self),
            "build_date": self.build_date,
            "problems": self.problems(expected_pan_id),
            "notes": self.notes(),
        }


async def inspect(znp: ZNP, device: str = "") -> StickReport:
    """Read version, network and stack-profile facts from a connected stick."""
    report = StickReport(device=device, zstack=znp.version)
    version = await znp.request(c.SYS.Version.Req())
    report.transport_rev = version.TransportRev
    report.product_id = version.ProductId
    report.mt_version = f"{version.MajorRel}.{version.MinorRel}.{version.MaintRel}"
    report.code_revision = version.CodeRevision
    try:
        info = await znp.request(c.UTIL.GetDeviceInfo.Req())
    except CommandNotRecognized:
        info = None
    if info is not None:
        report.device_state = info.DeviceState.name
        report.ieee = str(info.IEEE)
    else:
        ieee = await _osal_read(znp, OsalNvIds.EXTADDR, t.EUI64)
        report.ieee = None if ieee is None else str(ieee)
    nib = await _osal_read(znp, OsalNvIds.NIB, t.NIB)
    on_network = await _osal_read(znp, OsalNvIds.BDBNODEISONANETWORK, t.uint8_t)
    report.formed = bool(
        nib is not None
        and nib.nwkLogicalChannel != 0
        and nib.nwkKeyLoaded
        and (on_network == 1 or (znp.version or 0) < 3.0)
    )
    if nib is not None and report.formed:
        report.pan_id = int(nib.nwkPanId)
        report.extended_pan_id = str(nib.extendedPANID)
        report.channel = int(nib.nwkLogicalChannel)
    profile = await _osal_read(znp, OsalNvIds.STACK_PROFILE, t.uint8_t)
    report.stack_profile = None if profile is None else int(profile)
    return report


async def inspect_device(path: str, timeout: float = CONNECT_TIMEOUT) -> StickReport:
    """Open ``path`` (a serial device or ``socket://host:port``), inspect, close."""
    znp = ZNP(CONFIG_SCHEMA({"device": {"path": path}}))
    try:
        async with asyncio.timeout(timeout):
            await znp.connect()
            return await inspect(znp, device=path)
    except TimeoutError:
        raise StickError(f"{path}: no answer from the stick within {timeout:.0f} s") from None
    except (OSError, ValueError) as exc:
        raise StickError(f"{path}: {exc}") from None
    finally:
        await znp.disconnect()


async def _osal_read(znp: ZNP, nvid: OsalNvIds, item_type):
    """An NV item, or None when the stick does not have it."""
    try:
        return await znp.nvram.osal_read(nvid, item_type=item_type)
    except KeyError:
        return None
