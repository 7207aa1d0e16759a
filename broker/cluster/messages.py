"""The wire units nodes exchange, pure: frozen dataclasses with ``parse``/``serialize``.

Every message is JSON. ``parse`` takes what came off the bus (another node could be of
another version, or the bus shared with something else) and raises :class:`BadMessage`
for anything out of shape; the receiver drops such a message and logs it once.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Final

from broker.cluster.bus import PREFIX
from broker.config import valid_node_name, valid_peer_url

_ID: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: An announcement larger than this is refused (NATS' default payload limit is 1 MiB).
MAX_AGENTS_ANNOUNCED: Final = 20_000


@dataclass(frozen=True, slots=True)
class Subjects:
    """The subjects of one cluster: ``secondline.CLUSTER.…``, so that several clusters (or
    test runs) can share one NATS server without hearing each other."""

    cluster: str

    @property
    def presence(self) -> str:
        """Every node's announcements, every HEARTBEAT_S."""
        return f"{PREFIX}.{self.cluster}.presence"

    @property
    def control(self) -> str:
        """Revoke and disable: every node acts on them."""
        return f"{PREFIX}.{self.cluster}.control"

    @property
    def tickets(self) -> str:
        """A ticket gone in its external system: every node tells its own sessions on it."""
        return f"{PREFIX}.{self.cluster}.tickets"

    @property
    def status(self) -> str:
        """Every node answers with its announcement."""
        return f"{PREFIX}.{self.cluster}.status"

    def node(self, node: str, what: str) -> str:
        """A subject only ``node`` listens on (``hello``: its name is taken; ``kill``)."""
        return f"{PREFIX}.{self.cluster}.node.{node}.{what}"


class BadMessage(ValueError):
    """A message from the bus that is not one of ours, or not well formed."""


def _load(data: bytes) -> dict[str, object]:
    try:
        raw = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise BadMessage("not JSON") from None
    if not isinstance(raw, dict):
        raise BadMessage("not a JSON object")
    return raw


def _text(raw: dict[str, object], key: str, limit: int = 200) -> str:
    value = raw.get(key, "")
    if not isinstance(value, str) or len(value) > limit:
        raise BadMessage(f"{key} is not a string of at most {limit} characters")
    return value


def _ids(raw: dict[str, object], key: str) -> tuple[str, ...]:
    value = raw.get(key, [])
    if not isinstance(value, list) or len(value) > MAX_AGENTS_ANNOUNCED:
        raise BadMessage(f"{key} is not a list of at most {MAX_AGENTS_ANNOUNCED}")
    if not all(isinstance(v, str) and _ID.fullmatch(v) for v in value):
        raise BadMessage(f"{key} holds something that is not an id")
    return tuple(value)


def _peer(raw: dict[str, object]) -> str:
    peer = _text(raw, "peer")
    if peer and not valid_peer_url(peer):
        raise BadMessage("peer is not https://HOST:PORT")
    return peer


def _dump(body: dict[str, object]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class Announcement:
    """A node says it is alive, which agents' tunnels and which sessions it holds.
    ``leaving`` is the last one of a node that stops: others forget it at once. ``ready``:
    it serves and is not draining, so it takes agents (broker.cluster.share); a node of
    an older version does not say, and is taken as ready."""

    node: str
    agents: tuple[str, ...]
    sessions: tuple[str, ...]
    url: str = ""
    leaving: bool = False
    # Where the other nodes dial this one for sessions across nodes (its own HTTPS port);
    # "" from a node of a version before sessions crossed nodes.
    peer: str = ""
    ready: bool = True

    def serialize(self) -> bytes:
        return _dump(
            {
                "node": self.node,
                "agents": list(self.agents),
                "sessions": list(self.sessions),
                "url": self.url,
                "leaving": self.leaving,
                "peer": self.peer,
                "ready": self.ready,
            }
        )

    @classmethod
    def parse(cls, data: bytes) -> Announcement:
        raw = _load(data)
        node = _text(raw, "node", 32)
        if not valid_node_name(node):
            raise BadMessage("node is not a node name")
        leaving = raw.get("leaving", False)
        if not isinstance(leaving, bool):
            raise BadMessage("leaving is not true or false")
        ready = raw.get("ready", True)
        if not isinstance(ready, bool):
            raise BadMessage("ready is not true or false")
        return cls(
            node=node,
            agents=_ids(raw, "agents"),
            sessions=_ids(raw, "sessions"),
            url=_text(raw, "url"),
            leaving=leaving,
            peer=_peer(raw),
            ready=ready,
        )


#: ``agent.connected``: the origin node took a tunnel of the agent; a node holding an
#: older one closes it (one tunnel per agent in the whole cluster).
CONTROL_KINDS: Final = (
    "session.kill",
    "agent.revoke",
    "user.disable",
    "node.drain",
    "agent.connected",
)


@dataclass(frozen=True, slots=True)
class Control:
    """An admin's action that must take effect where the session or tunnel is: ``target``
    is the session id, the agent id or the account name; ``by`` who did it."""

    kind: str
    target: str
    by: str
    origin: str  # the node it was issued on (which has acted on it already)
    source: str = ""
    reason: str = ""

    def serialize(self) -> bytes:
        return _dump(
            {
                "kind": self.kind,
                "target": self.target,
                "by": self.by,
                "origin": self.origin,
                "source": self.source,
                "reason": self.reason,
            }
        )

    @classmethod
    def parse(cls, data: bytes) -> Control:
        raw = _load(data)
        kind = _text(raw, "kind", 32)
        if kind not in CONTROL_KINDS:
            raise BadMessage(f"kind {kind!r} is not one of {', '.join(CONTROL_KINDS)}")
        target = _text(raw, "target", 64)
        if not target:
            raise BadMessage("target is empty")
        return cls(
            kind=kind,
            target=target,
            by=_text(raw, "by", 100),
            origin=_text(raw, "origin", 32),
            source=_text(raw, "source", 64),
            reason=_text(raw, "reason", 200),
        )


@dataclass(frozen=True, slots=True)
class ControlResult:
    """A node's answer to a control request: did it hold (and end) the thing named."""

    node: str
    done: bool

    def serialize(self) -> bytes:
        return _dump({"node": self.node, "done": self.done})

    @classmethod
    def parse(cls, data: bytes) -> ControlResult:
        raw = _load(data)
        done = raw.get("done")
        if not isinstance(done, bool):
            raise BadMessage("done is not true or false")
        return cls(node=_text(raw, "node", 32), done=done)


#: What a node tells the sessions on a gone ticket is one sentence; longer is not ours.
NOTICE_MAX: Final = 500


@dataclass(frozen=True, slots=True)
class TicketNotice:
    """A mirrored ticket was deleted or merged in its external system; ``message`` is what
    the live sessions on it are told, ``origin`` the node that saw it (and told its own)."""

    ticket_id: int
    message: str
    origin: str

    def serialize(self) -> bytes:
        return _dump({"ticket": self.ticket_id, "message": self.message, "origin": self.origin})

    @classmethod
    def parse(cls, data: bytes) -> TicketNotice:
        raw = _load(data)
        ticket = raw.get("ticket")
        if not isinstance(ticket, int) or isinstance(ticket, bool) or not 0 < ticket < 2**31:
            raise BadMessage("ticket is not a ticket number")
        message = _text(raw, "message", NOTICE_MAX)
        if not message:
            raise BadMessage("message is empty")
        return cls(ticket_id=ticket, message=message, origin=_text(raw, "origin", 32))


STEER_KINDS: Final = ("session.invite", "session.control")


@dataclass(frozen=True, slots=True)
class Steer:
    """The owner ``by`` invites ``name`` to, or hands control of, a session that another
    node runs; the API node judged who asks and audits the outcome."""

    kind: str
    session: str
    by: str
    name: str

    def serialize(self) -> bytes:
        return _dump({"kind": self.kind, "session": self.session, "by": self.by, "name": self.name})

    @classmethod
    def parse(cls, data: bytes) -> Steer:
        raw = _load(data)
        kind = _text(raw, "kind", 32)
        if kind not in STEER_KINDS:
            raise BadMessage(f"kind {kind!r} is not one of {', '.join(STEER_KINDS)}")
        session, by, name = _text(raw, "session", 64), _text(raw, "by", 64), _text(raw, "name", 64)
        if not (_ID.fullmatch(session) and by and name):
            raise BadMessage("session, by or name is missing or out of shape")
        return cls(kind=kind, session=session, by=by, name=name)


@dataclass(frozen=True, slots=True)
class SteerResult:
    """What the node running the session did: ``code`` "" when it did, else the hub's
    refusal code (``ending``, ``not_live`` or one of HubRefused's) and its sentence."""

    code: str
    message: str = ""
    participants: tuple[tuple[str, str], ...] = ()  # (name, role)
    invited: tuple[str, ...] = ()

    def serialize(self) -> bytes:
        return _dump(
            {
                "code": self.code,
                "message": self.message,
                "participants": [list(p) for p in self.participants],
                "invited": list(self.invited),
            }
        )

    @classmethod
    def parse(cls, data: bytes) -> SteerResult:
        raw = _load(data)
        people = raw.get("participants", [])
        invited = raw.get("invited", [])
        if not isinstance(people, list) or not isinstance(invited, list):
            raise BadMessage("participants or invited is not a list")
        if len(people) > 64 or len(invited) > 64:
            raise BadMessage("more than 64 participants or invited")
        pairs: list[tuple[str, str]] = []
        for p in people:
            if not (isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p)):
                raise BadMessage("a participant is not [name, role]")
            pairs.append((p[0][:64], p[1][:16]))
        if not all(isinstance(n, str) and len(n) <= 64 for n in invited):
            raise BadMessage("invited holds something that is not a name")
        return cls(
            code=_text(raw, "code", 64),
            message=_text(raw, "message", 500),
            participants=tuple(pairs),
            invited=tuple(invited),
        )
