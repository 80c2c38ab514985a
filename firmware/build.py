#!/usr/bin/env python3
"""Build a Z-Stack coordinator image with the Enecsys trust-center link key.

    python firmware/build.py --sdk ~/ti/simplelink_cc13xx_cc26xx_sdk_7_10_00_98 \\
        --zstack ~/src/Z-Stack-firmware --ccs ~/ti/ccs1230/ccs \\
        --board CC1352P2_CC2652P_launchpad

Steps (each safe to repeat; a second run changes nothing):

1. apply Koenkk's patches (``coordinator/Z-Stack_3.x.0/patches/*.patch``, or the
   older single ``firmware.patch``) with ``git apply``; a patch that is already in
   place is skipped;
2. import the SDK's ``znp`` example for the board into a CCS workspace (CCS headless:
   ``eclipse -application com.ti.ccstudio.apps.projectImport``) and copy Koenkk's
   SysConfig file for the board over ``znp.syscfg``;
3. put ``DEFAULT_TC_LINK_KEY`` = ``ENCSYS-SOLAR-NET`` into the project's
   ``preinclude.h`` (it is force-included before SysConfig's ``ti_zstack_config.h``,
   whose own definition is ``#ifndef``-guarded), then read the file back to verify;
4. build headless (``com.ti.ccstudio.apps.projectBuild``), run the hex checker of
   ``solargw firmware check`` on the result and copy it to
   ``znp_<board>_enecsys_<date>.hex`` (date = the build's code revision).

Exit status: 0 built and checked, 1 the build or the check failed, 2 bad arguments
or missing inputs. Errors are one line on stderr.
"""
from __future__ import annotations

import argparse
import datetime
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from appliance.firmware import hexcheck  # noqa: E402  (needs the repository on sys.path)

ENECSYS_KEY = b"ENCSYS-SOLAR-NET"
BEGIN = "/* >>> solargw: Enecsys trust-center link key (firmware/build.py) */"
END = "/* <<< solargw */"
OTHER_MARK = '/* solargw: "other" variant */'
LAUNCHPAD_LINE = re.compile(
    r"^(?P<indent>[ \t]*)(?://[ \t]*)?#define LAUNCHPAD_CONFIG 1[ \t]*(?:" + re.escape(OTHER_MARK) + r")?[ \t]*$", re.M
)
OTHER_LINE = re.compile(r"^(?P<indent>[ \t]*)// #define LAUNCHPAD_CONFIG 1 " + re.escape(OTHER_MARK) + r"[ \t]*$", re.M)


@dataclass(frozen=True)
class Board:
    sdk_board: str  # the board folder under the SDK's examples/rtos
    launchpad_config: bool | None = None  # CC1352P-2 only: Koenkk's launchpad/other switch
    sticks: str = ""


#: Koenkk's release names -> the SDK example they are built from.
BOARDS = {
    "CC1352P2_CC2652P_launchpad": Board("CC1352P_2_LAUNCHXL", True,
                                        "Sonoff Zigbee 3.0 USB Dongle Plus (P), CC1352P-2 LaunchPad"),
    "CC1352P2_CC2652P_other": Board("CC1352P_2_LAUNCHXL", False,
                                    "other CC2652P sticks whose maker says to use Koenkk's \"other\" build"),
    "CC2652R": Board("CC26X2R1_LAUNCHXL", sticks="CC2652R sticks (e.g. Electrolama zzh!)"),
    "CC2652RB": Board("LP_CC2652RB", sticks="CC2652RB sticks (e.g. slaesh's CC2652RB stick)"),
    "CC1352P7": Board("LP_CC1352P7_4", sticks="CC1352P7 sticks"),
    "CC2652R7": Board("LP_CC2652R7", sticks="CC2652R7 sticks"),
}


class BuildError(Exception):
    """A failure with a one-line explanation; ``status`` is the exit status."""

    def __init__(self, message: str, status: int = 1):
        super().__init__(message)
        self.status = status


def key_define(key: bytes) -> str:
    body = ", ".join(f"0x{b:02x}" for b in key)
    return f"#define DEFAULT_TC_LINK_KEY {{ {body} }}"


def key_block(key: bytes) -> str:
    text = key.decode("ascii", "replace")
    return "\n".join([
        BEGIN,
        f'/* "{text}": Z-Stack 3 takes the TC link key at build time only. */',
        "#ifdef DEFAULT_TC_LINK_KEY",
        "#undef DEFAULT_TC_LINK_KEY",
        "#endif",
        key_define(key),
        END,
    ])


def set_key(text: str, key: bytes) -> str:
    """``text`` with exactly one solargw key block, at the end of the file."""
    pattern = re.compile(r"\n*" + re.escape(BEGIN) + r".*?" + re.escape(END) + r"\n?", re.S)
    text = pattern.sub("\n", text).rstrip("\n")
    return f"{text}\n\n{key_block(key)}\n"


def set_launchpad(text: str, enabled: bool) -> str:
    """Koenkk's launchpad/"other" switch for CC1352P-2 builds (his manual step, automated)."""
    def replace(match: re.Match) -> str:
        line = "#define LAUNCHPAD_CONFIG 1" if enabled else f"// #define LAUNCHPAD_CONFIG 1 {OTHER_MARK}"
        return f"{match['indent']}{line}"

    return LAUNCHPAD_LINE.sub(replace, text)


def restore(text: str) -> str:
    """Undo this script's edits, so that Koenkk's patches can be recognised as applied."""
    pattern = re.compile(r"\n*" + re.escape(BEGIN) + r".*?" + re.escape(END) + r"\n?", re.S)
    text = pattern.sub("\n", text)
    return OTHER_LINE.sub(lambda m: f"{m['indent']}#define LAUNCHPAD_CONFIG 1", text)


def verify_preinclude(text: str, key: bytes, board: Board) -> None:
    if text.count(BEGIN) != 1 or text.count(key_define(key)) != 1:
        raise BuildError("preinclude.h does not hold exactly one DEFAULT_TC_LINK_KEY block after editing")
    if board.launchpad_config is not None:
        states = [not m.group(0).lstrip().startswith("//") for m in LAUNCHPAD_LINE.finditer(text)]
        if states and set(states) != {board.launchpad_config}:
            raise BuildError("preinclude.h: LAUNCHPAD_CONFIG is not set for this board variant")


def run(command: list[str]) -> subprocess.CompletedProcess:
    """Run CCS with its output on the terminal (builds are long; the user wants to see them)."""
    try:
        return subprocess.run(command, check=False)
    except OSError as exc:
        raise BuildError(f"cannot run {command[0]}: {exc.strerror or exc}", 2) from None


class Builder:
    def __init__(self, args: argparse.Namespace):
        self.sdk = self._dir(args.sdk, "--sdk", "examples/rtos", "a SimpleLink CC13xx/CC26xx SDK")
        self.zstack_dir = self._dir(args.zstack, "--zstack", "coordinator/Z-Stack_3.x.0",
                                    "a checkout of Koenkk/Z-Stack-firmware")
        self.coordinator = self.zstack_dir / "coordinator" / "Z-Stack_3.x.0"
        if args.board not in BOARDS:
            raise BuildError(f"unknown --board {args.board}; choose one of: {', '.join(BOARDS)}", 2)
        self.board_name = args.board
        self.board = BOARDS[args.board]
        self.eclipse = self._eclipse(args)
        self.key = args.key.encode("ascii", "replace")
        if len(self.key) != 16 or not args.key.isascii():
            raise BuildError("--key must be 16 ASCII characters", 2)
        self.workspace = Path(args.workspace).expanduser().resolve() if args.workspace else self.sdk / "workspace"
        self.output = Path(args.output_dir).resolve()
        self.projectspec = self._projectspec()
        self.project = self.workspace / self.projectspec.stem

    @staticmethod
    def _dir(value: str, option: str, must_have: str, what: str) -> Path:
        path = Path(value).expanduser().resolve()
        if not path.is_dir():
            raise BuildError(f"{option} {value}: no such directory", 2)
        if not (path / must_have).is_dir():
            raise BuildError(f"{option} {value}: not {what} (no {must_have}/)", 2)
        return path

    @staticmethod
    def _eclipse(args: argparse.Namespace) -> Path:
        if args.eclipse:
            candidates = [Path(args.eclipse).expanduser()]
        elif args.ccs:
            ccs = Path(args.ccs).expanduser()
            if not ccs.is_dir():
                raise BuildError(f"--ccs {args.ccs}: no such directory", 2)
            candidates = [ccs / sub / name for sub in ("eclipse", "ccs/eclipse")
                          for name in ("eclipse", "eclipsec.exe")]
        else:
            raise BuildError("give --ccs (the Code Composer Studio folder) or --eclipse", 2)
        for candidate in candidates:
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return candidate.resolve()
        raise BuildError(f"no CCS eclipse launcher found (looked for {', '.join(map(str, candidates))})", 2)

    def _projectspec(self) -> Path:
        example = self.sdk / "examples" / "rtos" / self.board.sdk_board / "zstack" / "znp"
        if not example.is_dir():
            raise BuildError(f"the SDK has no znp example for {self.board.sdk_board} ({example})", 2)
        specs = sorted(example.glob("**/*.projectspec"))
        ticlang = [s for s in specs if "ticlang" in s.name] or [s for s in specs if "ccs" in s.name]
        if not ticlang:
            raise BuildError(f"no CCS .projectspec under {example}", 2)
        return ticlang[0]

    # --- steps -------------------------------------------------------------------

    def patches(self) -> list[Path]:
        """``patches/*.patch`` (2024 on), else the single ``firmware.patch`` of older revisions
        (other ``*.patch`` files beside it are for other chips)."""
        found = sorted((self.coordinator / "patches").glob("*.patch"))
        if not found and (self.coordinator / "firmware.patch").is_file():
            found = [self.coordinator / "firmware.patch"]
        if not found:
            raise BuildError(f"no patches in {self.coordinator}: is --zstack a Z-Stack-firmware checkout?", 2)
        return found

    def patch_root(self, patch: Path) -> Path:
        """Where ``git apply`` runs: the SDK, or the workspace for patches up to 2022."""
        paths = _patch_paths(patch)
        if paths and paths[0].startswith("znp_"):
            return self.workspace
        if any(path.startswith("workspace/") for path in paths) and self.workspace != self.sdk / "workspace":
            raise BuildError(f"{patch.name} patches SDK/workspace/...: leave --workspace at its default", 2)
        return self.sdk

    def apply_patch(self, patch: Path) -> str:
        target = self.patch_root(patch)
        git = ["git", "apply", "--ignore-space-change", "--ignore-whitespace"]
        env_guard = {"GIT_CEILING_DIRECTORIES": str(target.parent)}
        if _git(git + ["--reverse", "--check", str(patch)], target, env_guard).returncode == 0:
            return "already applied"
        check = _git(git + ["--check", str(patch)], target, env_guard)
        if check.returncode != 0:
            reason = (check.stdout.strip().splitlines() or ["git apply --check failed"])[-1]
            raise BuildError(
                f"{patch.name} does not apply in {target} ({reason}); the SDK must be the version named in "
                "COMPILE.md of your Z-Stack-firmware checkout (and see firmware/README.md about znp.syscfg)"
            )
        applied = _git(git + [str(patch)], target, env_guard)
        if applied.returncode != 0:
            raise BuildError(f"git apply {patch.name} failed: {applied.stdout.strip()}")
        return "applied"

    def import_project(self) -> str:
        if (self.project / ".project").exists() or (self.project / ".cproject").exists():
            return "already in the workspace"
        self.workspace.mkdir(parents=True, exist_ok=True)
        result = run([str(self.eclipse), "-noSplash", "-data", str(self.workspace),
                      "-application", "com.ti.ccstudio.apps.projectImport",
                      "-ccs.location", str(self.projectspec)])
        if result.returncode != 0 or not self.project.is_dir():
            raise BuildError(f"CCS could not import {self.projectspec.name} (exit status {result.returncode})")
        return "imported"

    def copy_syscfg(self) -> str:
        names = [f"{self.projectspec.stem}.syscfg", f"znp_{self.board.sdk_board}.syscfg"]
        for name in names:
            source = self.coordinator / name
            if source.is_file():
                shutil.copyfile(source, self.project / "znp.syscfg")
                return f"{name} -> znp.syscfg"
        return "no board syscfg in the checkout (older layout): keeping the example's"

    def preincludes(self) -> list[Path]:
        candidates = [
            self.project / "Stack" / "Config" / "preinclude.h",  # patches up to 2022
            self.sdk / "source" / "ti" / "zstack" / "stack" / "config" / "preinclude.h",  # 2024 on
            self.sdk / "source" / "ti" / "zstack" / "stack" / "Config" / "preinclude.h",  # 2023
        ]
        return [candidate for candidate in candidates if candidate.is_file()]

    def restore_preincludes(self) -> None:
        for path in self.preincludes():
            original = path.read_text()
            if restore(original) != original:
                path.write_text(restore(original))

    def preinclude(self) -> Path:
        found = self.preincludes()
        if not found:
            raise BuildError("no preinclude.h after patching (looked in the project's Stack/Config and the SDK)")
        return found[0]

    def set_key(self) -> Path:
        path = self.preinclude()
        original = path.read_text()
        text = set_key(original, self.key)
        if self.board.launchpad_config is not None:
            text = set_launchpad(text, self.board.launchpad_config)
        if text != original:
            path.write_text(text)
        verify_preinclude(path.read_text(), self.key, self.board)
        return path

    def build(self) -> Path:
        result = run([str(self.eclipse), "-noSplash", "-data", str(self.workspace),
                      "-application", "com.ti.ccstudio.apps.projectBuild",
                      "-ccs.projects", self.project.name, "-ccs.buildType", "full"])
        hexes = sorted(self.project.glob(f"*/{self.project.name}.hex"))
        if result.returncode != 0 or not hexes:
            raise BuildError(f"the CCS build failed (exit status {result.returncode}, no {self.project.name}.hex)")
        return hexes[0]

    def check_and_name(self, built: Path) -> tuple[Path, hexcheck.HexReport]:
        try:
            report = hexcheck.check_file(built)
        except hexcheck.HexError as exc:
            raise BuildError(f"the build output is unreadable: {exc}") from None
        for line in report.lines():
            print(f"  {line}")
        if not report.good:
            raise BuildError(f"the build output is not good for Enecsys: {'; '.join(report.problems())}")
        date = (report.version and report.version.build_date) or datetime.date.today().strftime("%Y%m%d")
        self.output.mkdir(parents=True, exist_ok=True)
        target = self.output / f"znp_{self.board_name}_enecsys_{date}.hex"
        shutil.copyfile(built, target)
        return target, report

    def run_all(self) -> Path:
        print(f"board {self.board_name}: SDK example {self.projectspec.name}")
        patches = self.patches()
        self.restore_preincludes()
        for patch in patches:
            if not _needs_project(patch):
                print(f"patch {patch.name}: {self.apply_patch(patch)}")
        print(f"project: {self.import_project()}")
        print(f"syscfg: {self.copy_syscfg()}")
        for patch in patches:  # older layouts also patch the imported projects
            if _needs_project(patch):
                print(f"patch {patch.name}: {self.apply_patch(patch)}")
        print(f"key: {key_define(self.key)} in {self.set_key()}")
        built = self.build()
        print(f"built {built}")
        target, _ = self.check_and_name(built)
        print(f"output: {target}")
        return target


def _patch_paths(patch: Path) -> list[str]:
    return re.findall(r"^(?:\+\+\+|---) [ab]/(\S+)", patch.read_text(errors="replace"), re.M)


def _needs_project(patch: Path) -> bool:
    """Patches up to 2022 name files in the imported projects (``znp_*/...``); the 2023
    one also patches ``workspace/znp_*/...`` inside the SDK. Both wait for the import."""
    return any(path.startswith(("znp_", "workspace/")) for path in _patch_paths(patch))


def _git(command: list[str], cwd: Path, extra_env: dict[str, str]) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(command, cwd=cwd, text=True, check=False,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              env={**os.environ, **extra_env})
    except OSError as exc:
        raise BuildError(f"cannot run git ({exc.strerror or exc}): install Git (Git for Windows on Windows)", 2) from None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    boards = "\n".join(f"  {name:<28} {board.sticks}" for name, board in BOARDS.items())
    parser = argparse.ArgumentParser(
        prog="build.py",
        description="Build a Z-Stack coordinator image with the Enecsys TC link key (see firmware/README.md).",
        epilog=f"boards:\n{boards}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--sdk", required=True, help="SimpleLink CC13xx/CC26xx SDK folder")
    parser.add_argument("--zstack", required=True, help="checkout of Koenkk/Z-Stack-firmware")
    parser.add_argument("--board", required=True, help=f"one of: {', '.join(BOARDS)}")
    parser.add_argument("--ccs", help="Code Composer Studio folder (the one holding eclipse/)")
    parser.add_argument("--eclipse", help="the CCS eclipse launcher itself (instead of --ccs)")
    parser.add_argument("--workspace", help="CCS workspace (default: SDK/workspace, where Koenkk's "
                        "patches expect it: they include preinclude.h by a path relative to it)")
    parser.add_argument("--output-dir", default="build/firmware", help="where the named .hex goes (default: %(default)s)")
    parser.add_argument("--key", default=ENECSYS_KEY.decode(), help="TC link key, 16 ASCII characters (default: %(default)s)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        Builder(args).run_all()
    except BuildError as exc:
        print(f"build.py: error: {exc}", file=sys.stderr)
        return exc.status
    return 0


if __name__ == "__main__":
    sys.exit(main())
