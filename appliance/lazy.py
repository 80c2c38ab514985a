"""Deferred imports: a module named here is bound when imported, and run when first used.

Libraries import modules at start-up for features the services never use (``cli.DEFERRED``);
deferring them takes time off every service's start and MiB off its memory
(``python -m bench footprint``). A module that is used after all is loaded then, as usual.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from typing import Sequence


class _Deferring(importlib.abc.MetaPathFinder):
    def __init__(self, names: Sequence[str]):
        self.names = frozenset(names)

    def find_spec(self, fullname: str, path, target=None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.names:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = importlib.util.LazyLoader(spec.loader)
        return spec


def defer(*names: str) -> None:
    """Import the modules ``names`` lazily from now on, in this process."""
    if not any(isinstance(finder, _Deferring) and finder.names >= set(names) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Deferring(names))
