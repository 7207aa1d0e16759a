"""Agents: enrollment tokens, enrollment, the SSH-over-WebSocket tunnel, presence, facts,
revocation, and the signed requests agents send outside their tunnel.

Modules:

- ``tokens``: enrollment tokens (minted hashed, claimed by a conditional UPDATE).
- ``agent_store``: enrolled agents in the database; :class:`AgentRecord`, lookups by id or
  name (:func:`find_agent`), presence and facts writes.
- ``facts_policy``: what facts the broker accepts (pure).
- ``facts_pacing``: an online agent's facts refresh waits for the handshakes under way
  (a reconnect storm's handshakes go first).
- ``handshake_limiter``: fair admission of tunnel handshakes (pure).
- ``descriptors``: the tunnel budget below the descriptor limit (agents beyond it get 503
  "full"), the soft limit raised at start, and the fixes that keep the broker answering
  when descriptors run out.
- ``refusal_audit``: refused tunnels audited once per kind, repeats counted into one
  summary event per window (a bad agent retrying for days is not thousands of events).
- ``registry``: :class:`AgentRegistry`, the live tunnels of this node
  (implements :class:`broker.ports.AgentTunnels`).
- ``presence``: online/offline/last seen and facts, written in batches.
- ``tls_read_buffer``, ``heap_trim``: what keeps an idle tunnel small (one TLS read buffer
  per thread; returning handshake memory to the system).
- ``enroll_endpoint``, ``tunnel_endpoint``: ``/agent/v1/enroll`` and ``/agent/v1/tunnel``;
  ``ws_takeover`` takes an accepted tunnel's connection off aiohttp, ``tunnel_websocket``
  is its WebSocket from then on, ``tunnel_life`` its handshake and life, ``tunnel_runtime``
  what the endpoint keeps between requests.
- ``signed_requests``: :func:`verify_agent_request` for ``/agent/v1/*`` requests outside the
  tunnel.
- ``feature``: ``setup(app)``, and the app keys :data:`AGENT_REGISTRY`, :data:`TUNNEL_SETTINGS`.

Import from the modules themselves: this package re-exports nothing, so that a light
module of it (``install_command``, used by the CLI) does not pull in the server's (the
database layer, asyncssh, aiohttp) and every CLI command starts in a fraction of the time.

Errors are those of :mod:`broker.errors` (InputError, ForbiddenError, ConflictError, ...);
:class:`~broker.agents.tokens.TokenRefused` (a ForbiddenError) and
:class:`~broker.agents.facts_policy.FactsRefused` (an InputError) carry the refusal codes.
"""
