"""The SSH gateway: staff's own OpenSSH client reaches a session through it.

What other parts use::

    from broker.ssh_gateway import GATEWAY, setup
    app[GATEWAY].port                            # the port it listens on

Modules: ``gateway`` (the listener, sign-in limits and throttles, audit of refusals),
``connection`` (one SSH connection: target, keys, second factor, channels), ``session``
(one SSH session channel attached to a session hub), ``second_factor`` (authenticator codes
and shift windows over keyboard-interactive), ``wire`` (checks of the client's cleartext
start), ``feature`` (``setup``). Sessions themselves are opened, joined and ended by
``broker.sessions``; the gateway only carries them.
"""

from broker.ssh_gateway.feature import GATEWAY, setup

__all__ = ["GATEWAY", "setup"]
