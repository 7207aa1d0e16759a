"""Sessions across nodes, pure: how one node proves itself to another, and the messages of
a peer stream (docs/cluster.md, "Sessions across nodes").

A node reaches a session hub on another node by dialling that node's HTTPS port directly
(``GET /cluster/v1/peer``, a WebSocket; TLS pinned to the certificate every node shares).
The request carries :data:`PEER_HEADER`: the two node names, a time, a nonce and an
HMAC-SHA256 over them with a key every node derives from the keys they share, so only a
node of this cluster can ask another for a session. What comes inside is still checked
like any outside input: a node of another version, or a bug, must not widen a request.

On the stream, the dialling node sends one request (:class:`OpenAsk` or
:class:`AttachAsk`), then the staff member's input (binary frames) and controls (text
frames); the node running the hub sends the terminal's output (binary frames, the first
byte 1 for stderr) and what the hub tells a terminal (text frames, :func:`parse_event`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass, field
from typing import Final, Literal

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from broker.config import valid_node_name
from broker.rules import (
    InvalidName,
    SshTarget,
    parse_agent_ref,
    parse_session_id,
    parse_user_name,
)
from broker.transcript.asciicast import TERM_PATTERN

PATH: Final = "/cluster/v1/peer"
PEER_HEADER: Final = "X-Secondline-Peer"
#: A credential older or newer than this is refused: nodes' clocks may be 30 s apart.
SKEW_S: Final = 120.0
#: Nonces remembered (each for twice SKEW_S): a replay within the window is refused.
MAX_NONCES: Final = 100_000
MAX_CONTROL: Final = 4096
MAX_REPLY: Final = 512
MAX_COMMAND: Final = 16 << 10
_INFO: Final = b"secondline node peering v1"


class PeerAuthError(ValueError):
    """A peer credential that is missing, malformed, stale, replayed or wrong."""


class BadPeerMessage(ValueError):
    """A peer stream message out of shape."""


def peer_key(audit_key: ed25519.Ed25519PrivateKey) -> bytes:
    """The HMAC key of node-to-node requests, derived from the audit signing key every node
    of a cluster holds (docs/cluster.md: the nodes share ``keys/``); never the key itself."""
    raw = audit_key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(raw)


def _mac(key: bytes, origin: str, target: str, when: int, nonce: str) -> str:
    text = f"{origin}\n{target}\n{when}\n{nonce}".encode()
    return hmac.new(key, text, hashlib.sha256).hexdigest()


def credential(key: bytes, origin: str, target: str, now: float) -> str:
    """The header value node ``origin`` sends to node ``target``."""
    nonce = secrets.token_hex(16)
    when = int(now)
    return f"{origin} {target} {when} {nonce} {_mac(key, origin, target, when, nonce)}"


@dataclass
class Nonces:
    """Nonces seen within the window (the caller's clock), so a captured request cannot be
    replayed; bounded: when full, the oldest are forgotten first (they expire first)."""

    window: float = 2 * SKEW_S
    limit: int = MAX_NONCES
    seen: dict[str, float] = field(default_factory=dict)

    def fresh(self, nonce: str, now: float) -> bool:
        """True the first time ``nonce`` is seen within the window."""
        for old, at in list(self.seen.items()):
            if now - at <= self.window and len(self.seen) < self.limit:
                break  # insertion order: the rest are newer
            del self.seen[old]
        if nonce in self.seen:
            return False
        self.seen[nonce] = now
        return True


def check_credential(key: bytes, header: str | None, me: str, now: float, nonces: Nonces) -> str:
    """The name of the node that sent ``header``; raises PeerAuthError saying why not."""
    if not header or len(header) > 300:
        raise PeerAuthError(f"no {PEER_HEADER} credential")
    parts = header.split(" ")
    if len(parts) != 5:
        raise PeerAuthError("the credential is not ORIGIN TARGET TIME NONCE MAC")
    origin, target, when_text, nonce, mac = parts
    if not valid_node_name(origin) or not when_text.isdigit() or len(nonce) != 32:
        raise PeerAuthError("the credential is out of shape")
    if not hmac.compare_digest(mac, _mac(key, origin, target, int(when_text), nonce)):
        raise PeerAuthError("the credential's MAC is wrong (not a node of this cluster)")
    if target != me:
        raise PeerAuthError(f"the credential is for node {target}, not this one")
    if abs(now - int(when_text)) > SKEW_S:
        raise PeerAuthError("the credential's time is more than two minutes off this clock")
    if not nonces.fresh(nonce, now):
        raise PeerAuthError("the credential was used before (a replay)")
    return origin


# -- the request -------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class OpenAsk:
    """Open a session (the fields of ``broker.sessions.admission.OpenRequest``)."""

    staff: str
    target: SshTarget
    kind: Literal["shell", "exec", "sftp"]
    command: str | None
    term: str | None
    cols: int
    rows: int
    via: Literal["ssh", "web"]
    source: str


@dataclass(frozen=True, kw_only=True)
class AttachAsk:
    """Join or observe a live session."""

    staff: str
    session: str
    ticket: int
    role: Literal["joiner", "observer"]
    source: str


def serialize_ask(ask: OpenAsk | AttachAsk) -> str:
    if isinstance(ask, OpenAsk):
        body: dict[str, object] = {
            "op": "open",
            "staff": ask.staff,
            "ticket": ask.target.ticket,
            "agent": ask.target.agent,
            "kind": ask.kind,
            "command": ask.command,
            "term": ask.term,
            "cols": ask.cols,
            "rows": ask.rows,
            "via": ask.via,
            "source": ask.source,
        }
    else:
        body = {
            "op": "attach",
            "staff": ask.staff,
            "session": ask.session,
            "ticket": ask.ticket,
            "role": ask.role,
            "source": ask.source,
        }
    return json.dumps(body, separators=(",", ":"))


def _load(text: str, limit: int) -> dict[str, object]:
    if len(text) > limit:
        raise BadPeerMessage(f"a message longer than {limit} characters")
    try:
        raw = json.loads(text)
    except ValueError:
        raise BadPeerMessage("not JSON") from None
    if not isinstance(raw, dict):
        raise BadPeerMessage("not a JSON object")
    return raw


def _str(raw: dict[str, object], key: str, limit: int = 200, *, empty: bool = True) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or len(value) > limit or (not empty and not value):
        raise BadPeerMessage(f"{key} is not a string of at most {limit} characters")
    return value


def _int(raw: dict[str, object], key: str, low: int, high: int) -> int:
    value = raw.get(key)
    if type(value) is not int or not low <= value <= high:
        raise BadPeerMessage(f"{key} is not a whole number from {low} to {high}")
    return value


def _opt_str(raw: dict[str, object], key: str, limit: int) -> str | None:
    return None if raw.get(key) is None else _str(raw, key, limit)


def parse_ask(text: str) -> OpenAsk | AttachAsk:
    raw = _load(text, MAX_COMMAND + MAX_CONTROL)
    try:
        staff = parse_user_name(_str(raw, "staff", 64))
        ticket = _int(raw, "ticket", 1, 2**31 - 1)
        source = _str(raw, "source", 64)
        if raw.get("op") == "attach":
            if set(raw) != {"op", "staff", "session", "ticket", "role", "source"}:
                raise BadPeerMessage("an attach request has other fields")
            role = raw.get("role")
            if role not in ("joiner", "observer"):
                raise BadPeerMessage("role is not joiner or observer")
            session = parse_session_id(_str(raw, "session", 64))
            return AttachAsk(staff=staff, session=session, ticket=ticket, role=role, source=source)
        if raw.get("op") != "open":
            raise BadPeerMessage("op is not open or attach")
        keys = {"op", "staff", "ticket", "agent", "kind", "command", "term", "cols", "rows"}
        if set(raw) != keys | {"via", "source"}:
            raise BadPeerMessage("an open request has other fields")
        agent = _opt_str(raw, "agent", 64)
        kind, via = raw.get("kind"), raw.get("via")
        if kind not in ("shell", "exec", "sftp") or via not in ("ssh", "web"):
            raise BadPeerMessage("kind or via is not one of ours")
        command = _opt_str(raw, "command", MAX_COMMAND)
        if (command is None) != (kind != "exec") or (command is not None and "\x00" in command):
            raise BadPeerMessage("a command goes with exec, and exec has one (without NUL)")
        term = _opt_str(raw, "term", 64)
        if term is not None and not TERM_PATTERN.fullmatch(term):
            raise BadPeerMessage("term is not a terminal type")
        return OpenAsk(
            staff=staff,
            target=SshTarget(ticket, parse_agent_ref(agent) if agent is not None else None),
            kind=kind,
            command=command,
            term=term,
            cols=_int(raw, "cols", 1, 1000),
            rows=_int(raw, "rows", 1, 1000),
            via=via,
            source=source,
        )
    except InvalidName as exc:
        raise BadPeerMessage(exc.message) from None


# -- the stream --------------------------------------------------------------------------


def output_frame(data: bytes, stderr: bool) -> bytes:
    return (b"\x01" if stderr else b"\x00") + data


def parse_output(frame: bytes) -> tuple[bytes, bool]:
    if not frame or frame[0] > 1:
        raise BadPeerMessage("an output frame starts with 0 (stdout) or 1 (stderr)")
    return frame[1:], frame[0] == 1


def event(kind: str, **fields: object) -> str:
    """A text frame from the hub's node: ``{"t": kind, ...}``."""
    return json.dumps({"t": kind, **fields}, separators=(",", ":"))


#: What each event from the hub's node carries: field → (type, longest).
_EVENTS: Final[dict[str, dict[str, tuple[type, int]]]] = {
    "state": {"state": (str, 32), "reason": (str, 500), "session": (str, 64)},
    "participants": {"list": (list, 64)},
    "notice": {"message": (str, 1000)},
    "drop": {"message": (str, 1000)},
    "pause": {"paused": (bool, 0)},
    "refused": {"code": (str, 64), "message": (str, 1000), "missing": (bool, 0)},
    "started": {
        "pid": (int, 0),
        "name": (str, 64),
        "role": (str, 16),
        "via": (str, 16),
        "session": (str, 64),
        "cols": (int, 0),
        "rows": (int, 0),
    },
    "finish": {
        "reason": (str, 500),
        "code": (str, 64),
        "message": (str, 1000),
        "exit_status": (int, 0),
        "exit_signal": (str, 32),
        "ended_by": (str, 64),
        "started_at": (float, 0),
    },
}
_OPTIONAL: Final = frozenset({"exit_status", "exit_signal", "ended_by"})


def parse_event(text: str) -> tuple[str, dict[str, object]]:
    """A text frame from the hub's node, checked field by field."""
    raw = _load(text, 64 << 10)
    kind = raw.pop("t", None)
    if not isinstance(kind, str) or kind not in _EVENTS:
        raise BadPeerMessage(f"event {kind!r} is not one of ours")
    shape = _EVENTS[kind]
    if not set(raw) <= set(shape) or not set(shape) - _OPTIONAL <= set(raw):
        raise BadPeerMessage(f"event {kind} has other fields")
    for key, value in raw.items():
        want, limit = shape[key]
        if value is None and key in _OPTIONAL:
            continue
        if want is float and type(value) is int:
            continue
        if type(value) is not want:
            raise BadPeerMessage(f"{kind}.{key} is not a {want.__name__}")
        if isinstance(value, (str, list)) and len(value) > limit:
            raise BadPeerMessage(f"{kind}.{key} is longer than {limit}")
    if kind == "participants":
        people = raw["list"]
        assert isinstance(people, list)
        for person in people:
            if not (
                isinstance(person, dict)
                and set(person) == {"name", "role"}
                and all(isinstance(v, str) and len(v) <= 64 for v in person.values())
            ):
                raise BadPeerMessage("participants.list holds something not a name and role")
    return kind, raw


# -- controls from the dialling node -------------------------------------------------------


Control = (
    tuple[Literal["resize"], int, int]
    | tuple[Literal["reply"], bytes]
    | tuple[Literal["signal"], str]
    | tuple[Literal["eof"]]
    | tuple[Literal["end"]]
)


def control(kind: str, **fields: object) -> str:
    return event(kind, **fields)


def reply_control(data: bytes) -> str:
    return control("reply", data=base64.b64encode(data).decode())


def parse_control(text: str) -> Control:
    raw = _load(text, MAX_CONTROL)
    kind = raw.get("t")
    if kind == "resize" and set(raw) == {"t", "cols", "rows"}:
        return "resize", _int(raw, "cols", 1, 1000), _int(raw, "rows", 1, 1000)
    if kind == "reply" and set(raw) == {"t", "data"}:
        try:
            data = base64.b64decode(_str(raw, "data", 1024), validate=True)
        except ValueError:
            raise BadPeerMessage("reply data is not base64") from None
        if not 0 < len(data) <= MAX_REPLY:
            raise BadPeerMessage(f"a reply is 1 to {MAX_REPLY} bytes")
        return "reply", data
    if kind == "signal" and set(raw) == {"t", "name"}:
        return "signal", _str(raw, "name", 16)
    if kind == "eof" and set(raw) == {"t"}:
        return ("eof",)
    if kind == "end" and set(raw) == {"t"}:
        return ("end",)
    raise BadPeerMessage("that control is not one of ours")
