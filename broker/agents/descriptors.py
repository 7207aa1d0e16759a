"""File descriptors: agent tunnels never take the broker's last ones.

Every agent tunnel is a socket, and so is every agent knocking during a reconnect storm
until it is answered. At the process's descriptor limit everything fails at once with
EMFILE: the database pool cannot connect (requests answer 500), the audit log cannot
write its head file (the event is lost), transcripts cannot be opened, staff cannot
connect, and SSH handshakes fail. Worse, Python 3.11's event loop, failing to accept,
goes on through the rest of its accept batch and schedules one retry per failure
(python/cpython#151615, fixed upstream in later releases only): the retries multiply,
each one logs a traceback, and the broker spends itself logging. Measured before this
module: 600 agents against a broker limited to 400 descriptors got 801 HTTP 500s, 385
failed handshakes, then no answer at all for minutes (2.7 million log lines).

So, at start (:func:`prepare`, idempotent):

- the soft ``RLIMIT_NOFILE`` is raised to the hard one: systemd's default soft limit
  (1024) would otherwise hold a broker to about a thousand agents;
- the accept loop gets the upstream fix (:func:`install_accept_fix`): after a resource
  error it stops accepting for ``ACCEPT_RETRY_DELAY`` (one retry, one log line), and
  unaccepted connections wait in the kernel's backlog;

- the local user name is looked up once (:func:`pin_local_username`): asyncssh asks for it
  at every client connection, and without it in the environment reads /etc/passwd, one
  more descriptor per tunnel handshake;

and while running, :func:`tunnel_budget` (pure) says how many tunnels may be open or in
their handshake at once: the soft limit minus a reserve for everything else (database,
audit log, transcripts, staff, and connections accepted but not answered yet). Over it
the tunnel endpoint answers 503 with ``Retry-After``, so a flood of agents waits outside
instead of starving the broker.
"""

from __future__ import annotations

import errno
import inspect
import logging
import os
import pwd
import resource
import socket
import sys
from asyncio import constants, selector_events, trsock
from typing import Any, Final, cast

log = logging.getLogger(__name__)

#: Descriptors kept for everything but tunnels: at least this many...
RESERVE_MIN: Final = 256
#: ...and at least this share of the limit (1/8).
RESERVE_SHARE: Final = 8
#: The budget when the limit is unlimited.
UNLIMITED: Final = sys.maxsize
#: Where ``getpass.getuser()`` looks for the local user name, in its order.
_USER_VARIABLES: Final = ("LOGNAME", "USER", "LNAME", "USERNAME")
_RESOURCE_ERRNOS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
#: Python 3.11's signature of the method replaced by :func:`install_accept_fix`.
_ACCEPT_PARAMETERS: Final = (
    "self",
    "protocol_factory",
    "sock",
    "sslcontext",
    "server",
    "backlog",
    "ssl_handshake_timeout",
    "ssl_shutdown_timeout",
)


def tunnel_budget(soft_limit: int) -> int:
    """How many agent tunnels may hold a descriptor at once under ``soft_limit``."""
    if soft_limit < 0 or soft_limit == resource.RLIM_INFINITY:
        return UNLIMITED
    reserve = max(RESERVE_MIN, soft_limit // RESERVE_SHARE)
    return max(0, soft_limit - reserve)


def current_budget() -> int:
    """:func:`tunnel_budget` of the current soft limit (one cheap system call)."""
    return tunnel_budget(resource.getrlimit(resource.RLIMIT_NOFILE)[0])


def raise_soft_limit() -> int:
    """Raise the soft descriptor limit to the hard one; return the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard or soft == resource.RLIM_INFINITY:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as exc:
        # An unlimited hard limit cannot be the soft one for descriptors (Linux caps it).
        log.warning("cannot raise the descriptor limit from %d to %d: %s", soft, hard, exc)
        return soft
    return hard


def _accept_connection(
    self: selector_events.BaseSelectorEventLoop,
    protocol_factory: object,
    sock: socket.socket,
    sslcontext: object = None,
    server: object = None,
    backlog: int = 100,
    ssl_handshake_timeout: float = constants.SSL_HANDSHAKE_TIMEOUT,
    ssl_shutdown_timeout: float = constants.SSL_SHUTDOWN_TIMEOUT,
) -> None:
    """asyncio's accept batch (Python 3.11), leaving the batch after a resource error.

    The only change: ``return`` once the retry is scheduled. The original goes on
    accepting, fails again at once, and schedules a retry (and logs) for every failure.
    """
    loop = cast(Any, self)  # the private helpers below are asyncio's own, untyped
    for _ in range(backlog):
        try:
            conn, addr = sock.accept()
            conn.setblocking(False)
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        except OSError as exc:
            if exc.errno not in _RESOURCE_ERRNOS:
                raise  # the event loop logs and ignores it, as asyncio does
            loop.call_exception_handler(
                {
                    "message": "socket.accept() out of system resource",
                    "exception": exc,
                    "socket": trsock.TransportSocket(sock),
                }
            )
            loop._remove_reader(sock.fileno())
            loop.call_later(
                constants.ACCEPT_RETRY_DELAY,
                loop._start_serving,
                protocol_factory,
                sock,
                sslcontext,
                server,
                backlog,
                ssl_handshake_timeout,
                ssl_shutdown_timeout,
            )
            return
        accept = loop._accept_connection2(
            protocol_factory,
            conn,
            {"peername": addr},
            sslcontext,
            server,
            ssl_handshake_timeout,
            ssl_shutdown_timeout,
        )
        loop.create_task(accept)


#: asyncio's own accept batch, as imported (tests compare it with the one copied above).
ASYNCIO_ACCEPT: Final = selector_events.BaseSelectorEventLoop.__dict__.get("_accept_connection")


def install_accept_fix() -> bool:
    """Replace asyncio's accept batch with :func:`_accept_connection` (Python 3.11 only:
    the replacement is written against its signature); True when in place.

    There is no supported way: the accept loop is private to asyncio's selector event
    loop, with no hook or option around it, and the fix exists upstream only in later
    Python versions. So the replacement is a copy of 3.11's method with the one change,
    installed only when the method still has 3.11's signature, and
    tests/unit/test_library_guards.py fails when the installed asyncio's method differs
    from the one copied (then port the difference, or drop this once the fix is there)."""
    loop_class = selector_events.BaseSelectorEventLoop
    current = loop_class.__dict__.get("_accept_connection")
    if current is _accept_connection:
        return True
    if sys.version_info[:2] != (3, 11) or current is None:
        return False
    if tuple(inspect.signature(current).parameters) != _ACCEPT_PARAMETERS:
        log.warning("asyncio's accept loop is not the expected one; leaving it as it is")
        return False
    setattr(loop_class, "_accept_connection", _accept_connection)  # noqa: B010 - private
    return True


def pin_local_username() -> None:
    """Put the broker's local user name where ``getpass.getuser()`` looks first.

    asyncssh builds the options of every client connection anew, in an executor thread,
    and asks for the local user name each time (it never uses it for our connections:
    the SSH user name is fixed). Without LOGNAME, USER, LNAME or USERNAME in the
    environment (containers, supervisors other than systemd's ``User=``) that reads
    /etc/passwd once per tunnel handshake, and fails with "Unknown local username" when
    no descriptor is left, or for a uid without an entry: a good agent is then refused.
    Looked up once, at start, it is a dictionary read.

    Writing the environment is the only way in: asyncssh calls ``getpass.getuser()`` in
    ``SSHClientConnectionOptions.prepare`` unconditionally, with no option to pass a name
    (tests/unit/test_library_guards.py fails once it stops, and this can go). It runs
    once, at start, before the first tunnel's handshake reads it from another thread.
    """
    if any(os.environ.get(name) for name in _USER_VARIABLES):
        return
    try:
        name = pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        name = "secondline"
    os.environ["LOGNAME"] = name


def prepare() -> int:
    """Raise the descriptor limit, fix the accept loop, pin the local user name; return
    the tunnel budget."""
    soft = raise_soft_limit()
    install_accept_fix()
    pin_local_username()
    budget = tunnel_budget(soft)
    if budget != UNLIMITED:
        log.info("descriptor limit %d: up to %d agent tunnels at once", soft, budget)
    return budget


__all__ = [
    "ASYNCIO_ACCEPT",
    "RESERVE_MIN",
    "RESERVE_SHARE",
    "current_budget",
    "install_accept_fix",
    "pin_local_username",
    "prepare",
    "raise_soft_limit",
    "tunnel_budget",
]
