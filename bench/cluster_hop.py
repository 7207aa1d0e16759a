"""What a session across nodes costs against a same-node one (docs/benchmarks.md,
"Sessions across nodes").

Two real nodes (`secondline serve --node`) on PostgreSQL and NATS, one real agent on n1,
and the real OpenSSH client: the same staff member's sessions on that agent opened through
n1 (same node: gateway, hub and recorder in one process) and through n2 (across nodes: n2's
gateway relays over the peer stream to n1's hub). Both paths are sampled in turns, so the
machine's other work weighs on both alike; the load average is printed with the figures.

    SECONDLINE_TEST_PG=postgresql://postgres@127.0.0.1:5432/test \\
        .venv/bin/python -m bench.cluster_hop [--keystrokes 200] [--runs 3] [--mb 50]

It uses the test suite's helpers for the cluster (tests/support) and needs what the
cluster tests need: PostgreSQL, and NATS on 127.0.0.1:4222 (or SECONDLINE_TEST_NATS).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path

from bench.session_scenarios import ECHO_COMMAND, echo_session, pipe_throughput_sample
from bench.stats import median, percentile
from tests.support.broker import secondline
from tests.support.cluster import Cluster, heard_twice, make_cluster
from tests.support.cluster_sessions import add_staff, ticket_for
from tests.support.database import drop_database, make_backend, run_sync
from tests.support.site import SSH, Site, ok, start_agent


def ssh_argv(
    cluster: Cluster, node: str, key: Path, user: str, command: str, tty: bool
) -> list[str]:
    """bob's OpenSSH straight to ``node``'s gateway."""
    known = key.parent / f"known_hosts_{node}"
    port = cluster.port(node, "ssh_port")
    host_key = (cluster.first / "keys" / "ssh_host_ed25519.pub").read_text().split()
    known.write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
    return [
        SSH, "-F", "/dev/null", "-p", str(port), "-i", str(key), "-o", "IdentitiesOnly=yes",
        "-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=yes",
        "-o", "BatchMode=yes", "-tt" if tty else "-T", f"{user}@127.0.0.1", command,
    ]  # fmt: skip


async def measure(cluster: Cluster, tmp: Path, keystrokes: int, runs: int, megabytes: int) -> None:
    try:
        n1 = await cluster.start("n1")
        await cluster.start("n2")
        ok(secondline("customer", "add", "acme", data_dir=cluster.first))
        key = add_staff(cluster.first, tmp)
        site = Site(n1, tmp, key, tmp / "known_hosts")
        await start_agent(site, "web01", "unattended")
        ticket = ticket_for(cluster.first, "web01")
        agents = json.loads(ok(secondline("agent", "list", "--json", data_dir=cluster.first)))
        await heard_twice(cluster, "n1", str(agents[0]["id"]))  # n2 knows where it is
        paths = {"same node (via n1)": "n1", "across nodes (via n2)": "n2"}
        echoes: dict[str, list[float]] = {p: [] for p in paths}
        rates: dict[str, list[float]] = {p: [] for p in paths}
        size = megabytes * 1_000_000
        loads = [os.getloadavg()[0]]
        for _ in range(runs):
            for label, node in paths.items():
                argv = ssh_argv(cluster, node, key, ticket, ECHO_COMMAND, tty=True)
                echoes[label] += await asyncio.to_thread(echo_session, argv, keystrokes, 20, 120.0)
                argv = ssh_argv(cluster, node, key, ticket, f"head -c {size} /dev/zero", tty=False)
                rates[label].append(
                    await asyncio.to_thread(pipe_throughput_sample, argv, size, 30.0)
                )
            loads.append(os.getloadavg()[0])
        print(f"load average (1 min) during the run: {min(loads):.1f} to {max(loads):.1f}")
        print("| path | echo p50 (µs) | echo p99 (µs) | raw throughput (MB/s, median) |")
        print("|---|--:|--:|--:|")
        for label in paths:
            e = echoes[label]
            print(
                f"| {label} | {percentile(e, 50):,.0f} | {percentile(e, 99):,.0f} "
                f"| {median(rates[label]):.1f} |"
            )
        print(f"({len(echoes[label])} keystrokes and {runs} transfers of {megabytes} MB per path)")
        if site.agent is not None:
            site.agent.kill()
            await site.agent.wait()
    finally:
        await cluster.stop_all()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keystrokes", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--mb", type=int, default=50)
    args = parser.parse_args()
    dsn = os.environ.get("SECONDLINE_TEST_PG", "")
    if not dsn:
        print("set SECONDLINE_TEST_PG to a PostgreSQL URL (see CONTRIBUTING.md)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="sl-cluster-hop-") as tmp:
        # Made before the event loop runs: `secondline init` runs its own.
        backend = make_backend("postgresql", Path(tmp), dsn)
        try:
            cluster = make_cluster(Path(tmp), backend)
            asyncio.run(measure(cluster, Path(tmp), args.keystrokes, args.runs, args.mb))
        finally:
            run_sync(drop_database(dsn, backend.database))
    return 0


if __name__ == "__main__":
    sys.exit(main())
