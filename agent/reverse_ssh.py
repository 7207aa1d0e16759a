"""The agent's SSH server over its tunnel, opened without asyncssh's per-connection option
preparation in a worker thread.

``asyncssh.connect_reverse`` prepares a new ``SSHServerConnectionOptions`` in a worker
thread (for configuration files it might read), and the connection prepares them all
again, in the thread once more, when the broker's first authentication request arrives
(``reload_config``: for ``Match`` blocks that depend on the user name and address). The
agent reads no configuration file (``config=None``): both preparations build the same
options, and each costs a thread hop, the preparation itself, and a wake of the event
loop from the thread. On a broker's restart every agent pays them at once, and a swarm
of simulated agents sharing the broker's cores paid them for each of its agents.

:func:`open_reverse_connection` prepares the options once, in the event loop (no file is
read), and opens the connection on them as ``asyncssh.connect_reverse`` does
(:mod:`agent.ssh_over_tunnel`);
:class:`TunnelServerConnection` keeps those options at the first authentication request.
What this repeats of asyncssh is pinned by ``tests/unit/test_library_guards.py``.
"""

from __future__ import annotations

import asyncssh

from agent.ssh_over_tunnel import open_over_tunnel
from agent.tunnel import WebSocketTunnel


class TunnelServerConnection(asyncssh.SSHServerConnection):
    """asyncssh's server connection, keeping its options when authentication begins."""

    async def reload_config(self) -> None:
        # Without a configuration file the re-preparation yields the options this
        # connection already has (and the tunnel's peer has no name to look up).
        return


async def open_reverse_connection(
    tunnel: WebSocketTunnel, **options: object
) -> asyncssh.SSHServerConnection:
    """The SSH server connection to the broker at the other end of ``tunnel``, made with
    ``options`` (``asyncssh.connect_reverse``'s keyword arguments, ``config=None``), once
    the broker authenticated. Raises what ``asyncssh.connect_reverse`` raises; a
    connection that fails or is cancelled is aborted."""
    if options.get("config", ()) is not None:
        raise ValueError("the tunnel's SSH server reads no configuration file: config=None")
    prepared = asyncssh.SSHServerConnectionOptions(**options)
    return await open_over_tunnel(
        tunnel,
        "",
        prepared,
        lambda loop, ready: TunnelServerConnection(loop, ready, wait="auth"),
        connect_timeout=prepared.connect_timeout,
    )
