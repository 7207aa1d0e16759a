"""Entry point of `secondline`: global options, then one command per domain module."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence

from broker.cli import (
    agents,
    cluster,
    connectors,
    directories,
    kb,
    local,
    sessions,
    staff,
    tickets,
)
from broker.cli.client import CliError
from broker.cli.output import TerminalGuard
from broker.cli.runtime import Handler, Runtime
from broker.errors import BrokerError

# Every command module registers its sub-commands; domains add theirs here.
COMMAND_MODULES = [local, staff, agents, tickets, connectors, directories, kb, sessions, cluster]


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
    """Run one command. Every failure a user can cause ends as one line on stderr and a
    non-zero status, never a traceback; a traceback means a bug in Secondline."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # Alembic announces its plugins and each migration at INFO: noise on a working broker.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    handler: Handler = args.handler
    out, err = sys.stdout, sys.stderr
    # Whatever a command prints (broker messages included) reaches the terminal escaped.
    sys.stdout, sys.stderr = TerminalGuard(out), TerminalGuard(err)
    try:
        status = handler(Runtime(args))
        sys.stdout.flush()  # a reader that left shows here, where it is handled below
        return status
    except CliError as exc:
        print(f"secondline: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except BrokerError as exc:
        print(f"secondline: {exc.message}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return stdout_closed()
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        print(f"secondline: {os_error_text(exc)}", file=sys.stderr)
        return 1
    finally:
        sys.stdout, sys.stderr = out, err


def stdout_closed() -> int:
    """The reader of our output went away (`secondline session list | head`): stop quietly,
    with the status a process killed by SIGPIPE has, as other command-line tools do."""
    # Python flushes stdout once more at exit, which would fail again: point it at /dev/null.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 128 + signal.SIGPIPE


def os_error_text(exc: OSError) -> str:
    """One line for a file or network failure: what failed, on which file, and why."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    where = f"{exc.filename}: " if exc.filename else ""
    return f"{where}{reason}"


if __name__ == "__main__":
    sys.exit(main())
