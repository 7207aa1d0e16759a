"""`secondline connector ...`: the ticket systems the broker mirrors, through the REST API.

The credential (an API token, or a webhook's shared secret) is read from a file
(``--credential-file``, ``-`` for standard input), never taken on the command line, and
never printed.
"""

from __future__ import annotations

import argparse
import sys
from urllib.parse import quote

from broker.cli.client import CliError
from broker.cli.runtime import Runtime, add_json, read_file

LIST_COLUMNS = ["name", "kind", "prefix", "customer", "healthy", "health", "url", "levels"]
KINDS = ["rt", "zammad", "znuny", "webhook"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    connector = sub.add_parser("connector", help="ticket-system connectors").add_subparsers(
        dest="sub", required=True
    )

    p = connector.add_parser("add", help="add a ticket system (one per customer, or global)")
    p.add_argument("name", help="e.g. rt-acme")
    p.add_argument("--kind", required=True, choices=KINDS)
    # Not "url": that is the global option naming the broker.
    p.add_argument(
        "--url",
        dest="system_url",
        required=True,
        help="the ticket system's base URL, e.g. https://rt.example.com",
    )
    p.add_argument(
        "--credential-file",
        required=True,
        metavar="FILE",
        help="file holding the API token (webhook: the shared secret)",
    )
    p.add_argument("--customer", help="the customer whose tickets these are (default: all)")
    p.add_argument("--prefix", help="ticket-number prefix staff type, e.g. RT for RT-1234")
    p.add_argument(
        "--levels", metavar="MAP", help='places of the levels, e.g. "1=Support,2=L2,3=Dev"'
    )
    add_json(p)
    p.set_defaults(handler=connector_add)

    p = connector.add_parser("list", help="list the connectors with their health")
    add_json(p)
    p.set_defaults(handler=connector_list)

    p = connector.add_parser("test", help="read the system; say exactly what is missing")
    p.add_argument("name")
    add_json(p)
    p.set_defaults(handler=connector_test)

    p = connector.add_parser("remove", help="remove a connector (its tickets stay)")
    p.add_argument("name")
    p.set_defaults(handler=connector_remove)


def _credential(path: str) -> str:
    if path == "-":
        return sys.stdin.read(65_536)
    return read_file(path, "the credential file")


def connector_add(rt: Runtime) -> int:
    a = rt.args
    body: dict[str, object] = {
        "name": a.name,
        "kind": a.kind,
        "url": a.system_url,
        "credential": _credential(a.credential_file),
    }
    for key in ("customer", "prefix", "levels"):
        if getattr(a, key) is not None:
            body[key] = getattr(a, key)
    data = rt.api.request("POST", "/connectors", body)
    rt.show_one(data)
    return 0


def connector_list(rt: Runtime) -> int:
    rt.show_list(rt.api.request("GET", "/connectors"), LIST_COLUMNS)
    return 0


def connector_test(rt: Runtime) -> int:
    data = rt.api.request("POST", f"/connectors/{quote(rt.args.name, safe='')}/test")
    if not isinstance(data, dict):
        raise CliError("the broker sent an unexpected answer")
    if rt.json:
        rt.show_one(data)
    else:
        print(f"connector {data['name']}: levels {data['levels']}")
        for item in data.get("checks", []):
            if isinstance(item, dict):
                print(f"  {'ok     ' if item.get('ok') else 'MISSING'}  {item.get('check')}")
    return 0 if data.get("ok") else 1


def connector_remove(rt: Runtime) -> int:
    rt.api.request("DELETE", f"/connectors/{quote(rt.args.name, safe='')}")
    print(f"connector {rt.args.name} removed; its mirrored tickets stay")
    return 0
