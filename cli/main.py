"""The `longseq` command line: one subcommand per stage.

Each subcommand is a `Command` (cli/arguments.py): a function adding its arguments and a
function calling into sources/, etl/ or trainer/, where the work lives. Packages above the
command line add subcommands through the `longseq.commands` entry point group (bench/
adds `longseq bench`), so the command line never imports them. Errors a user can fix
(LongseqError, a bad path) print one line to stderr and exit non-zero.
"""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import entry_points
from typing import Sequence

from longseq.cli.arguments import Command, HelpFormatter, Parser
from longseq.cli.data_commands import COMMANDS as DATA_COMMANDS
from longseq.cli.demo import DEMO
from longseq.cli.model_commands import COMMANDS as MODEL_COMMANDS
from longseq.schemas.errors import LongseqError

PLUGIN_GROUP = "longseq.commands"


def commands() -> list[Command]:
    """This package's subcommands in pipeline order, then those that other packages add."""
    found = [*DATA_COMMANDS, *MODEL_COMMANDS, DEMO]
    for plugin in sorted(entry_points(group=PLUGIN_GROUP), key=lambda e: e.name):
        try:
            found.append(plugin.load())
        except Exception as e:  # a broken plugin must not take the other subcommands down
            print(f"longseq: warning: subcommand {plugin.name!r} ({plugin.value}) did not load: {e}", file=sys.stderr)
    return found


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="longseq", formatter_class=HelpFormatter,
                    description="Request-level training data with 10k-event histories, and an STCA ranking model.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for command in commands():
        p = sub.add_parser(command.name, help=command.help, description=command.help, formatter_class=HelpFormatter)
        command.arguments(p)
        p.set_defaults(run=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except LongseqError as e:
        print(f"longseq {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except OSError as e:  # bad paths: not there, not writable, a file where a directory should be
        where = f": {e.filename}" if e.filename else ""
        print(f"longseq {args.command}: error: {e.strerror or e}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"longseq {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
