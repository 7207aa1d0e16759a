"""The life of one session, as a table: what happened (an event) in which state leads to
which state, and which I/O the session manager performs for it (actions), in order.

States, and what the session row says meanwhile (``remote_sessions.state``):

- ``starting``: the row is written; the agent is reached, the ticket assigned, the
  transcript recorder made and the start audited (row: ``starting``);
- ``waiting_consent``: the same, for an attended agent whose end user is asked first
  (row: ``waiting_consent`` until the session is live);
- ``live``: the hub runs on this node (``SessionManager.live``): its channel to the agent
  is opened, then the row is marked ``live``;
- ``ending``: the broker asked the hub to end (a kill, a shutdown, a refused channel, a
  failed store); the hub seals the transcript (the row is unchanged);
- the end states, each written once (:class:`WriteEnd`): ``ended`` (it ran; exit, kill,
  idle, "revoked", "account disabled"... are end *reasons*), ``refused`` (a rule, the end
  user, a store or a kill said no before it ran), ``failed`` (it broke off before its
  channel opened), ``interrupted`` (a broker stopped under it; found at the next start).

Before its row exists a session is not in this table: one the rules refuse (``admission``)
or whose row cannot be written never started, and has no end to write.

:class:`SessionLifecycle` never awaits and never touches the database: the manager feeds it
what happened and performs the actions it returns, in order. An event the table has no row
for raises :class:`LifecycleError` and changes nothing. The manager retries the end write
until the database takes it; one a stopping broker gives up leaves the row ``live`` for
the next start to recover as ``interrupted``. The note goes into the outbox with the end
write, for a session that ran and whose transcript was sealed.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import ClassVar, Final, Literal, get_args

from broker.sessions.errors import AUDIT_STORE_UNAVAILABLE

SessionState = Literal[
    "starting", "waiting_consent", "live", "ending", "ended", "refused", "failed", "interrupted"
]
EndState = Literal["ended", "refused", "failed", "interrupted"]
RowState = Literal["starting", "waiting_consent", "live"]

STATES: Final[tuple[SessionState, ...]] = get_args(SessionState)
END_STATES: Final[tuple[EndState, ...]] = get_args(EndState)
# What the row of a session that has not ended says: it counts against the owner's limit,
# is "live" to `session list --live`, and is recovered as "interrupted" after a crash.
UNENDED_ROW_STATES: Final[tuple[RowState, ...]] = ("starting", "waiting_consent", "live")

END_NOT_STARTED: Final = "not started"


class LifecycleError(Exception):
    """An event the table has no row for in the current state: our mistake, not a peer's."""


# -- events: what happened -----------------------------------------------------------------


@dataclass(frozen=True)
class RowInserted:
    """The session row is written."""

    kind: ClassVar[str] = "row_inserted"


@dataclass(frozen=True)
class AgentReached:
    """The agent's tunnel is connected."""

    kind: ClassVar[str] = "agent_reached"


@dataclass(frozen=True)
class AgentOffline:
    """The agent has no tunnel to this broker."""

    agent_name: str
    kind: ClassVar[str] = "agent_offline"

    @property
    def reason(self) -> str:
        return f"agent {self.agent_name} is offline; it must be running and connected"


@dataclass(frozen=True)
class ConsentGiven:
    """The end user approved the session."""

    kind: ClassVar[str] = "consent_given"


@dataclass(frozen=True)
class StartRefused:
    """A step of the start said no: the end user, a store, the ticket system."""

    reason: str
    kind: ClassVar[str] = "start_refused"


@dataclass(frozen=True)
class StartFailed:
    """The start broke off: cancelled (the staff member left), or an error."""

    reason: str = END_NOT_STARTED
    kind: ClassVar[str] = "start_failed"


@dataclass(frozen=True)
class StartRecorded:
    """The transcript recorder exists and the start is audited: the session may run."""

    kind: ClassVar[str] = "start_recorded"


@dataclass(frozen=True)
class ChannelOpened:
    """The agent opened the shell or command."""

    kind: ClassVar[str] = "channel_opened"


@dataclass(frozen=True)
class ChannelRefused:
    """The agent refused to open the shell or command."""

    agent_name: str
    kind: ClassVar[str] = "channel_refused"


@dataclass(frozen=True)
class MarkFailed:
    """The row could not be marked live: no session runs without its record."""

    kind: ClassVar[str] = "mark_failed"


@dataclass(frozen=True)
class Killed:
    """An admin or the owner ended the session; ``reason`` may be empty."""

    by: str
    reason: str = ""
    kind: ClassVar[str] = "killed"


@dataclass(frozen=True)
class EndAsked:
    """The broker ends the session: shutting down, the agent revoked."""

    reason: str
    code: str
    message: str
    kind: ClassVar[str] = "end_asked"


@dataclass(frozen=True)
class HubEnded:
    """The hub ended and sealed its transcript (``sealed``: a seal exists)."""

    opened: bool  # its channel to the agent had opened
    sealed: bool

    @property
    def kind(self) -> str:
        return "hub_ended" if self.opened else "hub_ended_unopened"


@dataclass(frozen=True)
class Recovered:
    """A broker start found the row unended (a crash); ``sealed``: its transcript was."""

    sealed: bool
    kind: ClassVar[str] = "recovered"


Event = (
    RowInserted
    | AgentReached
    | AgentOffline
    | ConsentGiven
    | StartRefused
    | StartFailed
    | StartRecorded
    | ChannelOpened
    | ChannelRefused
    | MarkFailed
    | Killed
    | EndAsked
    | HubEnded
    | Recovered
)

# -- actions: what the manager does --------------------------------------------------------


@dataclass(frozen=True)
class InsertRow:
    """Write the session row in ``state``."""

    state: RowState


@dataclass(frozen=True)
class ReachAgent:
    """Find the agent's tunnel; report AgentReached or AgentOffline."""


@dataclass(frozen=True)
class AssignTicket:
    """Assign the ticket to the staff member (the rules said so for an unassigned one)."""


@dataclass(frozen=True)
class AskConsent:
    """Show the owner "waiting" and ask the end user; report ConsentGiven or StartRefused."""


@dataclass(frozen=True)
class RecordStart:
    """Make the transcript recorder and the hub, audit the start; report StartRecorded."""


@dataclass(frozen=True)
class RegisterHub:
    """Make the hub this node's (``SessionManager.live``), attach the owner, keep the end
    user's approval."""


@dataclass(frozen=True)
class OpenChannel:
    """Open the shell or command on the agent; report ChannelOpened or ChannelRefused."""


@dataclass(frozen=True)
class MarkLive:
    """Mark the row live (off the path to the first prompt), then open a new ticket."""

    open_ticket: bool


@dataclass(frozen=True)
class AuditRefusal:
    """Audit ``session.refused`` with this code and sentence."""

    code: str
    reason: str


@dataclass(frozen=True)
class CancelStart:
    """Stop the start where it waits (for the end user) and wait for it to stop."""


@dataclass(frozen=True)
class EndHub:
    """Ask the hub to end with this reason; it seals and reports HubEnded."""

    reason: str
    code: str
    message: str


@dataclass(frozen=True)
class KillHub:
    """End the hub for ``by`` (marked in the transcript, told to everyone)."""

    by: str
    reason: str


@dataclass(frozen=True)
class WriteEnd:
    """Write the session's end, retried until the database takes it.

    ``reason`` None: the hub's own end reason (its outcome). ``note``: queue the session's
    note with it, in the same transaction.
    """

    state: EndState
    reason: str | None
    note: bool


@dataclass(frozen=True)
class AuditEnd:
    """Audit the end (``session.end``, or ``session.interrupted`` for a recovered one)."""

    action: Literal["session.end", "session.interrupted"]


Action = (
    InsertRow
    | ReachAgent
    | AssignTicket
    | AskConsent
    | RecordStart
    | RegisterHub
    | OpenChannel
    | MarkLive
    | AuditRefusal
    | CancelStart
    | EndHub
    | KillHub
    | WriteEnd
    | AuditEnd
)

ActionKind = Literal[
    "reach_agent",
    "assign_ticket",
    "ask_consent",
    "record_start",
    "register_hub",
    "open_channel",
    "mark_live",
    "audit_refusal",
    "cancel_start",
    "end_hub",
    "kill_hub",
    "write_end",
    "audit_end",
]

# -- the table -----------------------------------------------------------------------------

_STARTING: Final[tuple[SessionState, ...]] = ("starting", "waiting_consent")
_RUNNING: Final[tuple[SessionState, ...]] = ("live", "ending")


def _rows() -> dict[tuple[SessionState, str], tuple[SessionState, tuple[ActionKind, ...]]]:
    rows: dict[tuple[SessionState, str], tuple[SessionState, tuple[ActionKind, ...]]] = {
        ("starting", "row_inserted"): ("starting", ("reach_agent",)),
        ("waiting_consent", "row_inserted"): ("waiting_consent", ("reach_agent",)),
        # The assignment comes first: the end user is asked about a ticket already taken.
        ("starting", "agent_reached"): ("starting", ("assign_ticket", "record_start")),
        ("waiting_consent", "agent_reached"): (
            "waiting_consent",
            ("assign_ticket", "ask_consent"),
        ),
        ("waiting_consent", "consent_given"): ("waiting_consent", ("record_start",)),
        ("live", "channel_opened"): ("live", ("mark_live",)),
        # Ended while its channel opened: the row is marked only if nothing ended it yet.
        ("ending", "channel_opened"): ("ending", ("mark_live",)),
        ("live", "channel_refused"): ("ending", ("end_hub",)),
        ("ending", "channel_refused"): ("ending", ()),  # killed meanwhile: it ends anyway
        ("live", "start_failed"): ("ending", ("end_hub",)),  # its owner left while it opened
        ("live", "mark_failed"): ("ending", ("end_hub",)),
        ("ending", "mark_failed"): ("ending", ()),
        ("live", "hub_ended_unopened"): ("failed", ("write_end", "audit_end")),
        ("ending", "hub_ended_unopened"): ("failed", ("write_end", "audit_end")),
    }
    for state in _STARTING:
        # The write goes to the background first: auditing the refusal raises it.
        rows[(state, "agent_offline")] = ("refused", ("write_end", "audit_refusal"))
        rows[(state, "start_refused")] = ("refused", ("write_end",))
        rows[(state, "start_failed")] = ("failed", ("write_end",))
        # The manager audits a kill before it feeds it (a kill the audit log cannot take
        # does not happen), so the row it meets is the state the session is in by then.
        rows[(state, "killed")] = ("refused", ("cancel_start", "write_end"))
        rows[(state, "start_recorded")] = ("live", ("register_hub", "open_channel"))
    for state in _RUNNING:
        rows[(state, "killed")] = ("ending", ("kill_hub",))
        rows[(state, "end_asked")] = ("ending", ("end_hub",))
        rows[(state, "hub_ended")] = ("ended", ("write_end", "audit_end"))
    for state in UNENDED_ROW_STATES:
        rows[(state, "recovered")] = ("interrupted", ("write_end", "audit_end"))
    return rows


TRANSITIONS: Final = MappingProxyType(_rows())


@dataclass(frozen=True, kw_only=True)
class StartPlan:
    """What the rules decided about a start: ask the end user, assign the ticket, and
    whether the ticket is new (opened once the session is live)."""

    needs_consent: bool
    assign: bool
    ticket_new: bool


def _action(
    kind: ActionKind, source: SessionState, state: SessionState, event: Event, plan: StartPlan
) -> Action | None:
    """One action of a table row (``source`` to ``state``), filled in from event and plan."""
    match kind:
        case "reach_agent":
            return ReachAgent()
        case "assign_ticket":
            return AssignTicket() if plan.assign else None
        case "ask_consent":
            return AskConsent()
        case "record_start":
            return RecordStart()
        case "register_hub":
            return RegisterHub()
        case "open_channel":
            return OpenChannel()
        case "mark_live":
            return MarkLive(open_ticket=plan.ticket_new)
        case "audit_refusal":
            assert isinstance(event, AgentOffline)
            return AuditRefusal("agent_offline", event.reason)
        case "cancel_start":
            return CancelStart()
        case "end_hub":
            return _end_hub(event)
        case "kill_hub":
            assert isinstance(event, Killed)
            return KillHub(event.by, event.reason)
        case "write_end":
            return _write_end(source, state, event)
        case "audit_end":
            return AuditEnd("session.interrupted" if state == "interrupted" else "session.end")


def _end_hub(event: Event) -> EndHub:
    if isinstance(event, ChannelRefused):
        return EndHub(
            END_NOT_STARTED,
            "agent_refused",
            f"agent {event.agent_name} refused to open the session; check that it runs, "
            "and for attended agents that the end user approved",
        )
    if isinstance(event, MarkFailed):
        return EndHub("audit store unavailable", "store_unavailable", AUDIT_STORE_UNAVAILABLE)
    if isinstance(event, EndAsked):
        return EndHub(event.reason, event.code, event.message)
    assert isinstance(event, StartFailed)
    # Its owner's terminal went away while the channel opened: nobody is left to use it.
    return EndHub(END_NOT_STARTED, "not_started", "the session could not be started")


def _end_state(state: SessionState) -> EndState:
    for end in END_STATES:
        if state == end:
            return end
    raise LifecycleError(f"{state} is not an end state")  # pragma: no cover


def _write_end(source: SessionState, state: SessionState, event: Event) -> WriteEnd:
    end = _end_state(state)
    if isinstance(event, HubEnded):
        return WriteEnd(end, None, note=event.opened and event.sealed)
    if isinstance(event, Recovered):  # a note only for what ran: the row was live
        return WriteEnd(end, None, note=event.sealed and source == "live")
    if isinstance(event, Killed):
        why = f": {event.reason}" if event.reason else ""
        return WriteEnd(end, f"ended by {event.by} before it started{why}", note=False)
    if isinstance(event, AgentOffline | StartRefused | StartFailed):
        return WriteEnd(end, event.reason, note=False)
    raise LifecycleError(f"no end is written for {event.kind}")  # pragma: no cover


class SessionLifecycle:
    """The state of one session on this node; :meth:`feed` returns what to do next."""

    def __init__(self, state: SessionState, plan: StartPlan) -> None:
        self.state: SessionState = state
        self.plan = plan

    @classmethod
    def begin(cls, plan: StartPlan) -> tuple[SessionLifecycle, InsertRow]:
        """A session the rules admitted: its first action writes its row."""
        state: RowState = "waiting_consent" if plan.needs_consent else "starting"
        return cls(state, plan), InsertRow(state)

    @classmethod
    def restored(cls, row_state: str) -> SessionLifecycle:
        """A session found unended in the database at start-up (a crash left it)."""
        for known in UNENDED_ROW_STATES:
            if row_state == known:
                return cls(known, StartPlan(needs_consent=False, assign=False, ticket_new=False))
        raise LifecycleError(f"a session row in state {row_state!r} has ended already")

    @property
    def has_ended(self) -> bool:
        """True once the end is decided (and its write handed out)."""
        return self.state in END_STATES

    def accepts(self, event: Event) -> bool:
        """Whether the table has a row for ``event`` in the current state."""
        return (self.state, event.kind) in TRANSITIONS

    def feed(self, event: Event) -> tuple[Action, ...]:
        """Move on by ``event``; raises LifecycleError (changing nothing) when the table
        has no row for it."""
        row = TRANSITIONS.get((self.state, event.kind))
        if row is None:
            raise LifecycleError(f"a session that is {self.state} cannot take {event.kind}")
        target, kinds = row
        actions = tuple(
            action
            for kind in kinds
            if (action := _action(kind, self.state, target, event, self.plan)) is not None
        )
        self.state = target
        return actions
