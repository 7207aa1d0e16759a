"""Entry point of `secondline`: global options, then one command per domain module."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from broker.cli import agents, kb, local, sessions, staff, tickets
from broker.cli.client import CliError
from broker.cli.runtime import Handler, Runtime

# Every command module registers its sub-commands; domains add theirs here.
COMMAND_MODULES = [local, staff, agents, tickets, kb, sessions]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="secondline",
        description="Secondline broker administration. Global options come before the command.",
    )
    parser.add_argument("--url", help="broker URL, e.g. https://broker.example:8443")
    parser.add_argument("--token", help="API token (prefer SECONDLINE_TOKEN or `secondline login`)")
    parser.add_argument("--ca-cert", help="the broker's CA certificate (PEM)")
    parser.add_argument("--data-dir", help="the broker's data dir, on the broker host")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    handler: Handler = args.handler
    try:
        return handler(Runtime(args))
    except CliError as exc:
        print(f"secondline: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
