"""The emulated stick's non-volatile memory: legacy OSAL items and the extended tables of Z-Stack 3.30+.

It persists across host connections and soft resets, as flash does. :meth:`NvStore.factory_reset`
is what a reset with ``STARTUP_OPTION`` ClearConfig/ClearState does (so STACK_PROFILE goes back
to 2 when a network is re-formed). :meth:`NvStore.handlers` answers the ZNP ``SYS`` NV commands.
The trust-center link key is a build-time constant: no item holds it.
"""
from __future__ import annotations

import os
from typing import Any, Callable

import zigpy_znp.commands as c
import zigpy_znp.const as const
import zigpy_znp.types as t
from zigpy_znp.types.nvids import ExNvIds, NvSysIds, OsalNvIds

ALIGN = True  # CC26x2/CC13x2 structs are padded (zigpy-znp detects this via UTIL.AssocFindDevice)
LEGACY = (NvSysIds.ZSTACK, ExNvIds.LEGACY)
MAX_READ = 244  # what fits in one ZNP frame


def eui64(value: int) -> t.EUI64:
    return t.EUI64(value.to_bytes(8, "little"))


class NvStore:
    """NV items keyed ``(sys id, item id, sub id)``; legacy OSAL items live under ``LEGACY``."""

    def __init__(self, ieee: int, table_size: int = 16, on_write: Callable[[int, bytes], None] | None = None):
        self.ieee = ieee
        self.table_size = table_size
        self.items: dict[tuple[int, int, int], bytes] = {}
        self._on_write = on_write or (lambda nvid, value: None)
        self.factory_reset()

    # --- legacy items ---------------------------------------------------------------------

    def read(self, nvid: int) -> bytes | None:
        """A legacy (OSAL) item's bytes, None if it does not exist."""
        return self.items.get((*LEGACY, nvid))

    def write(self, nvid: int, value: bytes) -> None:
        self.items[(*LEGACY, nvid)] = bytes(value)

    def values(self):
        return self.items.values()

    def nib(self) -> t.NIB | None:
        raw = self.read(OsalNvIds.NIB)
        return t.NIB.deserialize(raw, align=ALIGN)[0] if raw else None

    def factory_reset(self, *, keep: tuple[int, ...] = ()) -> None:
        """Factory NV, keeping the legacy items ``keep``."""
        kept = {nvid: self.read(nvid) for nvid in keep if self.read(nvid) is not None}
        self.items.clear()
        legacy: dict[int, bytes] = {
            OsalNvIds.EXTADDR: eui64(self.ieee).serialize(),
            OsalNvIds.STARTUP_OPTION: b"\x00",
            OsalNvIds.PANID: t.uint16_t(0xFFFF).serialize(),
            OsalNvIds.APS_USE_EXT_PANID: bytes(8),
            OsalNvIds.EXTENDED_PAN_ID: bytes(8),
            OsalNvIds.PRECFGKEY: bytes(16),
            OsalNvIds.PRECFGKEYS_ENABLE: b"\x00",
            OsalNvIds.CHANLIST: t.Channels.from_channel_list([11]).serialize(),
            OsalNvIds.LOGICAL_TYPE: b"\x00",
            OsalNvIds.STACK_PROFILE: b"\x02",
            OsalNvIds.CONCENTRATOR_ENABLE: b"\x00",
            OsalNvIds.CONCENTRATOR_DISCOVERY: b"\x78",
            OsalNvIds.CONCENTRATOR_RC: b"\x00",
            OsalNvIds.SRC_RTG_EXPIRY_TIME: b"\x0a",
            OsalNvIds.NWK_CHILD_AGE_ENABLE: b"\x01",
            OsalNvIds.BCAST_DELIVERY_TIME: b"\x1e",
            OsalNvIds.ZDO_DIRECT_CB: b"\x00",
            OsalNvIds.NWK_ACTIVE_KEY_INFO: const.EMPTY_KEY.serialize(),
            OsalNvIds.NWK_ALTERN_KEY_INFO: const.EMPTY_KEY.serialize(),
            OsalNvIds.TCLK_SEED: os.urandom(16),
            OsalNvIds.APS_LINK_KEY_TABLE: t.APSLinkKeyTable([]).serialize(align=ALIGN).ljust(
                2 + 8 * self.table_size, b"\x00"),
            OsalNvIds.BDBNODEISONANETWORK: b"\x00",
        }
        for nvid, value in {**legacy, **kept}.items():
            self.write(nvid, value)
        tables = {
            ExNvIds.ADDRMGR: const.EMPTY_ADDR_MGR_ENTRY_ZSTACK3.serialize(align=ALIGN),
            ExNvIds.TCLK_TABLE: t.TCLKDevEntry(
                txFrmCntr=0, rxFrmCntr=0, extAddr=t.EUI64(bytes(8)), keyAttributes=t.KeyAttributes.DEFAULT_KEY,
                keyType=t.KeyType.NONE, SeedShift_IcIndex=0).serialize(align=ALIGN),
            ExNvIds.APS_KEY_DATA_TABLE: t.APSKeyDataTableEntry(
                Key=t.KeyData(bytes(16)), TxFrameCounter=0, RxFrameCounter=0).serialize(align=ALIGN),
            ExNvIds.NWK_SEC_MATERIAL_TABLE: t.NwkSecMaterialDesc(
                FrameCounter=0, ExtendedPanID=t.EUI64(bytes(8))).serialize(align=ALIGN),
        }
        for item, fill in tables.items():
            for sub in range(self.table_size if item != ExNvIds.NWK_SEC_MATERIAL_TABLE else 4):
                self.items[(NvSysIds.ZSTACK, item, sub)] = fill

    # --- the ZNP SYS NV commands ------------------------------------------------------------

    def handlers(self) -> dict[type, Callable[[Any], Any]]:
        return {
            c.SYS.OSALNVLength.Req: lambda r: c.SYS.OSALNVLength.Rsp(ItemLen=len(self.read(r.Id) or b"")),
            c.SYS.OSALNVRead.Req: self._osal_read,
            c.SYS.OSALNVReadExt.Req: self._osal_read,
            c.SYS.OSALNVWrite.Req: self._osal_write,
            c.SYS.OSALNVWriteExt.Req: self._osal_write,
            c.SYS.OSALNVItemInit.Req: self._osal_init,
            c.SYS.OSALNVDelete.Req: self._osal_delete,
            c.SYS.NVLength.Req: lambda r: c.SYS.NVLength.Rsp(
                Length=len(self.items.get((r.SysId, r.ItemId, r.SubId), b""))),
            c.SYS.NVRead.Req: self._nv_read,
            c.SYS.NVWrite.Req: self._nv_write,
            c.SYS.NVCreate.Req: self._nv_create,
            c.SYS.NVDelete.Req: self._nv_delete,
        }

    def _osal_read(self, request):
        rsp = type(request).Rsp
        value = self.read(request.Id)
        if value is None or request.Offset > len(value):
            return rsp(Status=t.Status.INVALID_PARAMETER, Value=t.ShortBytes(b""))
        return rsp(Status=t.Status.SUCCESS, Value=t.ShortBytes(value[request.Offset:request.Offset + MAX_READ]))

    def _osal_write(self, request):
        rsp = type(request).Rsp
        value = self.read(request.Id)
        if value is None or request.Offset + len(request.Value) > len(value):
            return rsp(Status=t.Status.INVALID_PARAMETER)
        new = value[:request.Offset] + bytes(request.Value) + value[request.Offset + len(request.Value):]
        self.write(request.Id, new)
        self._on_write(int(request.Id), new)
        return rsp(Status=t.Status.SUCCESS)

    def _osal_init(self, request: c.SYS.OSALNVItemInit.Req):
        if self.read(request.Id) is not None:
            return c.SYS.OSALNVItemInit.Rsp(Status=t.Status.SUCCESS)
        self.write(request.Id, bytes(request.Value).ljust(request.ItemLen, b"\x00")[:request.ItemLen])
        return c.SYS.OSALNVItemInit.Rsp(Status=t.Status.NV_ITEM_UNINIT)

    def _osal_delete(self, request: c.SYS.OSALNVDelete.Req):
        existed = self.items.pop((*LEGACY, request.Id), None) is not None
        return c.SYS.OSALNVDelete.Rsp(Status=t.Status.SUCCESS if existed else t.Status.NV_ITEM_UNINIT)

    def _nv_read(self, request: c.SYS.NVRead.Req):
        value = self.items.get((request.SysId, request.ItemId, request.SubId))
        if value is None or request.Offset > len(value):
            return c.SYS.NVRead.Rsp(Status=t.Status.INVALID_PARAMETER, Value=t.ShortBytes(b""))
        chunk = value[request.Offset:request.Offset + min(request.Length, MAX_READ)]
        return c.SYS.NVRead.Rsp(Status=t.Status.SUCCESS, Value=t.ShortBytes(chunk))

    def _nv_write(self, request: c.SYS.NVWrite.Req):
        key = (request.SysId, request.ItemId, request.SubId)
        value = self.items.get(key)
        if value is None or request.Offset + len(request.Value) > len(value):
            return c.SYS.NVWrite.Rsp(Status=t.Status.INVALID_PARAMETER)
        self.items[key] = value[:request.Offset] + bytes(request.Value) + value[request.Offset + len(request.Value):]
        return c.SYS.NVWrite.Rsp(Status=t.Status.SUCCESS)

    def _nv_create(self, request: c.SYS.NVCreate.Req):
        key = (request.SysId, request.ItemId, request.SubId)
        if key in self.items:
            return c.SYS.NVCreate.Rsp(Status=t.Status.SUCCESS)
        self.items[key] = bytes(request.Length)
        return c.SYS.NVCreate.Rsp(Status=t.Status.NV_ITEM_UNINIT)

    def _nv_delete(self, request: c.SYS.NVDelete.Req):
        existed = self.items.pop((request.SysId, request.ItemId, request.SubId), None) is not None
        return c.SYS.NVDelete.Rsp(Status=t.Status.SUCCESS if existed else t.Status.NV_ITEM_UNINIT)
