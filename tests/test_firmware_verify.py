"""``solargw firmware verify`` / ``appliance.firmware.stick`` against the emulated stick.

zigpy-znp talks to ``appliance.sim.zstack.coordinator`` over ``socket://127.0.0.1:PORT``
exactly as it talks to a USB stick; networks are formed with zigpy-znp's own
``ZNP.write_network_info``.
"""
from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest
import zigpy.state
import zigpy.types as zt
import zigpy.zdo.types as zdo_t
import zigpy_znp.types as t
from zigpy_znp.api import ZNP
from zigpy_znp.config import CONFIG_SCHEMA
from zigpy_znp.types.nvids import OsalNvIds

from appliance.firmware import stick
from appliance.sim.zstack.coordinator import CoordinatorEmulator, FirmwareVersion

pytestmark = pytest.mark.slow

ENECSYS_EPID = "d3:73:39:d4:cb:1c:60:bb"


async def connect(url: str) -> ZNP:
    znp = ZNP(CONFIG_SCHEMA({"device": {"path": url}}))
    await znp.connect()
    return znp


async def form(url: str, pan_id: int = 0x02AA, channel: int = 13, stack_profile: int | None = 0) -> None:
    """Form a network the way zigpy-znp does, then (optionally) set the stack profile."""
    znp = await connect(url)
    try:
        ieee = zt.EUI64.convert("00:12:4b:00:29:ab:cd:ef")
        await znp.write_network_info(
            network_info=zigpy.state.NetworkInfo(
                extended_pan_id=zt.EUI64.convert(ENECSYS_EPID), pan_id=pan_id, nwk_update_id=0,
                channel=channel, channel_mask=t.Channels.from_channel_list([channel]), security_level=5,
                network_key=zigpy.state.Key(key=zt.KeyData(os.urandom(16)), seq=0, tx_counter=0),
                tc_link_key=zigpy.state.Key(key=zt.KeyData(b"ENCSYS-SOLAR-NET")),
            ),
            node_info=zigpy.state.NodeInfo(nwk=0x0000, ieee=ieee, logical_type=zdo_t.LogicalType.Coordinator),
        )
        if stack_profile is not None:
            await znp.nvram.osal_write(OsalNvIds.STACK_PROFILE, t.uint8_t(stack_profile), create=True)
    finally:
        await znp.disconnect()


def with_emulator(scenario, **emulator_args):
    async def main():
        emulator = CoordinatorEmulator(**emulator_args)
        url = await emulator.start()
        try:
            return await scenario(emulator, url)
        finally:
            await emulator.stop()

    return asyncio.run(main())


async def verify_cli(url: str, tmp_path: Path, *extra: str) -> tuple[int, str, str]:
    env = {**os.environ, "SOLARGW_SETTINGS": str(tmp_path / "settings.toml")}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "appliance", "firmware", "verify", "--device", url, *extra,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    return process.returncode, out.decode(), err.decode()


def test_unformed_stick(tmp_path: Path) -> None:
    async def scenario(emulator, url):
        report = await stick.inspect_device(url)
        assert report.formed is False
        assert report.device_state == "InitializedNotStarted"
        assert (report.mt_version, report.product_id, report.build_date) == ("2.7.1", 1, "20220219")
        assert report.zstack == 3.30
        assert report.ieee == "00:12:4b:00:29:ab:cd:ef"
        [problem] = report.problems()
        assert "no network is formed" in problem
        assert stick.TC_KEY_NOTE in report.notes()
        code, out, err = await verify_cli(url, tmp_path)
        assert code == 1, err
        assert "state: InitializedNotStarted, IEEE 00:12:4b:00:29:ab:cd:ef" in out
        assert "network: not formed" in out and "verdict: NOT ready for Enecsys" in out
        assert "problem: no network is formed yet: start the Zigbee service (`solargw zigbee`)" in out

    with_emulator(scenario)


def test_ready_stick_and_the_stack_profile(tmp_path: Path) -> None:
    async def scenario(emulator, url):
        await form(url, stack_profile=None)  # forming leaves Z-Stack's default profile 2
        report = await stick.inspect_device(url)
        assert (report.formed, report.pan_id, report.channel) == (True, 0x02AA, 13)
        assert report.device_state == "InitializedNotStarted"  # formation ends with a reset: held
        assert report.extended_pan_id == ENECSYS_EPID
        assert report.stack_profile == 2
        [problem] = report.problems()
        assert "stack profile NV item (0x002A) is 2" in problem and "solargw zigbee" in problem

        znp = await connect(url)
        try:
            await znp.nvram.osal_write(OsalNvIds.STACK_PROFILE, t.uint8_t(0))
        finally:
            await znp.disconnect()
        code, out, err = await verify_cli(url, tmp_path)
        assert code == 0, out + err
        assert "network: formed, PAN id 0x02AA, extended PAN id d3:73:39:d4:cb:1c:60:bb, channel 13" in out
        assert "stack profile: 0" in out
        assert "firmware: Z-Stack 3.x.0 (3.30+), MT 2.7.1, product id 1, build 20220219" in out
        assert "solargw firmware check" in out  # the TC key note
        assert "note: the network is formed but not started" in out
        assert out.strip().endswith("verdict: ready for Enecsys")

        code, out, _ = await verify_cli(url, tmp_path, "--json")
        data = json.loads(out)
        assert code == 0 and data["problems"] == [] and data["pan_id"] == 0x02AA

    with_emulator(scenario)


def test_running_coordinator(tmp_path: Path) -> None:
    """A stick whose network is started (as the Zigbee service leaves it before a reset)."""
    async def scenario(emulator, url):
        await form(url)
        znp = await connect(url)
        try:
            await znp.start_network()
        finally:
            await znp.disconnect()  # ZNP.disconnect does not reset: the network stays up
        assert emulator.network_up
        code, out, err = await verify_cli(url, tmp_path)
        assert code == 0, out + err
        assert "state: StartedAsCoordinator, IEEE 00:12:4b:00:29:ab:cd:ef" in out
        assert "not started" not in out and "problem:" not in out
        assert out.strip().endswith("verdict: ready for Enecsys")

    with_emulator(scenario)


def test_a_stick_in_another_role_gets_reset_advice() -> None:
    """A stick that joined some other network as a router is formed, but not our coordinator."""
    report = stick.StickReport(device="/dev/ttyUSB0", zstack=3.30, code_revision=20220219, formed=True,
                               device_state="JoinedAsRouter", pan_id=0x02AA, channel=13, stack_profile=0)
    [problem] = report.problems()
    assert problem.startswith("the stick is in state JoinedAsRouter, not running as coordinator")
    assert "zigpy_znp.tools.nvram_reset /dev/ttyUSB0" in problem
    report.device_state = "StartedAsCoordinator"
    assert report.problems() == []


def test_wrong_pan_id_gets_reset_advice(tmp_path: Path) -> None:
    async def scenario(emulator, url):
        await form(url, pan_id=0x1A62, channel=15)
        code, out, err = await verify_cli(url, tmp_path)
        assert code == 1, err
        assert "problem: PAN id is 0x1A62, Enecsys inverters need 0x02AA" in out
        assert f"zigpy_znp.tools.nvram_reset {url}" in out
        assert "the settings ask for 13" in out  # channel note from the default settings

    with_emulator(scenario)


def test_firmware_without_profile_forwarding(tmp_path: Path) -> None:
    async def scenario(emulator, url):
        await form(url)
        report = await stick.inspect_device(url)
        assert report.build_date == "20210120"
        [problem] = report.problems()
        assert "predates 20210708" in problem

    with_emulator(scenario, firmware=FirmwareVersion(code_revision=20210120))


def test_inspect_uses_a_connection_it_is_given(tmp_path: Path) -> None:
    """The Zigbee service's start-up check: its own ZNP stays connected and usable."""
    async def scenario(emulator, url):
        await form(url)
        znp = await connect(url)
        try:
            report = await stick.inspect(znp, device=url)
            assert report.problems() == []
            assert (await znp.nvram.osal_read(OsalNvIds.STACK_PROFILE, item_type=t.uint8_t)) == 0
            assert emulator.host_connected
        finally:
            await znp.disconnect()

    with_emulator(scenario)


def test_unreachable_stick_is_a_clear_error(tmp_path: Path) -> None:
    async def scenario(emulator, url):
        port = emulator.port
        await emulator.stop()
        code, out, err = await verify_cli(f"socket://127.0.0.1:{port}", tmp_path, "--timeout", "5")
        assert code == 2
        assert "Traceback" not in err
        [line] = err.strip().splitlines()
        assert line.startswith("solargw firmware: socket://127.0.0.1:")

        missing = tmp_path / "ttyNOPE"
        code, out, err = await verify_cli(str(missing), tmp_path, "--timeout", "5")
        assert code == 2 and "Traceback" not in err and str(missing) in err

    with_emulator(scenario)
