"""Commands for enrollment tokens and agents:

secondline token create [--customer C] [--label K=V]... [--consent attended|unattended]
                        [--ttl 1h] [--uses 1] [--install-command [--arch A]] [--json]
secondline token list [--json] | revoke ID
secondline agent list [--customer C] [--status S] [--json] | show AGENT [--json] | revoke AGENT
secondline agent package [--arch A] [--json]
secondline agent publish FILE [--data-dir DIR]    (on the broker host: signs a release)
"""

from __future__ import annotations

import argparse
from urllib.parse import quote, urlencode

from broker.agents.install_command import InstallValues, install_command
from broker.cli import local
from broker.cli.client import CliError
from broker.cli.runtime import Runtime, add_json
from broker.cli.staff import parse_ttl
from broker.errors import InputError

TOKEN_COLUMNS = ["id", "customer", "status", "consent", "uses_left", "expires_at", "labels"]
AGENT_COLUMNS = ["id", "name", "customer", "status", "last_seen", "consent", "os", "labels"]
AGENT_FIELDS = [
    "id",
    "name",
    "customer",
    "status",
    "last_seen",
    "connected_at",
    "consent",
    "labels",
    "key_fingerprint",
    "hostname",
    "os",
    "os_version",
    "kernel",
    "arch",
    "users",
    "facts_at",
    "enrolled_at",
    "enrolled_with",
    "revoked_at",
    "revoked_by",
]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    token = sub.add_parser("token", help="agent enrollment tokens").add_subparsers(
        dest="sub", required=True
    )
    p = token.add_parser("create", help="mint an enrollment token; prints the token alone")
    p.add_argument("--customer", default=None, help="the customer the agent will belong to")
    p.add_argument(
        "--label", action="append", default=[], metavar="K=V", help="a label for the agent"
    )
    p.add_argument("--consent", choices=["attended", "unattended"], default="attended")
    p.add_argument("--ttl", default="1h", help="lifetime, e.g. 30m, 1h, 7d (default 1h)")
    p.add_argument("--uses", type=int, default=1, help="how many agents may enroll with it")
    p.add_argument(
        "--install-command",
        action="store_true",
        help="print a command that installs the agent package with this token instead",
    )
    p.add_argument("--arch", default="amd64", help="the package's architecture (default amd64)")
    add_json(p)
    p.set_defaults(handler=token_create)
    p = token.add_parser("list", help="list enrollment tokens, newest first")
    add_json(p)
    p.set_defaults(handler=token_list)
    p = token.add_parser("revoke", help="revoke an enrollment token")
    p.add_argument("id")
    add_json(p)
    p.set_defaults(handler=token_revoke)

    agent = sub.add_parser("agent", help="enrolled agents").add_subparsers(
        dest="sub", required=True
    )
    p = agent.add_parser("list", help="list agents: state, last seen, facts, labels")
    p.add_argument("--customer", default=None)
    p.add_argument("--status", choices=["online", "offline", "revoked"], default=None)
    add_json(p)
    p.set_defaults(handler=agent_list)
    p = agent.add_parser("show", help="show one agent (id or name)")
    p.add_argument("agent")
    p.add_argument("--customer", default=None, help="whose agent, when names repeat")
    add_json(p)
    p.set_defaults(handler=agent_show)
    p = agent.add_parser("revoke", help="revoke an agent: its tunnel closes at once")
    p.add_argument("agent")
    p.add_argument("--customer", default=None, help="whose agent, when names repeat")
    add_json(p)
    p.set_defaults(handler=agent_revoke)
    p = agent.add_parser(
        "package", help="the agent package the install command installs: version, SHA-256"
    )
    p.add_argument("--arch", default="amd64", help="the Debian architecture (default amd64)")
    add_json(p)
    p.set_defaults(handler=agent_package)
    # Signing needs the release key, so publishing runs on the broker host, not over the API.
    local.register_agent(agent)


def parse_labels(pairs: list[str]) -> dict[str, str]:
    """``["env=prod", ...]`` as a dict; the broker checks the characters."""
    labels: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CliError(f"--label {pair!r} is not KEY=VALUE; write e.g. --label env=prod")
        labels[key] = value
    return labels


def token_create(rt: Runtime) -> int:
    a = rt.args
    body: dict[str, object] = {
        "labels": parse_labels(a.label),
        "consent": a.consent,
        "ttl_seconds": parse_ttl(a.ttl),
        "uses": a.uses,
    }
    if a.customer is not None:
        body["customer"] = a.customer
    if a.install_command:
        # Checked before a token is spent: without a package there is nothing to install.
        package = rt.api.request("GET", "/agent-package" + _query(arch=a.arch))
    data = rt.api.request("POST", "/enrollment-tokens", body)
    if not isinstance(data, dict):
        raise CliError("the broker sent an unexpected answer")
    if a.install_command:
        data = {**data, "install_command": _install_command(package, str(data["token"]))}
    if rt.json:
        rt.show_one(data)
    else:
        print(data["install_command"] if a.install_command else data["token"])
    return 0


def _install_command(package: object, token: str) -> str:
    if not isinstance(package, dict):
        raise CliError("the broker sent an unexpected answer")
    try:
        return install_command(
            InstallValues(
                broker_url=str(package["broker_url"]),
                package_url=str(package["url"]),
                tls_pin=str(package["tls_pin"]),
                sha256=str(package["sha256"]),
                token=token,
            )
        )
    except KeyError:
        raise CliError("the broker sent an unexpected answer") from None
    except InputError as exc:
        raise CliError(str(exc)) from None


def _label_text(item: dict[str, object]) -> dict[str, object]:
    labels = item.get("labels")
    if isinstance(labels, dict):
        return {**item, "labels": [f"{k}={v}" for k, v in labels.items()]}
    return dict(item)


def token_list(rt: Runtime) -> int:
    data = rt.api.request("GET", "/enrollment-tokens")
    if not rt.json and isinstance(data, list):
        data = [_label_text(t) if isinstance(t, dict) else t for t in data]
    rt.show_list(data, TOKEN_COLUMNS)
    return 0


def token_revoke(rt: Runtime) -> int:
    data = rt.api.request("DELETE", f"/enrollment-tokens/{_seg(rt.args.id)}")
    if rt.json:
        rt.show_one(data)
    else:
        print(f"Revoked enrollment token {rt.args.id}.")
    return 0


def _flat(agent: object) -> object:
    """Facts beside the other fields, for people (--json keeps the API's shape)."""
    if not isinstance(agent, dict):
        return agent
    flat = _label_text(agent)
    facts = agent.get("facts")
    if isinstance(facts, dict):
        flat.update({k: v for k, v in facts.items() if k not in flat})
    return flat


def _query(**params: str | None) -> str:
    given = {k: v for k, v in params.items() if v is not None}
    return "?" + urlencode(given) if given else ""


def agent_list(rt: Runtime) -> int:
    path = "/agents" + _query(customer=rt.args.customer, status=rt.args.status)
    data = rt.api.request("GET", path)
    if not rt.json and isinstance(data, list):
        data = [_flat(a) for a in data]
    rt.show_list(data, AGENT_COLUMNS)
    return 0


def agent_show(rt: Runtime) -> int:
    path = f"/agents/{_seg(rt.args.agent)}" + _query(customer=rt.args.customer)
    data = rt.api.request("GET", path)
    if rt.json:
        rt.show_one(data)
    else:
        rt.show_one(_flat(data), AGENT_FIELDS)
    return 0


def agent_revoke(rt: Runtime) -> int:
    path = f"/agents/{_seg(rt.args.agent)}/revoke" + _query(customer=rt.args.customer)
    data = rt.api.request("POST", path)
    if rt.json:
        rt.show_one(data)
    elif isinstance(data, dict):
        print(f"Revoked agent {data.get('name')} ({data.get('id')}); its tunnel is closed.")
    return 0


def agent_package(rt: Runtime) -> int:
    data = rt.api.request("GET", "/agent-package" + _query(arch=rt.args.arch))
    rt.show_one(data)
    return 0


def _seg(text: str) -> str:
    return quote(text, safe="")
