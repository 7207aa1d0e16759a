"""One audit chain across nodes: three real nodes on one PostgreSQL database append at the
same time, and the chain neither forks nor gaps (`audit verify` passes on every node)."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.e2e.test_cluster_nodes import admin_call
from tests.support.broker import secondline
from tests.support.cluster import Cluster
from tests.support.site import ok

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]

PER_NODE = 40


async def test_three_nodes_writing_at_once_keep_one_chain(cluster: Cluster) -> None:
    """Each node adds 40 customers (each one an audit record) while the others do the
    same; afterwards the log holds every record once, in one unbroken chain, and every
    node's `audit verify` says so."""
    nodes = [await cluster.start(name) for name in ("n1", "n2", "n3")]
    before = json.loads(ok(secondline("audit", "list", "--json", data_dir=nodes[0].data_dir)))
    first_seq = max(int(e["seq"]) for e in before)

    async def add_customers(index: int) -> None:
        for i in range(PER_NODE):
            await admin_call(
                nodes[index], "POST", "/customers", {"name": f"c{index}x{i}", "display_name": "x"}
            )

    await asyncio.gather(*(add_customers(i) for i in range(len(nodes))))

    for node in nodes:
        verdict = ok(secondline("audit", "verify", data_dir=node.data_dir))
        assert "audit log intact" in verdict, verdict
    events = json.loads(
        ok(
            secondline(
                "audit", "list", "--action", "customer.add", "--limit", "500", "--json",
                data_dir=nodes[1].data_dir,
            )
        )
    )  # fmt: skip
    assert len(events) == PER_NODE * len(nodes)
    seqs = sorted(int(e["seq"]) for e in events)
    assert seqs == list(range(first_seq + 1, first_seq + 1 + len(seqs)))
    assert len({e["target"] for e in events}) == len(events)
