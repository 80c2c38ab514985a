"""``firmware/build.py`` on a synthetic SDK, Z-Stack-firmware checkout and CCS.

The SDK tree has the real shape (examples/rtos/<board>/zstack/znp/..., source/ti/zstack/...)
with a few tiny sources. The fake CCS imports projects and "compiles" by running the C
preprocessor on those sources with the options the real build uses (``-include`` of
preinclude.h, resolved from the build directory), so the image it writes holds whatever
TC link key the preprocessor ended up with: the test sees the key define reach the build.
"""
from __future__ import annotations

import difflib
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.firmware import hexcheck

REPO = Path(__file__).resolve().parents[1]
BUILD = REPO / "firmware" / "build.py"
BOARD_DIR = "CC1352P_2_LAUNCHXL"
PROJECT = f"znp_{BOARD_DIR}_tirtos7_ticlang"
ALLIANCE = ", ".join(f"0x{b:02x}" for b in b"ZigBeeAlliance09")

TI_ZSTACK_CONFIG = f"""\
#ifndef DISTRIBUTED_GLOBAL_LINK_KEY
#define DISTRIBUTED_GLOBAL_LINK_KEY {{ {", ".join(f"0x{b:02x}" for b in range(0xD0, 0xE0))} }}
#endif
#ifndef DEFAULT_KEY
#define DEFAULT_KEY {{ 0x01, 0x03, 0x05, 0x07, 0x09, 0x0B, 0x0D, 0x0F, 0x00, 0x02, 0x04, 0x06, 0x08, 0x0A, 0x0C, 0x0D }}
#endif
#ifndef DEFAULT_TC_LINK_KEY
#define DEFAULT_TC_LINK_KEY {{ {ALLIANCE} }}
#endif
"""
NWK_GLOBALS = """\
#include "ti_zstack_config.h"
const unsigned char distributedDefaultKey[16] = DISTRIBUTED_GLOBAL_LINK_KEY;
const unsigned char defaultKey[16] = DEFAULT_KEY;
const unsigned char defaultTCLinkKey[16] = DEFAULT_TC_LINK_KEY;
"""
MT_VERSION = """\
const unsigned char MTVersionString[] = {
  2, /* transport */
  0, /* product */
  2, 7, 1,
};
"""
MT_VERSION_KOENKK = """\
#define CODE_REVISION_NUMBER 20250321
const unsigned char MTVersionString[] = {
  2, /* transport */
  1, /* product */
  2, 7, 1,
  ((CODE_REVISION_NUMBER >> 0) & 0xFF),
  ((CODE_REVISION_NUMBER >> 8) & 0xFF),
  ((CODE_REVISION_NUMBER >> 16) & 0xFF),
  ((CODE_REVISION_NUMBER >> 24) & 0xFF),
};
"""
ZNP_OPTS = "-DZNP\n-DMT_APP_CNF_FUNC\n"
ZNP_OPTS_KOENKK = ZNP_OPTS + "\n-include ../../../source/ti/zstack/stack/config/preinclude.h\n"
PREINCLUDE_KOENKK = """\
#define MT_SYS_KEY_MANAGEMENT 1
#define MAX_BCAST 30
#ifdef CC1352P_2
    #define TXPOWER 9
    #define LAUNCHPAD_CONFIG 1
#endif
"""
EXAMPLE_SYSCFG = """\
const CCFG = scripting.addModule("/ti/devices/CCFG");
CCFG.enableBootloader         = true;
CCFG.enableBootloaderBackdoor = false;
"""
KOENKK_SYSCFG = """\
const CCFG = scripting.addModule("/ti/devices/CCFG");
CCFG.enableBootloader         = true;
CCFG.enableBootloaderBackdoor = true;
CCFG.dioBootloaderBackdoor    = 15;
CCFG.levelBootloaderBackdoor  = "Active low";
"""

# The fake CCS. "Compiling" = running cpp like the real compiler would (cwd = the build
# directory, so the relative -include path of Koenkk's znp_cnf.opts resolves as in CCS).
FAKE_ECLIPSE = r'''#!{python}
import pathlib, re, shutil, subprocess, sys
sys.path.insert(0, {tests!r})
from support import firmware_images as fi

args = sys.argv[1:]
opt = lambda name: args[args.index(name) + 1]
ws = pathlib.Path(opt("-data"))
app = opt("-application")
with open(pathlib.Path({log!r}), "a") as log:
    log.write(" ".join(args) + "\n")
if app == "com.ti.ccstudio.apps.projectImport":
    spec = pathlib.Path(opt("-ccs.location"))
    project = ws / spec.stem
    project.mkdir(parents=True)
    (project / ".project").write_text("<projectDescription/>")
    (project / ".sdk").write_text(str(spec.parents[7]))
    for item in spec.parents[1].iterdir():
        if item != spec.parent:
            (shutil.copytree if item.is_dir() else shutil.copyfile)(item, project / item.name)
elif app == "com.ti.ccstudio.apps.projectBuild":
    project = ws / opt("-ccs.projects")
    sdk = pathlib.Path((project / ".sdk").read_text())
    build = project / "default"
    build.mkdir(exist_ok=True)
    local = lambda rel, fallback: project / rel if (project / rel).is_file() else sdk / fallback
    opts = local("Stack/Config/znp_cnf.opts", "source/ti/zstack/apps/znp/znp_cnf.opts")
    flags = []
    for line in opts.read_text().splitlines():
        if line.startswith("-include "):  # clang style (2023 on), relative to the build directory
            flags += ["-include", line.split(None, 1)[1]]
        elif line.startswith("--preinclude="):  # TI armcl style (up to 2022), found beside the opts file
            flags += ["-include", str(opts.parent / line.split("=", 1)[1])]
        elif line.startswith("-D"):
            flags.append(line)
    flags += ["-DCC1352P_2", "-I", str(sdk / "source/ti/zstack/stack/config")]
    def cpp(source):
        done = subprocess.run(["cpp", "-P", *flags, str(source)], cwd=build, capture_output=True, text=True)
        if done.returncode:
            sys.exit("cpp: " + done.stderr)
        return done.stdout
    arrays = re.findall(r"\[16\]\s*=\s*\{{([^}}]*)\}}", cpp(sdk / "source/ti/zstack/stack/nwk/nwk_globals.c"))
    keys = b"".join(bytes(int(x, 0) for x in body.split(",")) for body in arrays)
    body = re.search(r"MTVersionString\[\]\s*=\s*\{{(.*?)\}};", cpp(local("Application/mt/mt_version.c", "source/ti/zstack/mt/mt_version.c")), re.S).group(1)
    version = bytes(eval(x.strip()) for x in body.split(",") if x.strip())
    syscfg = (project / "znp.syscfg").read_text()
    setting = lambda name, default: (re.findall(r"CCFG\." + name + r"\s*=\s*(.+?);", syscfg) or [default])[0].strip('" ')
    bl = 0xC5 << 24 if setting("enableBootloader", "false") == "true" else 0
    if setting("enableBootloaderBackdoor", "false") == "true":
        bl |= 0xC5 | int(setting("dioBootloaderBackdoor", "0")) << 8
        bl |= (1 << 16) if setting("levelBootloaderBackdoor", "Active low") == "Active high" else 0
    image = fi.make_image(revision=None, bl_config=bl | 0x00FE0000)
    image.puts(fi.KEYS_AT, keys)
    image.puts(fi.VERSION_AT, version)
    fi.write(build / (project.name + ".hex"), image)
'''


def _patch(path: str, old: str | None, new: str) -> str:
    """A git-style unified diff for one file (a new file when ``old`` is None)."""
    before = [] if old is None else old.splitlines(keepends=True)
    diff = difflib.unified_diff(before, new.splitlines(keepends=True),
                                "/dev/null" if old is None else f"a/{path}", f"b/{path}")
    header = f"diff --git a/{path} b/{path}\n" + ("new file mode 100644\n" if old is None else "")
    return header + "".join(diff)


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    sdk = tmp_path / "simplelink_cc13xx_cc26xx_sdk_8_30_01_01"
    example = sdk / "examples/rtos" / BOARD_DIR / "zstack/znp/tirtos7"
    _write(example / "ticlang" / f"{PROJECT}.projectspec", "<projectSpec/>\n")
    _write(example / "znp.syscfg", EXAMPLE_SYSCFG)
    _write(sdk / "source/ti/zstack/apps/znp/znp_cnf.opts", ZNP_OPTS)
    _write(sdk / "source/ti/zstack/stack/config/ti_zstack_config.h", TI_ZSTACK_CONFIG)
    _write(sdk / "source/ti/zstack/stack/nwk/nwk_globals.c", NWK_GLOBALS)
    _write(sdk / "source/ti/zstack/mt/mt_version.c", MT_VERSION)

    zstack = tmp_path / "Z-Stack-firmware"
    coordinator = zstack / "coordinator/Z-Stack_3.x.0"
    _write(coordinator / "patches/0001-sdk-Add-preinclude.h.patch",
           _patch("source/ti/zstack/apps/znp/znp_cnf.opts", ZNP_OPTS, ZNP_OPTS_KOENKK)
           + _patch("source/ti/zstack/stack/config/preinclude.h", None, PREINCLUDE_KOENKK))
    _write(coordinator / "patches/0002-sdk-Own-changes.patch",
           _patch("source/ti/zstack/mt/mt_version.c", MT_VERSION, MT_VERSION_KOENKK))
    _write(coordinator / f"{PROJECT}.syscfg", KOENKK_SYSCFG)

    log = tmp_path / "ccs.log"
    eclipse = _write(tmp_path / "ccs/eclipse/eclipse",
                     FAKE_ECLIPSE.format(python=sys.executable, tests=str(REPO / "tests"), log=str(log)))
    eclipse.chmod(0o755)
    return {"sdk": sdk, "zstack": zstack, "ccs": tmp_path / "ccs", "out": tmp_path / "out", "log": log}


def build(tree: dict[str, Path], *extra: str, board: str = "CC1352P2_CC2652P_launchpad") -> subprocess.CompletedProcess:
    command = [sys.executable, str(BUILD), "--sdk", str(tree["sdk"]), "--zstack", str(tree["zstack"]),
               "--ccs", str(tree["ccs"]), "--board", board, "--output-dir", str(tree["out"]), *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_build_sets_the_key_and_is_idempotent(tree) -> None:
    first = build(tree)
    assert first.returncode == 0, first.stdout + first.stderr
    output = tree["out"] / "znp_CC1352P2_CC2652P_launchpad_enecsys_20250321.hex"
    assert output.is_file()
    assert "patch 0001-sdk-Add-preinclude.h.patch: applied" in first.stdout
    assert "verdict: good for Enecsys" in first.stdout

    # The key went through the preprocessor into the image, in Z-Stack's key slot.
    report = hexcheck.check_file(output)
    assert report.slot_key == b"ENCSYS-SOLAR-NET"
    assert report.version.build_date == "20250321"
    assert report.bootloader.describe() == "bootloader enabled, backdoor DIO15 active low"

    preinclude = tree["sdk"] / "source/ti/zstack/stack/config/preinclude.h"
    text = preinclude.read_text()
    assert text.startswith(PREINCLUDE_KOENKK)
    assert text.count("#define DEFAULT_TC_LINK_KEY { 0x45, 0x4e, 0x43, 0x53,") == 1
    assert "    #define LAUNCHPAD_CONFIG 1\n" in text

    sdk_after_first = snapshot(tree["sdk"])
    second = build(tree)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "patch 0001-sdk-Add-preinclude.h.patch: already applied" in second.stdout
    assert "patch 0002-sdk-Own-changes.patch: already applied" in second.stdout
    assert "project: already in the workspace" in second.stdout
    assert snapshot(tree["sdk"]) == sdk_after_first  # nothing changed, the hex included
    assert tree["log"].read_text().count("projectImport") == 1
    assert tree["log"].read_text().count("projectBuild") == 2


def test_other_variant_toggles_launchpad_config_and_back(tree) -> None:
    preinclude = tree["sdk"] / "source/ti/zstack/stack/config/preinclude.h"
    assert build(tree, board="CC1352P2_CC2652P_other").returncode == 0
    assert "// #define LAUNCHPAD_CONFIG 1" in preinclude.read_text()
    assert (tree["out"] / "znp_CC1352P2_CC2652P_other_enecsys_20250321.hex").is_file()
    again = build(tree, board="CC1352P2_CC2652P_launchpad")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "// #define LAUNCHPAD_CONFIG" not in preinclude.read_text()


def test_without_the_key_define_the_check_fails_the_build(tree, tmp_path: Path) -> None:
    # A "compiler" that ignores preinclude.h must not produce an image named as good.
    patch = tree["zstack"] / "coordinator/Z-Stack_3.x.0/patches/0001-sdk-Add-preinclude.h.patch"
    patch.write_text(_patch("source/ti/zstack/stack/config/preinclude.h", None, PREINCLUDE_KOENKK))
    result = build(tree)
    assert result.returncode == 1
    assert "ZigBeeAlliance09" in result.stderr and "not good for Enecsys" in result.stderr
    assert not tree["out"].exists() or not list(tree["out"].glob("*.hex"))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: {"sdk": t["sdk"].parent / "missing-sdk"}, "--sdk"),
        (lambda t: {"sdk": t["zstack"]}, "not a SimpleLink"),
        (lambda t: {"zstack": t["sdk"]}, "not a checkout of Koenkk/Z-Stack-firmware"),
        (lambda t: {"ccs": t["sdk"]}, "no CCS eclipse launcher"),
    ],
    ids=["missing-sdk", "sdk-is-not-an-sdk", "zstack-is-not-zstack", "no-eclipse"],
)
def test_missing_paths_give_clear_errors(tree, change, message: str) -> None:
    result = build({**tree, **change(tree)})
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("build.py: error:") and message in line


def test_unknown_board_and_missing_example(tree) -> None:
    result = build(tree, board="CC2530")
    assert result.returncode == 2 and "unknown --board CC2530" in result.stderr
    result = build(tree, board="CC2652R7")
    assert result.returncode == 2 and "no znp example for LP_CC2652R7" in result.stderr


def test_patch_for_another_sdk_is_refused(tree) -> None:
    (tree["sdk"] / "source/ti/zstack/mt/mt_version.c").write_text("/* a different SDK */\n")
    result = build(tree)
    assert result.returncode == 1
    assert "0002-sdk-Own-changes.patch does not apply" in result.stderr


# --- Koenkk's layout up to 2022 (the known-good 20220219 base): one firmware.patch written
# against the imported CCS projects, preinclude.h inside the project, TI compiler options.

OLD_PROJECT = f"znp_{BOARD_DIR}_tirtos_ccs"
OLD_OPTS = "-DZNP\n-DMT_APP_CNF_FUNC\n"
OLD_OPTS_KOENKK = OLD_OPTS + "\n--preinclude=preinclude.h\n"
OLD_PREINCLUDE = "#define MT_SYS_KEY_MANAGEMENT 1\n// Different configs, uncomment for for launchpad firmware\n#define LAUNCHPAD_CONFIG 1\n"


@pytest.fixture
def old_tree(tmp_path: Path) -> dict[str, Path]:
    sdk = tmp_path / "simplelink_cc13xx_cc26xx_sdk_5_40_00_40"
    example = sdk / "examples/rtos" / BOARD_DIR / "zstack/znp/tirtos"
    _write(example / "ccs" / f"{OLD_PROJECT}.projectspec", "<projectSpec/>\n")
    _write(example / "znp.syscfg", EXAMPLE_SYSCFG)
    _write(example / "Stack/Config/znp_cnf.opts", OLD_OPTS)
    _write(example / "Application/mt/mt_version.c", MT_VERSION)
    _write(sdk / "source/ti/zstack/stack/config/ti_zstack_config.h", TI_ZSTACK_CONFIG)
    _write(sdk / "source/ti/zstack/stack/nwk/nwk_globals.c", NWK_GLOBALS)
    zstack = tmp_path / "Z-Stack-firmware"
    _write(zstack / "coordinator/Z-Stack_3.x.0/firmware.patch",
           _patch(f"{OLD_PROJECT}/Stack/Config/znp_cnf.opts", OLD_OPTS, OLD_OPTS_KOENKK)
           + _patch(f"{OLD_PROJECT}/Stack/Config/preinclude.h", None, OLD_PREINCLUDE)
           + _patch(f"{OLD_PROJECT}/Application/mt/mt_version.c", MT_VERSION,
                    MT_VERSION_KOENKK.replace("20250321", "20220219"))
           + _patch(f"{OLD_PROJECT}/znp.syscfg", EXAMPLE_SYSCFG, KOENKK_SYSCFG))
    log = tmp_path / "ccs.log"
    eclipse = _write(tmp_path / "ccs/eclipse/eclipse",
                     FAKE_ECLIPSE.format(python=sys.executable, tests=str(REPO / "tests"), log=str(log)))
    eclipse.chmod(0o755)
    return {"sdk": sdk, "zstack": zstack, "ccs": tmp_path / "ccs", "out": tmp_path / "out", "log": log}


def test_2022_layout_patches_the_workspace_project(old_tree) -> None:
    for run in (1, 2):
        result = build(old_tree)
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"patch firmware.patch: {'applied' if run == 1 else 'already applied'}" in result.stdout
    project = old_tree["sdk"] / "workspace" / OLD_PROJECT
    text = (project / "Stack/Config/preinclude.h").read_text()
    assert text.startswith(OLD_PREINCLUDE) and text.count("#define DEFAULT_TC_LINK_KEY") == 1
    report = hexcheck.check_file(old_tree["out"] / "znp_CC1352P2_CC2652P_launchpad_enecsys_20220219.hex")
    assert report.good and report.slot_key == b"ENCSYS-SOLAR-NET"
