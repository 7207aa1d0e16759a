"""The restart storm's figures, pure: what `python -m bench.cluster_storm` reads and reports.

The run (:mod:`bench.cluster_storm`) samples the swarm's online count, the nodes' /metrics,
HAProxy's ``show info``, the kernel's socket counts and PostgreSQL's connections; these
functions turn that text and those samples into figures, so they are tested on sample
text without a cluster.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from bench import MeasurementError

#: The issue's promise: after a whole-cluster restart every agent is back within this.
PROMISE_S = 60.0


def metric(text: str, name: str) -> float:
    """One sample of ``name`` in a node's /metrics (Prometheus text; a node's metrics carry
    one ``node`` label, so the first sample is the node's)."""
    found = re.search(rf"^{re.escape(name)}(?:\{{[^}}]*\}})?\s+([0-9.eE+-]+)\s*$", text, re.M)
    if found is None:
        raise MeasurementError(f"the node's /metrics has no {name}")
    return float(found.group(1))


def refusals_by_code(text: str) -> dict[str, int]:
    """``secondline_refusals_total`` of the agent tunnel, by code (over_share, ...)."""
    counts: dict[str, int] = {}
    pattern = r"^secondline_refusals_total\{([^}]*)\}\s+([0-9.eE+]+)\s*$"
    for labels, value in re.findall(pattern, text, re.M):
        pairs = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        if pairs.get("action") == "agent.tunnel":
            counts[pairs.get("code", "")] = int(float(value))
    return counts


def show_info(text: str) -> dict[str, str]:
    """HAProxy's ``show info`` answer: field → value."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def sockstat(text: str) -> dict[str, int]:
    """/proc/net/sockstat's TCP line: inuse, orphan, tw (TIME_WAIT), alloc, mem."""
    for line in text.splitlines():
        if line.startswith("TCP:"):
            words = line.split()[1:]
            return {words[i]: int(words[i + 1]) for i in range(0, len(words) - 1, 2)}
    raise MeasurementError("/proc/net/sockstat has no TCP line")


#: HAProxy's ``show stat`` columns the storm reports: failed health checks, times a node
#: was taken out, seconds it was out; connections refused for want of a node.
CHECK_COLUMNS = ("chkfail", "chkdown", "downtime", "econ")


def haproxy_checks(show_stat: str, backend: str) -> dict[str, dict[str, int]]:
    """HAProxy's ``show stat`` CSV: each server of ``backend`` (and the backend itself)
    → its :data:`CHECK_COLUMNS` (an empty cell counts 0)."""
    lines = show_stat.splitlines()
    if not lines or not lines[0].startswith("# "):
        raise MeasurementError("HAProxy's show stat answer has no header")
    header = lines[0][2:].split(",")
    rows: dict[str, dict[str, int]] = {}
    for line in lines[1:]:
        row = dict(zip(header, line.split(","), strict=False))
        if row.get("pxname") != backend or row.get("svname") == "FRONTEND":
            continue
        rows[row["svname"]] = {column: int(row.get(column) or 0) for column in CHECK_COLUMNS}
    return rows


def checks_delta(
    before: Mapping[str, Mapping[str, int]], after: Mapping[str, Mapping[str, int]]
) -> dict[str, dict[str, int]]:
    """What the counters of :func:`haproxy_checks` gained between two readings."""
    return {
        name: {k: v - before.get(name, {}).get(k, 0) for k, v in counts.items()}
        for name, counts in after.items()
    }


def descriptors_needed(agents: int) -> int:
    """Descriptors the run's processes need: HAProxy takes two per connection (deploy/
    haproxy.cfg leaves its maxconn to follow its limit), a node alone takes the whole
    herd, plus room for each process's own files, the database and NATS."""
    return 2 * agents + 4096


#: Connections HAProxy keeps free beside the agents: health checks, admin commands.
HAPROXY_SPARE = 100


def agents_that_fit(maxconn: int) -> int:
    """How many agents one HAProxy of this ``maxconn`` can hold a tunnel for at once."""
    return max(0, maxconn - HAPROXY_SPARE)


def time_to(curve: Sequence[tuple[float, int]], count: int) -> float | None:
    """Seconds at which the online count first reached ``count`` (None: never)."""
    for seconds, online in curve:
        if online >= count:
            return round(seconds, 2)
    return None


def milestones(curve: Sequence[tuple[float, int]], total: int) -> dict[str, float | None]:
    """Seconds until half, 90 % and all of ``total`` were online."""
    return {
        "half_online_s": time_to(curve, (total + 1) // 2),
        "ninety_percent_online_s": time_to(curve, (total * 9 + 9) // 10),
        "all_online_s": time_to(curve, total),
    }


def thin(curve: Sequence[tuple[float, int]], step: float = 1.0) -> list[tuple[float, int]]:
    """The curve with at most one point per ``step`` seconds (the last of each), for the
    JSON: the swarm reports every few milliseconds."""
    kept: dict[int, tuple[float, int]] = {}
    for seconds, online in curve:
        kept[int(seconds // step)] = (round(seconds, 2), online)
    return [kept[key] for key in sorted(kept)]


@dataclass(frozen=True)
class NodeFigures:
    """One node after the storm: what it held against its share, what it turned away."""

    name: str
    held_when_all_online: int
    held_settled: int
    share_refusals: int
    handed_off: int
    handshakes: int
    refusals: Mapping[str, int]
    rss_kib: int
    cpu_s: float

    def as_json(self, limit: int | None) -> dict[str, object]:
        return {
            "node": self.name,
            "held_when_all_online": self.held_when_all_online,
            "held_settled": self.held_settled,
            "share_limit": limit,
            "within_share": limit is None or self.held_settled <= limit,
            "over_share_refusals": self.share_refusals,
            "handed_off": self.handed_off,
            "handshakes": self.handshakes,
            "tunnel_refusals_by_code": dict(self.refusals),
            "rss_mib": round(self.rss_kib / 1024, 1),
            "cpu_s": round(self.cpu_s, 1),
            "cpu_ms_per_handshake": (
                round(self.cpu_s * 1000 / self.handshakes, 2) if self.handshakes else None
            ),
        }


def tally_delta(
    before: Mapping[str, Mapping[str, int]], after: Mapping[str, Mapping[str, int]]
) -> dict[str, int]:
    """The swarm's attempts by outcome between two of its cumulative tallies (all roles)."""
    total: Counter[str] = Counter()
    for role, counts in after.items():
        for outcome, count in counts.items():
            total[outcome] += count - before.get(role, {}).get(outcome, 0)
    return {outcome: count for outcome, count in sorted(total.items()) if count}


def top_frames(collapsed: Iterable[str], count: int = 15) -> list[tuple[str, float]]:
    """py-spy's ``--format raw`` (collapsed stacks, ``frame;frame;... samples``): the
    functions the samples were in (the innermost frame, "self"), share of all samples."""
    own: Counter[str] = Counter()
    total = 0
    for line in collapsed:
        stack, _, samples = line.rstrip("\n").rpartition(" ")
        if not stack or not samples.isdigit():
            continue
        total += int(samples)
        own[_short(stack.rsplit(";", 1)[-1])] += int(samples)
    if not total:
        return []
    return [(frame, round(100 * n / total, 1)) for frame, n in own.most_common(count)]


def _short(frame: str) -> str:
    """``function (path/to/module.py:123)`` → ``function (module.py)``: lines differ
    between samples of one function."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    return f"{name} ({path.rsplit('/', 1)[-1]})" if path else name


def summary(figures: dict[str, object]) -> str:
    """The run in a few lines for the terminal (the JSON has everything)."""
    haproxy = figures.get("haproxy")
    maxconn = haproxy.get("maxconn") if isinstance(haproxy, dict) else None
    cut = f" (of {figures['agents_wanted']} wanted)" if "agents_wanted" in figures else ""
    lines = [
        f"{figures['agents']} agents{cut}, {figures['nodes']} nodes behind HAProxy (maxconn "
        f"{maxconn}); load average at the restart {figures.get('loadavg_at_restart')}",
        f"enrolled in {figures.get('enrolled_s')} s, first connect {figures.get('first_connect_s')}"
        f" s, stop {figures.get('stop_s')} s, nodes listening {figures.get('listening_s')}",
        f"after the restart: half back {figures.get('half_online_s')} s, 90 % "
        f"{figures.get('ninety_percent_online_s')} s, all {figures.get('all_online_s')} s "
        f"(promise {PROMISE_S:.0f} s: {'met' if figures.get('promise_met') else 'MISSED'}); "
        f"tunnels up before their facts: {figures.get('tunnels_up')}",
    ]
    per_node = figures.get("per_node")
    for node in per_node if isinstance(per_node, list) else ():
        lines.append(
            f"  {node['node']}: held {node['held_when_all_online']} when all were back, "
            f"{node['held_settled']} settled (share limit {node['share_limit']}), turned away "
            f"{node['over_share_refusals']}, handed off {node['handed_off']}, "
            f"{node['cpu_ms_per_handshake']} ms CPU/handshake, {node['rss_mib']} MiB"
        )
    lines.append(
        f"node CPU per agent back: {figures.get('node_cpu_ms_per_agent')} ms "
        f"(swarm redial: {figures.get('redial')})"
    )
    lines.append(f"peaks: {figures.get('peaks')}, swarm attempts: {figures.get('restart_tally')}")
    lines.append(f"HAProxy checks in the restart: {figures.get('haproxy_checks_in_restart')}")
    if "failed" in figures:
        lines.append(
            f"FAILED: {figures['failed']} (most online at once: "
            f"{figures.get('first_connect_most_online')}; HAProxy checks: "
            f"{figures.get('haproxy_checks_in_first_connect')})"
        )
    return "\n".join(lines)
