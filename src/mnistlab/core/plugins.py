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
    rather than a `kind`). A plug-in that fails to load (a missing module, an error in its code, an
    object that is not a `kind`) is logged and returned, {name: why in one line}, never raised: it
    must not take the built-ins down with it, and the command that names it prints why."""
    module = importlib.import_module(package)
    for info in pkgutil.iter_modules(module.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package}.{info.name}")
    broken: dict[str, str] = {}
    for ep in entry_points(group=group):
        try:
            obj = ep.load()
            obj = obj() if callable(obj) and not isinstance(obj, kind) else obj
            named = getattr(obj, "name", ep.name)
            if named != ep.name:  # commands find it by the entry point's name (and the help lists that)
                raise ValueError(f"it registers a {what} named {named!r}; name the entry point {named!r} too")
            register(obj)
        except Exception as e:
            broken[ep.name] = f"the plug-in {what} {ep.name!r} ({ep.value}) failed to load: {one_line(e)}"
            log.warning("mnistlab: %s", broken[ep.name])
    return broken


def one_line(error: BaseException) -> str:
    """An exception as one line: its type and the first line of its message (a SyntaxError's or a
    chained error's message may run over several), so the CLI prints one line, not a traceback."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
