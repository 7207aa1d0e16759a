"""The 503 answers of ``GET /agent/v1/tunnel`` (:mod:`broker.agents.tunnel_endpoint`):
each says why in its error code and when to come back in ``Retry-After``."""

from __future__ import annotations

import random
import time
from typing import Final

from aiohttp import web

from broker.agents.retry_spread import RetrySpread
from broker.errors import error_response

#: When the broker holds all the tunnels its descriptors allow: come back in this long
#: (a place frees only when an agent leaves, so sooner would only cost TLS handshakes).
FULL_RETRY_S: Final = 30
#: A draining node turns agents away for this long: by then the load balancer, which checks
#: /readyz every second and drops a node after two failures, sends them to another node.
DRAINING_RETRY_S: Final = 2


def busy(seconds: int) -> web.Response:
    """The handshake limiter's answer: the agent's turn comes in ``seconds``."""
    response = error_response(
        503, "busy", f"the broker is admitting many agents; your turn comes in {seconds} s"
    )
    response.headers["Retry-After"] = str(seconds)
    return response


def draining() -> web.Response:
    """This node is draining."""
    # The agent waits Retry-After (plus up to half again) and dials the load balancer
    # again, which has taken this node out of its pool by then (/readyz says 503).
    response = error_response(
        503, "draining", "this broker node is draining; connect again to another node"
    )
    response.headers["Retry-After"] = str(DRAINING_RETRY_S)
    return response


def over_share(spread: RetrySpread) -> web.Response:
    """This cluster node holds its fair share of the agents."""
    # The herd it turns away comes back spread (the agent adds up to half again), to the
    # node the load balancer picks.
    seconds = spread.seconds(time.monotonic(), random.random())  # noqa: S311 - jitter
    response = error_response(
        503,
        "over_share",
        "this broker node holds its share of the cluster's agents; connect again in "
        f"{seconds} s and the load balancer picks a node holding fewer",
    )
    response.headers["Retry-After"] = str(seconds)
    return response


def full() -> web.Response:
    """No descriptor to spare for one more tunnel."""
    response = error_response(
        503,
        "full",
        f"the broker holds as many agent tunnels as it can; try again in {FULL_RETRY_S} s",
    )
    response.headers["Retry-After"] = str(FULL_RETRY_S)
    return response
