"""`secondline cluster status`: the nodes of the cluster, their agents and sessions;
`secondline node drain NAME`: empty a node before it is stopped (through the API, as an
admin: any node passes it on to NAME).

Run on any node's host (it reads that node's secondline.toml): every running node answers
on NATS with what it holds; the database adds the nodes it still names (agents marked
online, sessions live) that did not answer, which is how a dead or cut-off node shows.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Final
from urllib.parse import quote

from broker.cli.client import CliError
from broker.cli.output import print_json, print_table
from broker.cli.runtime import Runtime, add_json
from broker.config import BrokerConfig, load_config
from broker.errors import BrokerError

#: How long the command listens for the nodes' answers (they answer at once).
GATHER_S: Final = 1.0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("cluster", help="the cluster's nodes (on a broker host)")
    cluster_sub = p.add_subparsers(dest="cluster_command", metavar="COMMAND", required=True)
    status = cluster_sub.add_parser(
        "status", help="nodes, the agents and sessions each holds, and nodes that do not answer"
    )
    status.add_argument("--data-dir", dest="command_data_dir", metavar="DIR", default=None)
    add_json(status)
    status.set_defaults(handler=run_status)

    node = sub.add_parser("node", help="one node of the cluster").add_subparsers(
        dest="node_command", metavar="COMMAND", required=True
    )
    drain = node.add_parser(
        "drain",
        help="no new sessions or agents on NAME; its agents move to the other nodes, its "
        "live sessions end at their own pace (then stop it)",
    )
    drain.add_argument("name", metavar="NAME")
    add_json(drain)
    drain.set_defaults(handler=run_drain)


def run_drain(rt: Runtime) -> int:
    name = rt.args.name
    data = rt.api.request("POST", f"/nodes/{quote(name, safe='')}/drain")
    if rt.json:
        rt.show_one(data)
    elif isinstance(data, dict) and data.get("started"):
        print(
            f"Node {name} is draining: it takes no new sessions or agents, hands its agents "
            "to the other nodes and lets its live sessions end. Stop it once "
            "`secondline cluster status` shows it holds nothing."
        )
    else:
        print(f"Node {name} was draining already.")
    return 0


def _config(rt: Runtime) -> BrokerConfig:
    value = (
        getattr(rt.args, "command_data_dir", None)
        or rt.args.data_dir
        or rt.env.get("SECONDLINE_DATA_DIR")
    )
    if not value:
        raise CliError("give a node's data dir: secondline --data-dir DIR cluster status")
    try:
        config = load_config(Path(value), rt.env)
    except BrokerError as exc:
        raise CliError(exc.message) from None
    if not config.clustered:
        raise CliError(
            "this broker is a single node ([cluster] nats_url is not set in secondline.toml); "
            "`secondline agent list` and `secondline session list` show what it holds"
        )
    return config


def run_status(rt: Runtime) -> int:
    config = _config(rt)
    rows = asyncio.run(_status(config))
    if rt.json:
        print_json(rows)
    else:
        print_table(rows, ["node", "state", "agents", "sessions", "url"])
        answering = [r for r in rows if r["state"] == "up"]
        print(
            f"{len(answering)} node(s) up, "
            f"{sum(int(str(r['agents'])) for r in answering)} agents, "
            f"{sum(int(str(r['sessions'])) for r in answering)} sessions live"
        )
    return 0


async def _status(config: BrokerConfig) -> list[dict[str, object]]:
    from broker.cluster.bus import ClusterError
    from broker.cluster.messages import Announcement, BadMessage, Subjects
    from broker.cluster.nats_bus import NatsBus

    try:
        bus = await NatsBus.connect(config.cluster_nats_url, name="status")
    except ClusterError as exc:
        raise CliError(exc.message) from None
    try:
        answers = await bus.gather(Subjects(config.cluster_name).status, b"{}", GATHER_S)
    finally:
        await bus.close()
    rows: dict[str, dict[str, object]] = {}
    for data in answers:
        try:
            a = Announcement.parse(data)
        except BadMessage:
            continue
        rows[a.node] = {
            "node": a.node,
            "state": "up",
            "agents": len(a.agents),
            "sessions": len(a.sessions),
            "url": a.url,
        }
    for node, agents, sessions in await _recorded(config):
        if node not in rows:
            # Named in the database, silent on NATS: dead, cut off, or not yet expired.
            rows[node] = {
                "node": node,
                "state": "silent",
                "agents": agents,
                "sessions": sessions,
                "url": "",
            }
    return [rows[name] for name in sorted(rows)]


async def _recorded(config: BrokerConfig) -> list[tuple[str, int, int]]:
    """(node, agents marked online, sessions live) as the database records them."""
    from sqlalchemy import func, select

    from broker.db.engine import create_engine
    from broker.db.models_agents import Agent
    from broker.db.models_sessions import RemoteSession
    from broker.sessions.store import LIVE_STATES

    engine = create_engine(config.db_url, schema=config.database_schema or None)
    try:
        async with engine.connect() as conn:
            agents = dict(
                (
                    await conn.execute(
                        select(Agent.node, func.count())
                        .where(Agent.online.is_(True), Agent.node.is_not(None))
                        .group_by(Agent.node)
                    )
                ).all()
            )
            sessions = dict(
                (
                    await conn.execute(
                        select(RemoteSession.node, func.count())
                        .where(RemoteSession.state.in_(LIVE_STATES))
                        .group_by(RemoteSession.node)
                    )
                ).all()
            )
    except OSError as exc:
        raise CliError(f"cannot reach the database ({exc.strerror}); is it running?") from None
    finally:
        await engine.dispose()
    names = sorted({str(n) for n in (*agents, *sessions) if n})
    return [(n, int(agents.get(n, 0)), int(sessions.get(n, 0))) for n in names]
