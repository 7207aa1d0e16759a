"""Remote sessions: the session hub, starting, joining and ending sessions, and their rows
and notes. The ways in are elsewhere: the SSH gateway (``broker.ssh_gateway``) and the
browser terminal and transcript downloads (``broker.web``); the outbox that carries each
note to its ticket is ``broker.tickets.outbox``.

What other parts use::

    from broker.sessions import setup, SESSIONS
    runtime = app[SESSIONS]                      # SessionsRuntime
    runtime.manager.live                         # {session id: LiveSession} on this node
    await runtime.manager.kill(session_id, by="alice")

Modules: ``hub_core`` (pure participant, buffer and limit bookkeeping), ``facts`` (what a
session is, how it ended, what a terminal is), ``hub`` (one live session: agent channel,
terminals, recorder), ``hub_channel`` (the hub's end of the agent channel: opened, held and
why, its output in turns), ``hub_flush`` (the recorder's flush task), ``hub_agent`` (the
agent's channel and what its stream carries),
``admission`` (who may open, join or watch; audited refusals), ``consent`` (asking the end
user), ``lifecycle`` (a session's states, events and actions as a table, pure),
``manager`` (its executor: start, attach, kill, drain) with ``opening`` (the steps of a
start), ``joining`` (the steps of a join or a watch), ``session_end`` (what an end writes)
and ``finish`` (writing it, for ended, refused and crashed sessions), ``cross_node``
(opening or joining a session on whichever cluster node runs it) with ``routing`` (what a
way in holds, and what the cluster provides to reach another node's hub), ``note`` (the
note's text, pure), ``reads`` (object-level read checks, transcript files), ``access``
and ``store`` (database reads and writes), ``runtime`` (app keys), ``feature``
(``setup``).

Errors (``errors``): the root is :class:`SessionError`, a :class:`broker.errors.BrokerError`:

SessionError                root
├── SessionRefused          a rule, the end user, a limit or a store says no
│   ├── ConsentRefused      the end user denied, or did not answer in time
│   └── StoreUnavailable    "audit store unavailable" (503): nothing runs unrecorded
├── SessionNotFound         no such session, or the caller may not know it (404)
└── SessionConflict         the session's state does not allow the action (409)
"""

from broker.sessions.errors import (
    ConsentRefused,
    SessionConflict,
    SessionError,
    SessionNotFound,
    SessionRefused,
    StoreUnavailable,
)
from broker.sessions.feature import setup
from broker.sessions.runtime import AGENT_TUNNELS, SESSIONS, TICKET_SYSTEM, SessionsRuntime

__all__ = [
    "AGENT_TUNNELS",
    "SESSIONS",
    "TICKET_SYSTEM",
    "ConsentRefused",
    "SessionConflict",
    "SessionError",
    "SessionNotFound",
    "SessionRefused",
    "SessionsRuntime",
    "StoreUnavailable",
    "setup",
]
