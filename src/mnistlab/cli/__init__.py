"""Command line: parse, build the config, call one function per subcommand. Nothing else lives here:
each command group is a module of this package (train, explore, study, data) that adds its parsers
and holds its thin command functions.

Exit codes: 0 done, 2 bad input (one-line message), 3 training stopped on a non-finite loss,
130 interrupted (the last epoch's checkpoint is kept; rerun with --resume).
"""

from __future__ import annotations

import argparse
import difflib
import logging
import sys

from mnistlab import __version__

EXIT_BAD_INPUT = 2
EXIT_NON_FINITE = 3
EXIT_WORKERS_DIED = 4


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
    from mnistlab.core.errors import ConfigError, WorkersDied
    from mnistlab.data.datasets import DataError
    from mnistlab.runs.checkpoint import CheckpointError
    from mnistlab.runs.folder import cli_command
    from mnistlab.training.loop import NonFiniteLossError

    try:
        parser = build_parser()  # lists the registered tasks: a broken plug-in is named here
    except ConfigError as e:
        print(f"mnistlab: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    unknown = _unknown_command(parser, argv)
    if unknown:
        print(f"mnistlab: error: {unknown}", file=sys.stderr)
        return EXIT_BAD_INPUT
    args = parser.parse_args(argv)
    if args.command is None:  # bare `mnistlab`: the help, not an error
        parser.print_help()
        return 0
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    try:
        with cli_command(argv):
            return args.func(args)
    except (ConfigError, DataError, CheckpointError) as e:
        print(f"mnistlab: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except NonFiniteLossError as e:
        print(f"mnistlab: training diverged: {e}", file=sys.stderr)
        return EXIT_NON_FINITE
    except WorkersDied as e:
        print(f"mnistlab: search incomplete: {e}; rerun the same command to finish it", file=sys.stderr)
        return EXIT_WORKERS_DIED
    except KeyboardInterrupt:
        if args.command == "serve":
            print("mnistlab: server stopped", file=sys.stderr)
        else:
            again = "rerun the same command to resume" if args.command == "run" else "rerun with --resume"
            print(f"mnistlab: interrupted; the last finished epoch is checkpointed, {again}", file=sys.stderr)
        return 130


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
