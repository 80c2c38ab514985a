"""pyroute2's two netlink APIs the net service uses, without the rest of pyroute2.

``IPRoute`` (rtnetlink: links and addresses) and ``IW`` (nl80211: the radio and its stations).
pyroute2's package ``__init__`` imports every API it has (NDB, IPDB, conntrack, ipset, IPVS,
nftables, plan9...), and Python runs a package's ``__init__`` before any of its submodules: a
plain ``from pyroute2 import IW`` costs the net service about 4 MiB and 25 ms for code it never
runs. So the package is registered as a module without running its ``__init__``, and only the
submodules these two live in are imported; they are pyroute2's own classes, used as usual.

The package stays whole for anyone else in the process: a name ``__init__`` would have defined
(``from pyroute2 import NDB``) runs it then, on first use. When pyroute2 is imported already, or
its layout changed so that the submodules do not import alone, the package is imported whole.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
from types import ModuleType

PACKAGE = "pyroute2"
SUBMODULES = ("pyroute2.config.log", "pyroute2.netlink.exceptions", "pyroute2.iproute", "pyroute2.iwutil")
"""What ``IPRoute`` and ``IW`` need, in an order that imports alone (``pyroute2.iproute`` before
anything that reaches ``netlink.rtnl.iprsocket``: they import each other)."""


def _package_unrun() -> ModuleType:
    """``pyroute2`` in ``sys.modules`` with its ``__init__`` not run: submodules import as usual,
    and any other name runs ``__init__`` on first use (PEP 562 ``__getattr__``)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        raise ImportError(f"{PACKAGE} is not an importable package")
    package = importlib.util.module_from_spec(spec)

    def complete(name: str) -> object:
        # ``from pyroute2 import config`` asks for the attribute before importing the submodule:
        # a submodule's name is not a reason to run ``__init__``.
        if name.startswith("__") or importlib.util.find_spec(f"{PACKAGE}.{name}") is not None:
            raise AttributeError(name)
        del package.__dict__["__getattr__"]
        spec.loader.exec_module(package)  # type: ignore[union-attr]
        return getattr(package, name)

    package.__getattr__ = complete  # type: ignore[attr-defined]
    sys.modules[PACKAGE] = package
    return package


def _import_submodules() -> None:
    if PACKAGE in sys.modules:
        return
    _package_unrun()
    try:
        for name in SUBMODULES:
            importlib.import_module(name)
    except ImportError:  # another layout of pyroute2: the whole package, as it intends
        for name in [n for n in sys.modules if n == PACKAGE or n.startswith(PACKAGE + ".")]:
            del sys.modules[name]
        importlib.import_module(PACKAGE)


_import_submodules()

from pyroute2.iproute import IPRoute  # noqa: E402
from pyroute2.iwutil import IW  # noqa: E402
from pyroute2.netlink import NLM_F_DUMP, NLM_F_REQUEST  # noqa: E402
from pyroute2.netlink.exceptions import NetlinkError  # noqa: E402
from pyroute2.netlink.nl80211 import IFTYPE_NAMES, NL80211_NAMES, nl80211cmd  # noqa: E402

__all__ = ["IFTYPE_NAMES", "IPRoute", "IW", "NL80211_NAMES", "NLM_F_DUMP", "NLM_F_REQUEST", "NetlinkError",
           "nl80211cmd"]
