"""The task lists that help texts show (`train --help`: every task and what it is; `probe --help`: the
tasks with an encoder; `sample --help`: each generator's samplers; ...), read from the light task
catalogue (core.task_catalog), never from the registry, which imports torch and every task module.
Plug-in tasks come with them: their facts from their `mnistlab.task_info` entry points (a plain
mapping in a light module), or, without one, their names in the full list only. What a task can do
is checked, by the registry, when a command runs."""

from __future__ import annotations

import sys
from functools import cache

from mnistlab.core import task_catalog


def _entries() -> tuple[task_catalog.TaskEntry, ...]:
    """Every task in listing order, the built-ins first, then the plug-ins."""
    return _entries_on(tuple(sys.path))


@cache
def _entries_on(path: tuple[str, ...]) -> tuple[task_catalog.TaskEntry, ...]:
    """The tasks installed on import path `path`, read once per process and path (each parser's help
    asks; a plug-in's info module is imported once)."""
    plugins = sorted(task_catalog.plugin_entries(), key=lambda e: (e.order, e.name))
    return (*task_catalog.entries(), *plugins)


def task_list() -> str:
    """ "ae: the report's ...; dae: ...; plug-ins: linae (a linear autoencoder), other" """
    listed = "; ".join(f"{e.name}: {e.description}" for e in _entries() if not e.plugin)
    plugins = [f"{e.name} ({e.description})" if e.description else e.name for e in _entries() if e.plugin]
    return f"{listed}; plug-ins: {', '.join(plugins)}" if plugins else listed


def with_role(role: str) -> str:
    return ", ".join(e.name for e in _entries() if role in e.roles) or "none"


def with_option(option: str) -> str:
    return ", ".join(e.name for e in _entries() if option in e.options) or "none"


def taking_sample_option(option: str) -> str:
    return ", ".join(e.name for e in _entries() if option in e.sample_options) or "none"


def evaluating_beside_baseline() -> str:
    """Tasks whose `evaluate` takes a baseline to compare with (a task may take --baseline in training
    only, to start from it)."""
    return ", ".join(e.name for e in _entries() if e.eval_baseline) or "none"


def samplers() -> str:
    """ "ae, dae: gmm [default], gaussian, uniform; gan, cgan: prior; ...": each generator's samplers,
    tasks with the same list grouped, the default first."""
    groups: dict[tuple[str, ...], list[str]] = {}
    for e in _entries():
        if "generator" in e.roles and e.samplers:
            groups.setdefault(e.samplers, []).append(e.name)
    return "; ".join(
        f"{', '.join(names)}: {s[0]} [default]{''.join(', ' + x for x in s[1:])}"
        for s, names in groups.items()
    )


def names() -> str:
    """ "ae, dae, ..., classifier, linae": the built-in tasks in listing order, then the plug-ins."""
    return ", ".join(e.name for e in _entries())
