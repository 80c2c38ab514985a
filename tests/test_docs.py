"""The documentation stays true to the tree: every settings key with its default, every ``make``
target and ``solargw`` command it names exists, every relative link and anchor resolves."""
from __future__ import annotations

import argparse
import dataclasses
import re
import tomllib
from pathlib import Path

import pytest

from appliance import cli, settings

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
MANUAL = REPO / "docs" / "manual.md"

FENCE = re.compile(r"^(```|~~~).*?^\1\s*$", re.M | re.S)
INLINE_CODE = re.compile(r"`[^`\n]+`")
LINK = re.compile(r"!?\[[^\]\n]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$", re.M)


def page_id(path: Path) -> str:
    return str(path.relative_to(REPO))


def prose(text: str) -> str:
    """The text without fenced blocks and inline code (where links are not links)."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def code(text: str) -> list[str]:
    """Fenced blocks and inline code spans: where commands are written."""
    blocks = [m.group(0) for m in FENCE.finditer(text)]
    return blocks + INLINE_CODE.findall(FENCE.sub("", text))


def anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens, repeats numbered."""
    seen: dict[str, int] = {}
    result = set()
    for match in HEADING.finditer(FENCE.sub("", path.read_text())):
        slug = re.sub(r"[^\w\- ]", "", match.group(2).lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        result.add(slug if count == 0 else f"{slug}-{count}")
    return result


def links() -> list[tuple[Path, str]]:
    return [(page, target) for page in PAGES for target in LINK.findall(prose(page.read_text()))
            if not re.match(r"[a-z]+:", target)]


@pytest.mark.parametrize("page,target", links(), ids=lambda v: v if isinstance(v, str) else page_id(v))
def test_relative_links_resolve(page, target):
    path_part, _, fragment = target.partition("#")
    resolved = (page.parent / path_part).resolve() if path_part else page
    assert resolved.exists(), f"{page_id(page)}: {target} points at nothing"
    if fragment:
        assert resolved.suffix == ".md", f"{page_id(page)}: {target}: an anchor in a file that is not Markdown"
        assert fragment in anchors(resolved), (
            f"{page_id(page)}: {target}: no heading #{fragment} in {page_id(resolved)}")


def test_pages_link_to_each_other():
    readme = prose((REPO / "README.md").read_text())
    for page in PAGES[1:]:
        assert f"docs/{page.name}" in readme, f"README does not list {page_id(page)}"


def makefile_targets() -> set[str]:
    return set(re.findall(r"^([A-Za-z][\w.-]*):(?!=)", (REPO / "Makefile").read_text(), re.M))


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_make_targets_exist(page):
    named = {target for snippet in code(page.read_text()) for target in re.findall(r"\bmake ([a-z][\w-]*)", snippet)}
    assert named <= makefile_targets(), f"{page_id(page)} names make targets the Makefile lacks: {named - makefile_targets()}"


def test_readme_names_the_two_commands_and_the_demo():
    named = {t for snippet in code((REPO / "README.md").read_text()) for t in re.findall(r"\bmake ([a-z][\w-]*)", snippet)}
    assert {"image", "test", "demo"} <= named


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse keeps its sub-parsers here and nowhere public
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_solargw_commands_exist(page):
    top = _subcommands(cli.build_parser())
    wrong = []
    for snippet in code(page.read_text()):
        for command, action in re.findall(r"(?:^|[\s`$/])solargw ([a-z][\w-]*)(?: ([a-z][\w-]*))?", snippet):
            if command not in top:
                wrong.append(command)
                continue
            actions = _subcommands(top[command])
            if actions and action and action not in actions:
                wrong.append(f"{command} {action}")
    assert not wrong, f"{page_id(page)} names solargw commands that do not exist: {wrong}"


def documented_settings() -> dict[str, dict[str, str]]:
    """``{section: {key: default as written}}`` from the manual's settings reference."""
    text = MANUAL.read_text()
    start = text.index("## Settings reference")
    end = text.find("\n## ", start + 1)
    reference = text[start:end if end != -1 else None]
    sections: dict[str, dict[str, str]] = {}
    current = None
    for line in reference.splitlines():
        heading = re.match(r"### `\[(\w+)\]`", line)
        if heading:
            current = sections.setdefault(heading.group(1), {})
            continue
        row = re.match(r"\| `(\w+)` \| `([^`]*)` \|", line)
        if row and current is not None:
            current[row.group(1)] = row.group(2)
    return sections


def settings_sections() -> dict[str, object]:
    defaults = settings.Settings()
    return {f.name: getattr(defaults, f.name) for f in dataclasses.fields(settings.Settings) if f.name != "path"}


def test_every_settings_section_documented():
    assert set(documented_settings()) == set(settings_sections())


@pytest.mark.parametrize("section", sorted(settings_sections()))
def test_every_settings_key_documented_with_its_default(section):
    values = settings_sections()[section]
    documented = documented_settings().get(section, {})
    keys = {f.name for f in dataclasses.fields(values)}
    assert set(documented) == keys, (
        f"[{section}]: missing from the manual {sorted(keys - set(documented))}, "
        f"not settings {sorted(set(documented) - keys)}")
    for key, written in documented.items():
        assert tomllib.loads(f"v = {written}")["v"] == getattr(values, key), (
            f"[{section}] {key}: the manual says {written}, the default is {getattr(values, key)!r}")


DEVELOPMENT = REPO / "docs" / "development.md"
TABLE_ROW_NAME = re.compile(r"^\|\s*(?:\*\*)?`([^`]+)`(?:\*\*)?\s*\|")


def layout_names() -> dict[Path, set[str]]:
    """The paths development.md's Layout tables name, by the directory they are relative to.

    A bold line before a table says its directory (``**`appliance/`**``, ``**`tests/`**``); any other
    bold line (``**Around the package**``) means the repository's root. A row names its path in
    backticks in its first cell; a row ending in ``/`` is a package or directory."""
    text = DEVELOPMENT.read_text()
    start = text.index("\n## Layout")
    end = text.find("\n## ", start + 1)
    base = REPO
    names: dict[Path, set[str]] = {}
    for line in text[start:end if end != -1 else None].splitlines():
        if line.startswith("**"):
            heading = re.match(r"\*\*`([^`]+)/`\*\*", line)
            base = REPO / heading.group(1) if heading else REPO
            continue
        row = TABLE_ROW_NAME.match(line)
        if row:
            names.setdefault(base, set()).add(row.group(1))
    return names


def required_layout() -> dict[str, tuple[Path, set[str]]]:
    """What the Layout must name: every module and subpackage of ``appliance/`` (a package's row
    stands for its ``__init__.py``), every benchmark, every Ansible role, every test module."""
    package = REPO / "appliance"
    modules = {str(p.relative_to(package)) for p in package.rglob("*.py") if p.name != "__init__.py"}
    packages = {f"{p.parent.relative_to(package)}/" for p in package.rglob("*/__init__.py")}
    tests = REPO / "tests"
    return {
        "appliance": (package, modules | packages),
        "bench": (REPO, {f"bench/{p.name}" for p in (REPO / "bench").glob("*.py") if p.name != "__init__.py"}),
        "ansible roles": (REPO, {f"ansible/roles/{p.name}" for p in (REPO / "ansible" / "roles").iterdir() if p.is_dir()}),
        "tests": (tests, {p.name for p in tests.glob("*.py")}
                  | {f"support/{p.name}" for p in (tests / "support").glob("*.py") if p.name != "__init__.py"}),
    }


@pytest.mark.parametrize("area", sorted(required_layout()))
def test_layout_names_every_module_and_role(area):
    base, required = required_layout()[area]
    missing = required - layout_names().get(base, set())
    assert not missing, f"docs/development.md, Layout: no row for {sorted(missing)} (under {base.relative_to(REPO.parent)})"


def test_layout_names_only_what_exists():
    stale = [str((base / name).relative_to(REPO)) for base, names in layout_names().items() for name in names
             if not (base / name).exists() or (name.endswith("/") and not (base / name).is_dir())]
    assert not stale, f"docs/development.md, Layout: rows for paths that do not exist: {sorted(stale)}"


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_benchmarks_named_exist(page):
    """``python -m bench NAME``, ``python -m bench.NAME`` and ``bench.NAME`` name a module of ``bench/``."""
    known = {p.stem for p in (REPO / "bench").glob("*.py") if not p.stem.startswith("__")}
    named = set()
    for snippet in code(page.read_text()):
        named |= set(re.findall(r"-m bench (?!\[)([a-z_]+)", snippet))
        named |= set(re.findall(r"\bbench\.([a-z_]+)\b", snippet))
    assert named <= known, f"{page_id(page)} names benchmarks bench/ lacks: {sorted(named - known)}"
