"""Command line: parse, build the config, call one function per subcommand. Nothing else lives here:
each command group is a module of this package (train, explore, study, data) that adds its parsers
and holds its thin command functions.

Start-up: `mnistlab --help`, `train --help`, `--version`, a mistyped command and `pretrained list` (a
command marked `light`: it reads files and writes no run folder) answer without importing torch, numpy
or any task module (benchmarks/cli_start.py times them). Every command module imports
only the standard library, core.errors and the light task catalogue at module level; what a command
needs is imported inside its command function. Help texts list the tasks from that catalogue
(core.task_catalog, which the built-in task modules build their TaskSpec from: one source), and the
plug-ins from their entry points (`mnistlab.task_info`, docs/plugins.md); a task's name is checked when
the command runs, by the registry.
All the parsers are built on every call, since that costs milliseconds once nothing heavy is imported:
each command's one-line help and options stay in its module, with no second table of commands here.

Exit codes: 0 done, 1 an OS error (a read-only folder, a full disk, a name too long: one line naming
the path), 2 bad input (one-line message), 3 training stopped on a non-finite loss, 4 search workers
died, 130 interrupted by Ctrl-C, 143 by SIGTERM, 129 by SIGHUP (the message says what was saved;
rerun to resume), 141 stdout closed early (`mnistlab pretrained list --json | head`: nothing printed).
"""

from __future__ import annotations

import argparse
import difflib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

from mnistlab import __version__
from mnistlab.core.errors import ConfigError, Stopped, WorkersDied, os_error_line, saved_note

EXIT_BAD_INPUT = 2
EXIT_NON_FINITE = 3
EXIT_WORKERS_DIED = 4
EXIT_OS_ERROR = 1
EXIT_BROKEN_PIPE = 128 + 13  # as a shell reports a command killed by SIGPIPE
# One-line errors of modules that import torch, by name (see `_loaded`): bad input (exit 2), and a
# training stopped on a non-finite loss (exit 3).
BAD_INPUT_ERRORS = ("mnistlab.data.datasets:DataError", "mnistlab.runs.checkpoint:CheckpointError")
NON_FINITE_ERRORS = ("mnistlab.training.loop:NonFiniteLossError",)
# Signals that stop a command as Ctrl-C does: `kill PID` (SIGTERM) from a service manager or a batch
# scheduler, SIGHUP when the terminal closes. Left at their default they would end this process at
# once, leaving a study's stage workers training on with run.json saying "running".
STOP_SIGNALS = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGHUP") if hasattr(signal, n))


def build_parser() -> argparse.ArgumentParser:
    from mnistlab.cli import compare, data, explore, pretrained, study, train

    parser = argparse.ArgumentParser(
        prog="mnistlab",
        description="Train, evaluate, compare and explore autoencoders, VAEs and GANs on MNIST-like digits.",
    )
    parser.add_argument("--version", action="version", version=f"mnistlab {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for group in (train, explore, study, data, compare, pretrained):
        group.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()  # light: task lists from the catalogue, no task module (cli.task_help)
    unknown = _unknown_command(parser, argv)
    if unknown:
        print(f"mnistlab: error: {unknown}", file=sys.stderr)
        return EXIT_BAD_INPUT
    args = parser.parse_args(argv)  # --help and --version end here, before anything heavy is imported
    if args.command is None:  # bare `mnistlab`: the help, not an error
        parser.print_help()
        return 0
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    try:
        with _command_context(args, argv), _stop_signals_raise(Stopped):
            return args.func(args)
    except BrokenPipeError:
        _quiet_stdout()
        return EXIT_BROKEN_PIPE
    except OSError as e:  # read-only folder, full disk, name too long, not a folder: one line, no traceback
        print(f"mnistlab: error: {os_error_line(e)}", file=sys.stderr)
        return EXIT_OS_ERROR
    except (ConfigError, *_loaded(BAD_INPUT_ERRORS)) as e:
        print(f"mnistlab: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except _loaded(NON_FINITE_ERRORS) as e:
        print(f"mnistlab: training diverged: {e}", file=sys.stderr)
        return EXIT_NON_FINITE
    except WorkersDied as e:
        print(f"mnistlab: search incomplete: {e}; rerun the same command to finish it", file=sys.stderr)
        return EXIT_WORKERS_DIED
    except KeyboardInterrupt as e:
        next_step = getattr(e, "next_step", None)  # set where rerunning as usual would not work
        print(f"mnistlab: {_interrupted_line(args.command, saved_note(e), next_step)}", file=sys.stderr)
        return 128 + e.signum if isinstance(e, Stopped) else 130


def _command_context(args: argparse.Namespace, argv: list[str]):
    """What a command runs inside: `runs.folder.cli_command` (the run folders it writes record the
    command; the folders it claims stay locked until it ends), imported only now, since it imports
    torch. A command that only reads files and writes no run folder says so with
    `set_defaults(light=True)` (`pretrained list`) and runs without it, as fast as --help."""
    if getattr(args, "light", False):
        return nullcontext()
    from mnistlab.runs.folder import cli_command

    return cli_command(argv)


def _loaded(errors: tuple[str, ...]) -> tuple[type[BaseException], ...]:
    """The exception classes "module:Name" of `errors` whose modules have been imported: one that was
    not cannot have raised anything, and importing it here would import torch for every error. An
    `except` clause evaluates this only while matching an exception, so after the command ran."""
    found = []
    for ref in errors:
        module, name = ref.split(":")
        if module in sys.modules:
            found.append(getattr(sys.modules[module], name))
    return tuple(found)


def _interrupted_line(command: str, saved: str | None, next_step: str | None = None) -> str:
    """What an interrupted command tells: what it had saved (training says which epoch, or that none
    had finished yet) and how to go on (`next_step`, when the command said)."""
    if command == "serve":
        return "server stopped"
    if command == "run":
        return (
            "interrupted; finished stages are kept and each stage's state is in run.json; "
            "rerun the same command to resume"
        )
    if saved is not None and next_step is not None:
        return f"interrupted; {saved}; {next_step}"
    again = "rerun the same command" if command == "search" else "rerun with --resume"
    if saved is not None:
        return f"interrupted; {saved}; {again} to continue"
    return f"interrupted; {again} to continue from the last finished epoch, if any"


@contextmanager
def _stop_signals_raise(stopped: type[BaseException]) -> Iterator[None]:
    """While a command runs, SIGTERM and SIGHUP raise `stopped(signum)` (a KeyboardInterrupt) in the
    main thread, as Ctrl-C does, so that the same cleanup runs. A second one during that cleanup is
    ignored: it would cut short the very cleanup (stopping workers, saving run.json) it asks for."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set them
        yield
        return

    def stop(signum: int, frame) -> None:
        for s in STOP_SIGNALS:
            signal.signal(s, signal.SIG_IGN)
        raise stopped(signum)

    previous = {s: signal.signal(s, stop) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _quiet_stdout() -> None:
    """stdout's reader has gone (`| head`): point stdout at /dev/null so that the interpreter's last
    flush at exit does not raise BrokenPipeError again (the Python docs' recipe, signal module)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout closed or replaced (a test's capture): nothing to flush
        pass


def _unknown_command(parser: argparse.ArgumentParser, argv: list[str]) -> str | None:
    """ "unknown command 'trian'; did you mean 'train'? ..." for a first word that is no command (argparse
    would list every choice without a guess), else None."""
    first = next((a for a in argv if not a.startswith("-")), None)
    commands = next(a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if first is None or first in commands:  # (the options before a command take no values)
        return None
    close = difflib.get_close_matches(first, list(commands), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown command {first!r}; {hint}commands: {', '.join(commands)} (mnistlab --help)"


if __name__ == "__main__":
    sys.exit(main())
