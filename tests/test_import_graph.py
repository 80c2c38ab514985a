"""No import circle anywhere in ``appliance/``, and no heavy library loaded by the command line itself.

Every module's imports are read with ``ast``: module-level ones and those inside functions
both count (a function-level import only delays a circle, it does not remove it); imports
under ``if TYPE_CHECKING:`` do not (they never run). ``from package import name`` is an
edge to ``package.name`` when that is a module, else to ``package``. Dynamic imports
(``importlib.import_module``, used by the CLI dispatcher) are not seen.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import appliance

PACKAGE_DIR = Path(appliance.__file__).parent


def module_names() -> dict[str, Path]:
    names = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, module: str, is_package: bool) -> list[tuple[str, str | None]]:
    """Every import in ``tree`` as (module, name): name is None for ``import module``, else the
    name taken by ``from module import name``. TYPE_CHECKING blocks are left out."""
    found: list[tuple[str, str | None]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((alias.name, None) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([base] if base else []))
            found.extend((base, alias.name) for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> the package's modules it imports."""
    names = module_names()
    graph: dict[str, set[str]] = {}
    for module, path in names.items():
        targets = set()
        for base, name in _imports(ast.parse(path.read_text(), str(path)), module, path.name == "__init__.py"):
            target = f"{base}.{name}" if name and f"{base}.{name}" in names else base
            if target in names and target != module:
                targets.add(target)
        graph[module] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), as sorted lists."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def connect(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def test_the_graph_sees_imports_of_every_kind():
    graph = import_graph()
    assert "appliance.reading" in graph["appliance.pipeline"]  # module level, ``from x import y``
    assert "appliance.net.service" in graph["appliance.commands.net"]  # inside a function
    assert "appliance.mqtt.discovery" in graph["appliance.mqtt.publisher"]


def test_the_checker_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_type_checking_imports_are_left_out():
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import x\nelse:\n    import y\n"
                     "def f():\n    import z\n")
    modules = {base for base, _ in _imports(tree, "m", False)}
    assert modules == {"typing", "y", "z"}


def test_no_import_circle_in_the_package():
    found = cycles(import_graph())
    assert not found, "import circles: " + "; ".join(" <-> ".join(group) for group in found)


HEAVY = ("pyroute2", "zigpy", "zigpy_znp", "flask", "werkzeug", "gunicorn", "paho", "aiohttp", "jsonschema",
         "prometheus_client")


def test_the_command_line_loads_no_heavy_library_before_a_command_needs_it():
    """Issue 15: every ``solargw`` command builds the whole parser; a library imported at the top of
    a module it reads (pyroute2 through net.plan once) costs every command and service its time and
    memory. Each service imports what it needs when it starts."""
    import subprocess
    import sys

    probe = ("import sys, appliance.cli as cli; cli.build_parser(); "
             f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    assert loaded == [], f"imported by building the command line: {loaded}"


SERVICES = ("web", "zigbee", "net")


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_builds_the_command_line_of_its_own_command_only(service):
    """Issue 15: ``solargw web``/``zigbee``/``net`` used to register every command, importing the
    other commands' modules (the access point's config renderers, the simulators, the decoder:
    ~0.4-0.6 MiB of each service's heap). ``cli.main`` builds the parser of the command it runs;
    its own options and ``--help`` are the same."""
    import subprocess
    import sys

    probe = ("import contextlib, io, sys, appliance.cli as cli\n"
             f"with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):\n"
             f"    cli.main([{service!r}, '--help'])\n"
             f"assert 'usage: solargw {service}' in out.getvalue(), out.getvalue()\n"
             "print(' '.join(sorted(m for m in sys.modules if m.startswith(('appliance.commands.', 'appliance.sim')))))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    assert loaded == [f"appliance.commands.{service}"]


def test_help_and_mistakes_still_see_every_command():
    from appliance import cli

    assert cli.command_in(["-v", "zigbee", "--device", "web"]) == "zigbee"
    assert cli.command_in(["--help"]) is None and cli.command_in(["webb"]) is None
    assert set(cli.build_parser()._subparsers._group_actions[0].choices) == set(cli.COMMAND_MODULES)


ZIGBEE_UNUSED = ("aiohttp", "jsonschema", "zigpy.ota.providers", "dns.resolver", "urllib.request", "intelhex")
"""Imported at the top of libraries (zigpy's OTA, paho, our firmware checker) for what the Zigbee
service never does: fetching OTA images, DNS SRV and proxy lookups, reading .hex files."""


def test_the_zigbee_service_runs_without_the_libraries_it_never_uses():
    """Issue 15: what ``solargw zigbee`` imports (with ``cli.DEFERRED``, as ``cli.main`` sets it up),
    zigpy-znp's application made from the service's zigpy configuration, and its MQTT publisher
    connecting (to a closed port), run none of ``ZIGBEE_UNUSED``: deferred modules are bound, not
    run (about 0.7 MiB of the service's heap with urllib.request and intelhex, about 90 ms of its
    start with zigpy's OTA providers). The firmware checker still reads a file."""
    import socket
    import subprocess
    import sys

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    probe = ("import dataclasses, sys, time\n"
             "from appliance import cli\n"
             "from appliance.lazy import defer\n"
             "defer(*cli.DEFERRED)\n"
             "import appliance.zigbee.service\n"
             "import asyncio\n"
             "from zigpy_znp.zigbee.application import ControllerApplication\n"
             "from appliance.zigbee.application import zigpy_config\n"
             "from appliance.mqtt import make_publisher\n"
             "from appliance.settings import MqttSettings, Settings\n"
             "async def make_application():\n"
             "    ControllerApplication(zigpy_config(Settings(), '/dev/null', None))\n"
             "asyncio.run(make_application())\n"
             f"settings = dataclasses.replace(Settings(), mqtt=MqttSettings(host='127.0.0.1', port={port}))\n"
             "publisher = make_publisher(settings, 'zigbee')\n"
             "time.sleep(0.5)\n"
             "publisher.close()\n"
             f"print(' '.join(m for m in {ZIGBEE_UNUSED!r}\n"
             "               if m in sys.modules and type(sys.modules[m]).__name__ != '_LazyModule'))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    assert loaded == [], f"the Zigbee service ran {loaded}"


PYROUTE2_UNUSED = ("pyroute2.ndb", "pyroute2.ipdb", "pyroute2.conntrack", "pyroute2.ipset", "pyroute2.ipvs",
                   "pyroute2.nftables", "pyroute2.plan9")
"""Imported by pyroute2's package ``__init__``, never used by the net service."""


def _loaded_after(code: str) -> list[str]:
    import subprocess
    import sys

    probe = f"import sys\n{code}\nprint(' '.join(m for m in {PYROUTE2_UNUSED!r} if m in sys.modules))"
    return subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()


def test_the_net_service_loads_only_the_netlink_it_uses():
    """Issue 15: ``from pyroute2 import IW`` runs pyroute2's ``__init__``, which imports every API
    it has (~4 MiB of the net service's memory). The service's run path (its module, the interface
    through rtnetlink, the stations through nl80211) loads IPRoute and IW and none of the rest."""
    loaded = _loaded_after("import appliance.net.service, appliance.net.radio\n"
                           "from appliance.net import clients, interface\n"
                           "assert interface.ipv4_addresses('lo') == ['127.0.0.1/8'], interface.ipv4_addresses('lo')\n"
                           "clients.read_stations('lo')")
    assert loaded == [], f"the net service imported {loaded}"


def test_the_rest_of_pyroute2_still_imports_after_the_netlink_subset():
    """The package is whole for the rest of the process: a name only its ``__init__`` defines runs
    that ``__init__`` when first asked for."""
    loaded = _loaded_after("import appliance.net.netlink as netlink\n"
                           "from pyroute2 import NDB, IPRoute\n"
                           "import pyroute2\n"
                           "assert IPRoute is netlink.IPRoute and pyroute2.__version__ != 'unknown'")
    assert "pyroute2.ndb" in loaded


def test_another_pyroute2_layout_falls_back_to_the_whole_package():
    loaded = _loaded_after("import appliance.net.netlink as netlink\n"
                           "for name in [n for n in sys.modules if n.startswith('pyroute2')]:\n"
                           "    del sys.modules[name]\n"
                           "netlink.SUBMODULES = ('pyroute2.iproute', 'pyroute2.no_such_module')\n"
                           "netlink._import_submodules()\n"
                           "import pyroute2\n"
                           "assert not hasattr(pyroute2, '__getattr__') and pyroute2.IW")
    assert "pyroute2.ndb" in loaded
