"""The commands that ask the broker once and exit: ``enroll`` (this machine gets its key
and the broker's certificate) and ``help`` (a ticket from the end user); and reading the
stored key and certificate back, which ``run`` does too."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from agent.cli import PROG
from agent.enrollment import (
    EnrollmentAnswer,
    EnrollmentRequest,
    EnrollmentToken,
    check_url,
    default_agent_name,
    pem_to_der,
)
from agent.errors import MessageError, StateError
from agent.protocol import AGENT_NAME_RE, Ed25519PublicKey, cert_fingerprint
from agent.state import (
    StatePaths,
    atomic_write,
    ensure_state_dir,
    load_config,
    load_enrolled_state,
    read_private,
)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

KEY_MAX = 16 * 1024
ENROLL_FILE_MAX = 8 * 1024


def enroll_arguments(args: argparse.Namespace) -> tuple[str, str]:
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


def enroll_machine(paths: StatePaths, broker_url: str, token_text: str, name: str | None) -> int:
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


def ask_for_help(paths: StatePaths, text: str) -> int:
    from agent.broker_client import request_help
    from agent.signing import HelpRequest

    try:
        help_request = HelpRequest(text)
    except MessageError as exc:
        raise MessageError(f"{exc}; describe the problem in plain text") from None
    state = load_enrolled_state(paths)
    _, key, pem = read_credentials(paths)
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


def read_credentials(paths: StatePaths) -> tuple[bytes, Ed25519PrivateKey, str]:
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
