"""The task lists that help texts show (`train --help`: every task and what it is; `probe --help`: the
tasks with an encoder; ...), read from the light task catalogue (core.task_catalog), never from the
registry, which imports torch and every task module. Plug-in tasks are named by their entry points;
what they can do is known, and checked, only when a command runs."""

from __future__ import annotations

from mnistlab.core import task_catalog


def task_list() -> str:
    """ "ae: the report's ...; dae: ...; plug-ins: linae" """
    listed = "; ".join(f"{e.name}: {e.description}" for e in task_catalog.entries())
    plugins = task_catalog.plugin_names()
    return f"{listed}; plug-ins: {', '.join(plugins)}" if plugins else listed


def with_role(role: str) -> str:
    return ", ".join(e.name for e in task_catalog.entries() if role in e.roles) or "none"


def with_option(option: str) -> str:
    return ", ".join(e.name for e in task_catalog.entries() if option in e.options) or "none"


def taking_sample_option(option: str) -> str:
    return ", ".join(e.name for e in task_catalog.entries() if option in e.sample_options) or "none"


def evaluating_beside_baseline() -> str:
    """Tasks whose `evaluate` takes a baseline to compare with (a task may take --baseline in training
    only, to start from it)."""
    return ", ".join(e.name for e in task_catalog.entries() if e.eval_baseline) or "none"


def names() -> str:
    """ "ae, dae, ..., classifier, linae": the built-in tasks in listing order, then the plug-ins."""
    return ", ".join([e.name for e in task_catalog.entries()] + task_catalog.plugin_names())
