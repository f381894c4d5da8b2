"""Loading what registers itself: the modules of a package of built-ins, then a third party's objects
named by the entry points of a group. Shared by the task registry and the stage registry."""

from __future__ import annotations

import importlib
import logging
import pkgutil
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

log = logging.getLogger("mnistlab")


def load_plugins(
    package: str, group: str, register: Callable[[Any], Any], kind: type, what: str
) -> dict[str, str]:
    """Import every public module of `package` (each built-in registers itself on import), then load each
    entry point of `group` and pass its object to `register` (calling it first when it is a factory
    rather than a `kind`). A plug-in that fails to load is logged and returned, {name: why}, never
    raised: it must not take the built-ins down with it."""
    module = importlib.import_module(package)
    for info in pkgutil.iter_modules(module.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package}.{info.name}")
    broken: dict[str, str] = {}
    for ep in entry_points(group=group):
        try:
            obj = ep.load()
            register(obj() if callable(obj) and not isinstance(obj, kind) else obj)
        except Exception as e:
            broken[ep.name] = f"the plug-in {what} {ep.name!r} ({ep.value}) failed to load: {e}"
            log.warning("mnistlab: %s", broken[ep.name])
    return broken
