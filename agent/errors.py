"""Errors of the agent package.

Every error the agent raises on purpose derives from :class:`AgentError`, and its message
is a sentence a user can act on (what happened, what to do)::

    AgentError
    ├── MessageError              a message or file we read is malformed (peer or disk erred)
    │   ├── TokenError            the text is not a Secondline enrollment token
    │   └── TunnelProtocolError   the tunnel peer sent a text message
    ├── StateError                the state dir is missing, unreadable or too open
    │   ├── NotEnrolledError      there is no enrollment in the state dir
    │   └── ConfigError           agent.toml is invalid (the message names the key)
    ├── BrokerCallError           an HTTPS call to the broker outside the tunnel failed
    │   ├── CertificateMismatchError   the broker's certificate is not the pinned one
    │   ├── BrokerUnreachableError     no answer (network, TLS, timeout)
    │   └── BrokerRefusedError         the broker answered with an error (``code``)
    ├── TunnelRefusedError        the broker refused the tunnel upgrade (HTTP 401/403)
    ├── SignatureError            a signed agent request does not verify (broker side)
    ├── ReleaseError              an offered release is refused (signature, digest, version)
    ├── ConsentError              no such consent request, or it was already decided
    ├── ControlError              the control socket could not be reached or refused
    └── SpawnError                a session's process could not be started

Parsers never let anything else escape: malformed input always becomes a
:class:`MessageError` (or :class:`TokenError`) without internal detail.
"""

from __future__ import annotations


class AgentError(Exception):
    """Root of every error the agent raises on purpose."""


class MessageError(AgentError):
    """A message (from the broker, the network or a file) is malformed."""


class TokenError(MessageError):
    """The text given as an enrollment token is not one."""


class TunnelProtocolError(MessageError):
    """The tunnel's peer sent something other than binary messages."""


class StateError(AgentError):
    """The state dir or one of its files is missing, unreadable or too open."""


class NotEnrolledError(StateError):
    """The state dir holds no enrollment."""


class ConfigError(StateError):
    """The local configuration file is invalid."""


class BrokerCallError(AgentError):
    """An HTTPS call to the broker outside the tunnel failed."""


class CertificateMismatchError(BrokerCallError):
    """The broker presented a certificate other than the pinned one."""


class BrokerUnreachableError(BrokerCallError):
    """The broker could not be reached or did not answer in time."""


class BrokerRefusedError(BrokerCallError):
    """The broker answered with an error body."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class TunnelRefusedError(AgentError):
    """The broker refused the tunnel upgrade: the agent is revoked or unknown."""

    def __init__(self, status: int) -> None:
        super().__init__(
            f"the broker refused this agent (HTTP {status}): it was revoked or its enrollment "
            "is no longer valid; ask your helpdesk for a new token and enroll again"
        )
        self.status = status


class SignatureError(AgentError):
    """A signed request from an agent does not verify."""


class ReleaseError(AgentError):
    """An offered agent release does not verify or must not be installed."""


class ConsentError(AgentError):
    """A consent request is unknown or already decided."""


class ControlError(AgentError):
    """The running agent could not be reached over its control socket, or refused."""


class SpawnError(AgentError):
    """The process of a session could not be started."""
