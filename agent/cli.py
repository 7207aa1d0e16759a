"""``secondline-agent``: enroll, run, and let the end user see and steer sessions.

Every command takes ``--state-dir DIR``. Errors print one sentence on stderr that says
what to do, and the exit status is non-zero (1; 2 for usage errors). Heavy modules
(asyncssh, websockets) are imported only by the commands that need them, so ``status``,
``approve`` and friends answer quickly.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from agent.control import ControlRequest, call_agent
from agent.enrollment import (
    EnrollmentAnswer,
    EnrollmentRequest,
    EnrollmentToken,
    check_url,
    default_agent_name,
    pem_to_der,
)
from agent.errors import AgentError, ControlError, MessageError, NotEnrolledError, StateError
from agent.protocol import (
    AGENT_NAME_RE,
    SESSION_ID_RE,
    STAFF_NAME_RE,
    Ed25519PublicKey,
    cert_fingerprint,
    sanitize_text,
)
from agent.state import (
    StatePaths,
    atomic_write,
    check_private,
    default_state_dir,
    ensure_state_dir,
    load_config,
    load_enrolled_state,
    read_private,
)
from agent.state_owner import become_state_owner

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

PROG = "secondline-agent"
KEY_MAX = 16 * 1024


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
    if args.command == "enroll":
        broker_url, token = _enroll_arguments(args)
        return _enroll(paths, broker_url, token, args.name)
    if args.command == "run":
        return _run(paths, verbose=args.verbose)
    if args.command == "status":
        return _status(paths, as_json=args.json)
    if args.command == "sessions":
        return _sessions(paths, as_json=args.json)
    if args.command in ("end", "approve", "deny"):
        return _session_command(paths, args.command, args.session, getattr(args, "staff", None))
    return _help(paths, args.text)


# -- enroll -------------------------------------------------------------------------------

ENROLL_FILE_MAX = 8 * 1024


def _enroll_arguments(args: argparse.Namespace) -> tuple[str, str]:
    """BROKER_URL and TOKEN from the command line or from ``--from-file``."""
    if args.from_file is None:
        if args.broker_url is None or args.token is None:
            raise StateError("give BROKER_URL and TOKEN, or --from-file FILE")
        return str(args.broker_url), str(args.token)
    if args.broker_url is not None or args.token is not None:
        raise StateError("give either BROKER_URL and TOKEN or --from-file FILE, not both")
    path: Path = args.from_file
    try:
        if str(path) == "-":
            data = sys.stdin.buffer.read(ENROLL_FILE_MAX + 1)
        else:
            with path.open("rb") as handle:
                data = handle.read(ENROLL_FILE_MAX + 1)
    except OSError as exc:
        raise StateError(f"cannot read {path} ({exc.strerror})") from None
    lines = data.decode("utf-8", "replace").splitlines() if len(data) <= ENROLL_FILE_MAX else []
    if len(lines) != 2 or not all(line.strip() for line in lines):
        raise StateError(
            f"{path} must hold two lines: the broker URL, then the token; "
            "ask the helpdesk for the install command again"
        )
    return lines[0].strip(), lines[1].strip()


def _enroll(paths: StatePaths, broker_url: str, token_text: str, name: str | None) -> int:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from agent.broker_client import enroll
    from agent.facts import collect_facts
    from agent.state import EnrolledState

    token = EnrollmentToken.parse(token_text)  # refused before any network traffic
    try:
        check_url(broker_url, "the broker URL", "https")
    except MessageError:
        raise StateError(
            "the broker URL must look like https://support.example.com:8443; "
            "check it with the helpdesk"
        ) from None
    if name is not None and AGENT_NAME_RE.fullmatch(name) is None:
        raise StateError(
            "the name may hold only lowercase letters, digits, '.', '_' and '-' (at most 63, "
            "starting with a letter or digit); choose another --name"
        )
    ensure_state_dir(paths)
    # agent.toml may be there before enrollment, to name the proxy to enroll through.
    proxy_url = load_config(paths).proxy_url
    if paths.state_json.exists():
        state = load_enrolled_state(paths)
        raise StateError(
            f"this machine is already enrolled as {state.name} ({state.agent_id}); to enroll "
            f"again, stop the agent and remove {paths.root}"
        )
    facts = collect_facts(software=False)  # packages come with sl:facts, once connected
    key = Ed25519PrivateKey.generate()
    # The key is on disk before the token is spent, so a crash cannot strand an enrollment.
    atomic_write(
        paths.agent_key,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        ),
    )
    public_line = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    request = EnrollmentRequest(
        token=token,
        name=name or default_agent_name(facts.hostname),
        public_key=Ed25519PublicKey.parse(public_line.decode("ascii")),
        facts=facts,
    )
    answer: EnrollmentAnswer = enroll(broker_url.rstrip("/"), request, proxy_url=proxy_url)
    atomic_write(paths.broker_pem, answer.tls_cert_pem.strip().encode() + b"\n")
    state = EnrolledState.from_answer(broker_url.rstrip("/"), answer, time.time())
    atomic_write(paths.state_json, state.serialize())
    print(
        f"enrolled as {answer.name} ({answer.agent_id}) for customer {answer.customer}, "
        f"consent {answer.consent}; start the agent with: {PROG} run"
    )
    return 0


# -- run ----------------------------------------------------------------------------------


def _run(paths: StatePaths, *, verbose: bool) -> int:
    import asyncio
    import signal

    import asyncssh

    from agent.gc_policy import settle_after_startup
    from agent.login import LoginAccount
    from agent.runner import AgentRunner, RunnerSettings

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # asyncssh logs commands and environments at INFO: they may carry secrets.
    logging.getLogger("asyncssh").setLevel(logging.WARNING)
    logging.getLogger("websockets").setLevel(logging.WARNING)

    state = load_enrolled_state(paths)
    check_private(paths.root)
    config = load_config(paths)
    LoginAccount.resolve(config.login_user, config.shell)  # fail now, not at the first session
    key_data, private_key, broker_pem = _read_credentials(paths)
    agent_key = asyncssh.import_private_key(key_data)
    from urllib.parse import urlsplit

    from agent.proxy import select_proxy

    proxy = select_proxy(config.proxy_url, urlsplit(state.tunnel_url).hostname or "", os.environ)
    from agent.updater import EXIT_RESTART, UpdaterSettings, why_off

    update_settings = UpdaterSettings(
        paths=paths,
        state=state,
        config=config,
        key=private_key,
        fingerprint=cert_fingerprint(pem_to_der(broker_pem, "broker.pem")),
    )
    off = why_off(update_settings)
    if off is not None:
        logging.getLogger(__name__).info("self-update is off: %s", off)
    settings = RunnerSettings(
        paths=paths,
        state=state,
        config=config,
        agent_key=agent_key,
        broker_pem=broker_pem,
        proxy=proxy,
        updater=update_settings if off is None else None,
        terminal_prompt=state.consent == "attended" and sys.stdin.isatty() and sys.stderr.isatty(),
    )

    async def serve() -> str | None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        runner = AgentRunner(settings)
        settle_after_startup()
        await runner.run(stop)
        return runner.restart_reason

    # After an update or a rollback the agent exits with EX_TEMPFAIL, so that its service
    # manager starts it again (now the version that is installed).
    return EXIT_RESTART if asyncio.run(serve()) is not None else 0


# -- status and sessions ------------------------------------------------------------------


def _status(paths: StatePaths, *, as_json: bool) -> int:
    state = load_enrolled_state(paths)
    try:
        status = call_agent(paths.control_sock, ControlRequest("status"))
    except ControlError as exc:
        if "not running" not in str(exc):
            raise
        status = _last_status(paths)
    if as_json:
        print(json.dumps(status, indent=2))
        return 0
    out = sys.stdout
    out.write(f"agent:    {state.name} ({state.agent_id}) of customer {state.customer}")
    out.write(f", consent {state.consent}\n")
    out.write(f"broker:   {state.broker_url}\n")
    if not status.get("running"):
        out.write(f"state:    not running; start it with: {PROG} run\n")
        return 0
    since = status.get("since")
    if status.get("connected"):
        out.write(f"state:    connected since {since}\n")
    else:
        error = status.get("last_error") or "not connected yet"
        out.write(f"state:    disconnected since {since} ({error})\n")
    out.write(
        f"sessions: {status.get('live_sessions', 0)} running, "
        f"{status.get('pending_requests', 0)} waiting for approval\n"
    )
    return 0


def _last_status(paths: StatePaths) -> dict[str, object]:
    try:
        data = json.loads(read_private(paths.status_json, 64 * 1024))
    except (FileNotFoundError, ValueError):
        data = {}
    status = data if isinstance(data, dict) else {}
    status["running"] = False
    status["connected"] = False
    return status


def _sessions(paths: StatePaths, *, as_json: bool) -> int:
    result = call_agent(paths.control_sock, ControlRequest("sessions"))
    if as_json:
        print(json.dumps(result, indent=2))
        return 0
    live = _list(result, "live")
    pending = _list(result, "pending")
    if not live and not pending:
        print("no sessions are running or waiting for approval")
        return 0
    if live:
        print("RUNNING")
        for item in live:
            detail = f"{_text(item, 'kind')} as {_text(item, 'login_user')}"
            _print_session(sys.stdout, item, f"{detail} since {_text(item, 'started_at')}")
            files = item.get("files") if isinstance(item, dict) else None
            if isinstance(files, dict):
                print(f"    {_files_line(files)}")
    if pending:
        print("WAITING FOR APPROVAL")
        for item in pending:
            _print_session(
                sys.stdout,
                item,
                f"asked {_text(item, 'requested_at')}, times out {_text(item, 'deadline')}",
            )
    return 0


def _files_line(files: dict[str, object]) -> str:
    """A file session's activity, as its sftp-server reported it."""
    line = (
        f"files: {_text(files, 'files_written')} written ({_text(files, 'bytes_written')} "
        f"bytes), {_text(files, 'files_read')} read ({_text(files, 'bytes_read')} bytes), "
        f"{_text(files, 'changes')} changed"
    )
    last = _text(files, "last_file")
    return line if last == "-" else f"{line}, last {last}"


def _list(result: dict[str, object], key: str) -> list[object]:
    value = result.get(key)
    return value if isinstance(value, list) else []


def _text(item: object, key: str) -> str:
    value = item.get(key) if isinstance(item, dict) else None
    return sanitize_text(str(value), 200) if value is not None else "-"


def _print_session(out: TextIO, item: object, detail: str) -> None:
    title = _text(item, "ticket_title")
    ticket = _text(item, "ticket") + (f" {title!r}" if title not in ("-", "") else "")
    role = f", {_text(item, 'role')}" if _text(item, "role") != "-" else ""
    who = f"{_text(item, 'staff')} (level {_text(item, 'staff_level')}{role})"
    out.write(f"  {_text(item, 'session')}  {who}  ticket {ticket}  {detail}\n")


def _session_command(paths: StatePaths, op: str, session: str, staff: str | None) -> int:
    if SESSION_ID_RE.fullmatch(session) is None:
        raise ControlError(
            f"{sanitize_text(session, 40)!r} is not a session id (they look like s- and 22 "
            f"letters or digits); list them with: {PROG} sessions"
        )
    if staff is not None and STAFF_NAME_RE.fullmatch(staff) is None:
        raise ControlError(
            f"{sanitize_text(staff, 40)!r} is not a staff member's name; "
            f"list who asks with: {PROG} sessions"
        )
    request = ControlRequest(
        "end" if op == "end" else "approve" if op == "approve" else "deny", session, staff
    )
    result = call_agent(paths.control_sock, request)
    if op == "end":
        ended = result.get("ended", 0)
        print(
            f"ended session {session}"
            + (f" ({ended} channels)" if isinstance(ended, int) and ended > 1 else "")
        )
    else:
        who = f"{_text(result, 'staff')} ({_text(result, 'role')})"
        what = "withdrawn" if result.get("withdrawn") is True else _text(result, "decision")
        print(f"session {session}: {who} {what}")
    return 0


# -- install-update -----------------------------------------------------------------------


def _install_update(paths: StatePaths) -> int:
    from agent.update_helper import install_requested

    if os.geteuid() != 0:
        raise StateError("install-update installs packages: run it as root (systemd does)")
    print(install_requested(paths.root))
    return 0


# -- help ---------------------------------------------------------------------------------


def _help(paths: StatePaths, text: str) -> int:
    from agent.broker_client import request_help
    from agent.signing import HelpRequest

    try:
        help_request = HelpRequest(text)
    except MessageError as exc:
        raise MessageError(f"{exc}; describe the problem in plain text") from None
    state = load_enrolled_state(paths)
    _, key, pem = _read_credentials(paths)
    fingerprint = cert_fingerprint(pem_to_der(pem, "broker.pem"))
    answer = request_help(
        state.broker_url,
        state.agent_id,
        key,
        fingerprint,
        help_request,
        proxy_url=load_config(paths).proxy_url,
    )
    print(answer.ticket)
    return 0


def _read_credentials(paths: StatePaths) -> tuple[bytes, Ed25519PrivateKey, str]:
    """The agent key (as stored, and loaded) and the pinned certificate, both checked."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_ssh_private_key

    try:
        key_data = read_private(paths.agent_key, KEY_MAX)
        key = load_ssh_private_key(key_data, password=None)
        pem = read_private(paths.broker_pem, KEY_MAX).decode("ascii")
        pem_to_der(pem, "broker.pem")
    except (FileNotFoundError, ValueError, MessageError):
        raise StateError(
            f"the agent's key or the broker's certificate in {paths.root} is missing or "
            "damaged; enroll the agent again"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise StateError(f"{paths.agent_key} is not an Ed25519 key; enroll the agent again")
    return key_data, key, pem
