"""The bookkeeping of one live session, sans I/O: who takes part, who may type, whose
buffer is too full, when the agent must be paused, when to flush, and when the session
must end.

:class:`HubCore` never awaits, never reads a clock and never touches a socket: the asyncio
hub (``broker.sessions.hub``) tells it what happened, passing ``now`` (monotonic seconds),
and performs the actions it returns, in order.

Participants:

- the **owner** paces the session: while the owner's terminal buffer is above
  ``pacing_high`` the agent channel is paused (SSH flow control down to the shell), as a
  direct SSH login would be paced by its one client;
- **joiners** type, **observers** only watch; both are *followers*: a follower whose buffer
  exceeds ``follower_max_buffer`` is disconnected with a message, so a slow viewer never
  stalls the others;
- the **recorder** never drops a byte: while more than ``recorder_high`` bytes wait to be
  written, the agent channel is paused too.

Only the owner and joiners type; an observer's input is dropped and the observer is told
so once. Every join and leave is a transcript marker.

The owner may invite staff to join (:meth:`HubCore.invite`) and hand control (typing is
shared, but the PTY size, signals and pacing are the owner's) to a present joiner
(:meth:`HubCore.hand_over`); the previous owner stays on as a joiner. Both are transcript
markers; a refusal raises :class:`HubRefused` with a code.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Final, Literal

Role = Literal["owner", "joiner", "observer"]
Phase = Literal["running", "ending", "ended"]

ROLES: Final[tuple[Role, ...]] = ("owner", "joiner", "observer")
MAX_INVITED: Final = 32

SLOW_MESSAGE: Final = (
    "your connection could not keep up with the session's output, so you were disconnected; "
    "attach again to go on watching"
)
READ_ONLY_MESSAGE: Final = "you are observing this session: what you type is not sent"
IDLE_REASON: Final = "idle timeout"
MAX_LENGTH_REASON: Final = "maximum session length reached"
OWNER_LEFT_REASON: Final = "ended"


@dataclass(frozen=True, kw_only=True)
class HubLimits:
    """Buffer bounds and time limits of a session (bytes and seconds)."""

    idle_timeout: float
    max_seconds: float
    follower_max_buffer: int = 4 << 20
    pacing_high: int = 1 << 20
    pacing_low: int = 256 << 10
    recorder_high: int = 4 << 20
    recorder_low: int = 1 << 20
    flush_bytes: int = 1 << 20
    flush_interval: float = 1.0
    max_participants: int = 32

    def __post_init__(self) -> None:
        if not 0 <= self.pacing_low <= self.pacing_high:
            raise ValueError("pacing_low must be between 0 and pacing_high")
        if not 0 <= self.recorder_low <= self.recorder_high:
            raise ValueError("recorder_low must be between 0 and recorder_high")
        if self.flush_interval <= 0 or self.idle_timeout <= 0 or self.max_seconds <= 0:
            raise ValueError("flush_interval, idle_timeout and max_seconds must be positive")


@dataclass(frozen=True)
class Member:
    """A participant as the core knows it."""

    pid: int
    name: str
    role: Role
    via: str
    joined_at: float

    @property
    def types(self) -> bool:
        """Whether this participant's input reaches the shell."""
        return self.role != "observer"

    @property
    def paces(self) -> bool:
        """Whether this participant's buffer pauses the agent (instead of being cut off)."""
        return self.role == "owner"


# -- actions the I/O layer performs --------------------------------------------------------


@dataclass(frozen=True)
class Disconnect:
    """Cut a participant off with this message (its buffer overflowed)."""

    pid: int
    message: str


@dataclass(frozen=True)
class PauseAgent:
    """Stop reading from the agent channel (SSH flow control reaches the shell)."""


@dataclass(frozen=True)
class ResumeAgent:
    """Read from the agent channel again."""


@dataclass(frozen=True)
class Flush:
    """Write the recorder's buffer to disk now."""


@dataclass(frozen=True)
class Notify:
    """Tell one participant something (shown as a notice, not as terminal output)."""

    pid: int
    message: str


@dataclass(frozen=True)
class Marker:
    """Put a marker in the transcript."""

    label: str


@dataclass(frozen=True)
class ParticipantsChanged:
    """Send everyone the new participant list."""


@dataclass(frozen=True)
class EndSession:
    """End the session; ``reason`` becomes the transcript's end reason."""

    reason: str
    code: str


Action = (
    Disconnect
    | PauseAgent
    | ResumeAgent
    | Flush
    | Notify
    | Marker
    | ParticipantsChanged
    | EndSession
)


class HubFull(Exception):
    """The session has as many participants as it may hold."""


class HubClosed(Exception):
    """The session is ending; nobody can join any more."""


class HubRefused(Exception):
    """An invitation or hand-over the core refuses; ``code`` says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class _Buffers:
    levels: dict[int, int] = field(default_factory=dict)
    paused_by: set[str] = field(default_factory=set)


class HubCore:
    """Participants, buffers, pacing, flushing and time limits of one session."""

    def __init__(self, limits: HubLimits, now: float) -> None:
        self.limits = limits
        self.phase: Phase = "running"
        self.started_at = now
        self._last_activity = now
        self._last_flush = now
        self._unflushed = 0  # given to the recorder since the last flush started
        self._in_flight = 0  # taken by the flush that is running
        self._flushing = False
        self._next_pid = 1
        self._members: dict[int, Member] = {}
        self._dropping: set[int] = set()
        self._told_read_only: set[int] = set()
        self._buffers = _Buffers()
        self._invited: set[str] = set()

    # -- participants ----------------------------------------------------------------------

    @property
    def members(self) -> list[Member]:
        """Everyone attached, in the order they joined."""
        return list(self._members.values())

    def member(self, pid: int) -> Member | None:
        return self._members.get(pid)

    @property
    def owner(self) -> Member | None:
        return next((m for m in self._members.values() if m.role == "owner"), None)

    def join(self, name: str, role: Role, via: str, now: float) -> tuple[Member, list[Action]]:
        """Add a participant; raises HubClosed or HubFull."""
        if self.phase != "running":
            raise HubClosed("the session is ending")
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        if role == "owner" and self.owner is not None:
            raise ValueError("the session has an owner already")
        if len(self._members) >= self.limits.max_participants:
            raise HubFull(f"the session has {len(self._members)} participants, the most it holds")
        member = Member(self._next_pid, name, role, via, now)
        self._next_pid += 1
        self._members[member.pid] = member
        self._buffers.levels[member.pid] = 0
        return member, [Marker(f"{name} joined as {role} ({via})"), ParticipantsChanged()]

    def leave(self, pid: int, reason: str, now: float) -> list[Action]:
        """Remove a participant; the owner leaving ends the session."""
        member = self._members.pop(pid, None)
        if member is None:
            return []
        self._dropping.discard(pid)
        self._told_read_only.discard(pid)
        self._buffers.levels.pop(pid, None)
        actions: list[Action] = []
        if self.phase == "running":
            actions.append(Marker(f"{member.name} left ({reason})"))
        actions.append(ParticipantsChanged())
        actions += self._unpause(f"member:{pid}")
        if member.role == "owner" and self.phase == "running":
            actions.append(EndSession(OWNER_LEFT_REASON, "owner_left"))
        return actions

    # -- invitations and control -----------------------------------------------------------

    @property
    def invited(self) -> frozenset[str]:
        """The staff the owner invited to join (``may_join_session`` honours them)."""
        return frozenset(self._invited)

    def _check_owner(self, by: str) -> Member:
        if self.phase != "running":
            raise HubClosed("the session is ending")
        owner = self.owner
        if owner is None or owner.name != by:
            holder = owner.name if owner is not None else "nobody"
            raise HubRefused("not_owner", f"only the session's owner ({holder}) may do this")
        return owner

    def invite(self, by: str, name: str) -> list[Action]:
        """The owner ``by`` invites ``name`` to join; raises HubClosed or HubRefused."""
        owner = self._check_owner(by)
        if name == owner.name:
            raise HubRefused("self", "you own this session already")
        if name in self._invited:
            return []
        if len(self._invited) >= MAX_INVITED:
            raise HubRefused("too_many", f"a session holds at most {MAX_INVITED} invitations")
        self._invited.add(name)
        return [Marker(f"invited: {name}")]

    def hand_over(self, by: str, to: str) -> list[Action]:
        """The owner ``by`` hands control to the present joiner ``to``, staying on as a
        joiner; raises HubClosed or HubRefused (not_owner, self, absent, observer)."""
        owner = self._check_owner(by)
        if to == owner.name:
            raise HubRefused("self", "you control this session already")
        present = [m for m in self._members.values() if m.name == to]
        if not present:
            raise HubRefused("absent", f"{to} is not in this session; they must join first")
        target = next((m for m in present if m.role == "joiner"), None)
        if target is None:
            raise HubRefused(
                "observer", f"{to} only observes this session; they must join to take control"
            )
        self._members[owner.pid] = replace(owner, role="joiner")
        self._members[target.pid] = replace(target, role="owner")
        actions: list[Action] = [
            Marker(f"control handed from {owner.name} to {to}"),
            ParticipantsChanged(),
            Notify(target.pid, f"{owner.name} handed you control of this session"),
            Notify(owner.pid, f"you handed control to {to}; you can still type"),
        ]
        # Pacing moves with control: the old owner is now a follower, the new one paces.
        actions += self._unpause(f"member:{owner.pid}")
        actions += self.buffered(owner.pid, self._buffers.levels.get(owner.pid, 0))
        actions += self.buffered(target.pid, self._buffers.levels.get(target.pid, 0))
        return actions

    # -- data ------------------------------------------------------------------------------

    def output(self, size: int, now: float) -> list[Action]:
        """The agent sent ``size`` bytes, now buffered for the recorder."""
        self._last_activity = now
        self._unflushed += size
        return self._recorder_level(now)

    def recorded(self, size: int, now: float) -> list[Action]:
        """About ``size`` bytes that are not the agent's output (typed input, a resize) were
        buffered for the recorder: counted like output, so that a stream of them (a resize
        storm, a long paste) is flushed and paced like one, not kept until the next output."""
        self._unflushed += size
        return self._recorder_level(now)

    def input(self, pid: int, now: float) -> tuple[bool, list[Action]]:
        """A participant typed; returns whether it goes to the shell."""
        member = self._members.get(pid)
        if member is None or self.phase != "running":
            return False, []
        if not member.types:
            if pid in self._told_read_only:
                return False, []
            self._told_read_only.add(pid)
            return False, [Notify(pid, READ_ONLY_MESSAGE)]
        self._last_activity = now
        return True, []

    def may_resize(self, pid: int) -> bool:
        """Only the owner's terminal decides the PTY size."""
        member = self._members.get(pid)
        return member is not None and member.role == "owner" and self.phase == "running"

    def buffered(self, pid: int, level: int) -> list[Action]:
        """A participant's outgoing buffer now holds ``level`` bytes."""
        member = self._members.get(pid)
        if member is None or pid in self._dropping:
            return []
        self._buffers.levels[pid] = level
        reason = f"member:{pid}"
        if member.paces:
            if level > self.limits.pacing_high:
                return self._pause(reason)
            if level <= self.limits.pacing_low:
                return self._unpause(reason)
            return []
        if level > self.limits.follower_max_buffer:
            self._dropping.add(pid)
            return [Disconnect(pid, SLOW_MESSAGE)]
        return []

    # -- the recorder ----------------------------------------------------------------------

    def _recorder_level(self, now: float) -> list[Action]:
        actions: list[Action] = []
        if self._unflushed >= self.limits.flush_bytes and not self._flushing:
            actions += self._start_flush(now)
        if self._in_flight + self._unflushed > self.limits.recorder_high:
            actions += self._pause("recorder")
        return actions

    def _start_flush(self, now: float) -> list[Action]:
        self._flushing = True
        self._last_flush = now
        self._in_flight = self._unflushed
        self._unflushed = 0
        return [Flush()]

    def flush_done(self, now: float) -> list[Action]:
        """The flush the core asked for has finished (successfully or not)."""
        self._flushing = False
        self._in_flight = 0
        actions: list[Action] = []
        if self._unflushed <= self.limits.recorder_low:
            actions += self._unpause("recorder")
        if self._unflushed >= self.limits.flush_bytes:
            actions += self._start_flush(now)
        return actions

    @property
    def unflushed(self) -> int:
        """Bytes given to the recorder and not yet written (including a running flush)."""
        return self._in_flight + self._unflushed

    @property
    def flushing(self) -> bool:
        return self._flushing

    # -- pausing ---------------------------------------------------------------------------

    @property
    def agent_paused(self) -> bool:
        return bool(self._buffers.paused_by)

    @property
    def paused_by(self) -> frozenset[str]:
        """Why the agent channel is paused: ``recorder`` and/or ``member:<pid>``."""
        return frozenset(self._buffers.paused_by)

    def _pause(self, reason: str) -> list[Action]:
        was = bool(self._buffers.paused_by)
        self._buffers.paused_by.add(reason)
        return [] if was else [PauseAgent()]

    def _unpause(self, reason: str) -> list[Action]:
        if reason not in self._buffers.paused_by:
            return []
        self._buffers.paused_by.discard(reason)
        return [] if self._buffers.paused_by else [ResumeAgent()]

    # -- time ------------------------------------------------------------------------------

    def tick(self, now: float) -> list[Action]:
        """Called about once a second: flush what waits, end idle or overlong sessions."""
        if self.phase != "running":
            return []
        actions: list[Action] = []
        if (
            not self._flushing
            and self._unflushed > 0
            and now - self._last_flush >= self.limits.flush_interval
        ):
            actions += self._start_flush(now)
        if now - self.started_at >= self.limits.max_seconds:
            actions.append(EndSession(MAX_LENGTH_REASON, "max_length"))
        elif now - self._last_activity >= self.limits.idle_timeout:
            actions.append(EndSession(IDLE_REASON, "idle"))
        return actions

    def end(self) -> None:
        """The session is ending: nobody joins, nothing is typed, no limit fires any more."""
        if self.phase == "running":
            self.phase = "ending"

    def ended(self) -> None:
        self.phase = "ended"


def roles_of(members: Iterable[Member]) -> list[dict[str, str]]:
    """The participant list as the console shows it."""
    return [{"name": m.name, "role": m.role} for m in members]


def end_message(code: str) -> str:
    """What the people in a session are told when it ends for ``code``."""
    return {
        "idle": "the session was idle too long, so it ended",
        "max_length": "the session reached its maximum length, so it ended",
        "owner_left": "the session ended: its owner left",
        "sftp_unreadable": (
            "the SFTP stream could not be read, so it could not be recorded and the session "
            "ended; try again, and tell an admin if it happens again"
        ),
        "disk_full": (
            "the broker's disk is full, so the transcript could not go on and the session "
            "ended; what was recorded is kept and sealed. Tell an admin"
        ),
        "recorder_failed": (
            "the broker could not write the transcript, so the session ended; what was "
            "recorded is kept and sealed. Tell an admin"
        ),
        "output_failed": (
            "the broker failed to handle the session's output (an internal error), so the "
            "session ended; what was recorded is kept and sealed. Tell an admin"
        ),
    }.get(code, "the session ended")
