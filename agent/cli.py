"""``secondline-agent``: enroll, run, and let the end user see and steer sessions.

Every command takes ``--state-dir DIR``. Errors print one sentence on stderr that says
what to do, and the exit status is non-zero (1; 2 for usage errors). Heavy modules
(asyncssh, websockets) are imported only by the commands that need them, so ``status``,
``approve`` and friends answer quickly.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from agent.errors import AgentError, NotEnrolledError, StateError
from agent.state import StatePaths, default_state_dir
from agent.state_owner import become_state_owner

PROG = "secondline-agent"


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--state-dir",
        type=Path,
        metavar="DIR",
        help="the agent's state dir (default: /var/lib/secondline-agent as root, "
        "else ~/.local/state/secondline-agent)",
    )
    parser = argparse.ArgumentParser(
        prog=PROG, description="Secondline agent: lets your helpdesk help you on this machine."
    )
    # Also accepted before the command (`secondline-agent --state-dir DIR enroll ...`).
    parser.add_argument(
        "--state-dir", dest="global_state_dir", type=Path, metavar="DIR", help=argparse.SUPPRESS
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    enroll = commands.add_parser(
        "enroll", parents=[common], help="enroll this machine with a broker"
    )
    enroll.add_argument(
        "broker_url",
        metavar="BROKER_URL",
        nargs="?",
        help="for example https://support.example.com:8443",
    )
    enroll.add_argument(
        "token", metavar="TOKEN", nargs="?", help="the enrollment token from the helpdesk"
    )
    enroll.add_argument(
        "--from-file",
        type=Path,
        metavar="FILE",
        help="read BROKER_URL (first line) and TOKEN (second line) from FILE ('-': standard "
        "input) instead, so that the token appears on no command line",
    )
    enroll.add_argument(
        "--name", help="the machine's name at the helpdesk (default: the host name)"
    )

    run = commands.add_parser(
        "run", parents=[common], help="connect to the broker and serve sessions"
    )
    run.add_argument("--verbose", action="store_true", help="log debugging detail")

    status = commands.add_parser("status", parents=[common], help="show the agent's state")
    status.add_argument("--json", action="store_true", help="print JSON")
    sessions = commands.add_parser(
        "sessions", parents=[common], help="show who is connected and who waits for approval"
    )
    sessions.add_argument("--json", action="store_true", help="print JSON")
    for name, what in (
        ("end", "end a running session"),
        ("approve", "approve a waiting session request"),
        ("deny", "deny a waiting session request"),
    ):
        sub = commands.add_parser(name, parents=[common], help=what)
        sub.add_argument("session", metavar="SESSION", help="a session id (s-...)")
        if name != "end":
            sub.add_argument(
                "staff",
                metavar="STAFF",
                nargs="?",
                help="who asks (needed when several people of the session are asked about)",
            )
    commands.add_parser(
        "install-update",
        parents=[common],
        help="(root, run by systemd) install the update the agent verified and requested",
    )
    help_cmd = commands.add_parser(
        "help", parents=[common], help="ask the helpdesk for help (opens a ticket)"
    )
    help_cmd.add_argument(
        "text", metavar="TEXT", help='what is wrong, for example "the printer does not print"'
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return the exit status."""
    args = _parser().parse_args(argv)
    state_dir = args.state_dir or args.global_state_dir
    started_as = os.geteuid()
    paths = StatePaths(state_dir or default_state_dir(started_as, os.environ))
    try:
        if args.command == "install-update":
            # Root's own check of what the unprivileged agent asks for; it must stay root.
            return _install_update(paths)
        become_state_owner(paths.root)
        status = _dispatch(paths, args)
        sys.stdout.flush()  # a reader that left shows here, where it is handled below
        return status
    except NotEnrolledError as exc:
        system_dir = default_state_dir(0, os.environ)
        if state_dir is None and started_as != 0 and system_dir.exists():
            print(
                f"{PROG}: the agent of this machine keeps its state in {system_dir}, "
                "which only root can read; run the command with sudo",
                file=sys.stderr,
            )
        else:
            print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    except AgentError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # `secondline-agent sessions | head`: the reader left; stop quietly, as SIGPIPE would.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 128 + signal.SIGPIPE
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        # A state dir or file the user cannot reach: one line, never a traceback.
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"{PROG}: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1


def _dispatch(paths: StatePaths, args: argparse.Namespace) -> int:
    # Each command's module is imported when that command runs: it loads what only that
    # command needs (and takes PROG from here).
    if args.command == "enroll":
        from agent.cli_broker import enroll_arguments, enroll_machine

        broker_url, token = enroll_arguments(args)
        return enroll_machine(paths, broker_url, token, args.name)
    if args.command == "run":
        from agent.cli_run import run_agent

        return run_agent(paths, verbose=args.verbose)
    if args.command in ("status", "sessions", "end", "approve", "deny"):
        from agent.cli_control import session_command, show_sessions, show_status

        if args.command == "status":
            return show_status(paths, as_json=args.json)
        if args.command == "sessions":
            return show_sessions(paths, as_json=args.json)
        return session_command(paths, args.command, args.session, getattr(args, "staff", None))
    from agent.cli_broker import ask_for_help

    return ask_for_help(paths, args.text)


# -- install-update -----------------------------------------------------------------------


def _install_update(paths: StatePaths) -> int:
    from agent.update_helper import install_requested

    if os.geteuid() != 0:
        raise StateError("install-update installs packages: run it as root (systemd does)")
    print(install_requested(paths.root))
    return 0
