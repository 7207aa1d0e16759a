"""What a load balancer and Prometheus ask a node: ``/readyz`` and ``/metrics``.

``/healthz`` (broker.app) says the process answers and reaches its database, asked on
the probe's own connection (broker.cluster.readiness) as ``/readyz`` is. ``/readyz``
says the node should be given new connections: its database answers and, on a cluster
node, its NATS connection is up (a node without NATS could take an agent nobody else
would know it holds). The load balancer checks ``/readyz``.

``/metrics`` is the Prometheus text format: counts only, no names or ids, so it is served
without credentials like the health checks (docs/cluster.md).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Final

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

#: Audit outcomes that are refusals (the rest are "ok").
REFUSED: Final = frozenset({"denied", "refused", "failed"})


@dataclass
class NodeFigures:
    """What the collector reads at scrape time; the callables look at live state, the
    counters are fed as things happen (refusals from the audit log, the outbox depth by
    the node's ticker)."""

    node: str
    agents_held: Callable[[], int]
    sessions_live: Callable[[], int]
    handshakes: Callable[[], int]
    tunnel_refusals: Callable[[], int]
    nodes_seen: Callable[[], int]
    bus_connected: Callable[[], bool]
    #: Agent tunnels turned away because the node held its fair share; agents it handed
    #: off for being above it (broker.cluster.share).
    share_refusals: Callable[[], int] = lambda: 0
    handed_off: Callable[[], int] = lambda: 0
    #: The most agents the node takes now (its share and slack); None while it takes
    #: every agent (alone, or the others still starting).
    share_limit: Callable[[], int | None] = lambda: None
    outbox_depth: int = 0
    refusals: Counter[tuple[str, str]] = field(default_factory=Counter)

    def audited(self, action: str, outcome: str, details: Mapping[str, object]) -> None:
        """An audit event was stored: count it when it is a refusal, by action and code."""
        if outcome not in REFUSED:
            return
        code = details.get("code") or details.get("reason") or outcome
        self.refusals[(action[:64], str(code)[:64])] += 1


class NodeCollector(Collector):
    def __init__(self, figures: NodeFigures) -> None:
        self._f = figures

    def collect(self) -> Iterator[Metric]:
        f = self._f
        labels = ["node"]
        for name, text, value in (
            ("secondline_agents_held", "agent tunnels this node holds", f.agents_held()),
            ("secondline_sessions_live", "sessions running on this node", f.sessions_live()),
            ("secondline_outbox_depth", "session notes waiting for their ticket", f.outbox_depth),
            ("secondline_cluster_nodes", "nodes this node hears, itself included", f.nodes_seen()),
            ("secondline_bus_connected", "1 while the cluster bus is up", int(f.bus_connected())),
        ):
            gauge = GaugeMetricFamily(name, text, labels=labels)
            gauge.add_metric([f.node], value)
            yield gauge
        limit = GaugeMetricFamily(
            "secondline_agents_share_limit",
            "the most agent tunnels this node takes now; no sample while it takes every agent",
            labels=labels,
        )
        if (most := f.share_limit()) is not None:
            limit.add_metric([f.node], most)
        yield limit
        handshakes = CounterMetricFamily(
            "secondline_tunnel_handshakes", "agent tunnel handshakes completed", labels=labels
        )
        handshakes.add_metric([f.node], f.handshakes())
        yield handshakes
        tunnel_refused = CounterMetricFamily(
            "secondline_tunnel_refusals", "agent tunnels refused", labels=labels
        )
        tunnel_refused.add_metric([f.node], f.tunnel_refusals())
        yield tunnel_refused
        for name, text, value in (
            (
                "secondline_tunnel_share_refusals",
                "agent tunnels turned away: the node held its fair share",
                f.share_refusals(),
            ),
            (
                "secondline_agents_handed_off",
                "agent tunnels closed to move them to nodes holding fewer",
                f.handed_off(),
            ),
        ):
            counter = CounterMetricFamily(name, text, labels=labels)
            counter.add_metric([f.node], value)
            yield counter
        refusals = CounterMetricFamily(
            "secondline_refusals",
            "audited refusals, by action and code",
            labels=["node", "action", "code"],
        )
        for (action, code), count in sorted(f.refusals.items()):
            refusals.add_metric([f.node, action, code], count)
        yield refusals


def metrics_registry(figures: NodeFigures) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(figures))
    return registry
