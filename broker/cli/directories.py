"""`secondline directory ...`: company directories (LDAP, Active Directory) staff accounts come
from, through the REST API.

The service account's password is read from a file (``--bind-password-file``, ``-`` for
standard input), never taken on the command line, and never printed.
"""

from __future__ import annotations

import argparse
import sys
from urllib.parse import quote

from broker.cli.client import CliError
from broker.cli.runtime import Runtime, add_json, read_file

LIST_COLUMNS = ["name", "url", "base_dn", "roles", "healthy", "health", "synced_at"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    directory = sub.add_parser("directory", help="company directories (LDAP, AD)").add_subparsers(
        dest="sub", required=True
    )

    p = directory.add_parser("add", help="add a directory staff accounts come from")
    p.add_argument("name", help="e.g. corp")
    # Not "url": that is the global option naming the broker.
    p.add_argument(
        "--url", dest="directory_url", required=True, help="ldaps://HOST[:PORT] (or ldap://)"
    )
    p.add_argument("--bind-dn", required=True, help="the service account Secondline reads as")
    p.add_argument(
        "--bind-password-file", required=True, metavar="FILE", help="its password ('-': stdin)"
    )
    p.add_argument("--base-dn", required=True, help="where people and groups are")
    p.add_argument(
        "--roles",
        required=True,
        metavar="MAP",
        help='groups to roles, e.g. "cn=helpdesk-l1=level1,cn=helpdesk-l2=level2"',
    )
    p.add_argument(
        "--customer-groups", metavar="MAP", help='groups to customers, e.g. "cn=cust-acme=acme"'
    )
    p.add_argument("--customer-attribute", help="or: an attribute holding customer names")
    p.add_argument("--user-attribute", default="uid", help="uid (default); AD: sAMAccountName")
    p.add_argument("--user-object-class", default="person")
    p.add_argument(
        "--ssh-key-attribute", default="sshPublicKey", help="'' to register keys in Secondline"
    )
    p.add_argument("--sync-minutes", type=float, default=5.0, help="how often to sync (5)")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds per directory call (5)")
    p.add_argument(
        "--on-outage",
        choices=["keep", "end"],
        default="keep",
        help="while the directory is down: keep live sessions (default) or end them",
    )
    p.add_argument("--ca-file", help="CA certificate (PEM) of ldaps:// on the broker host")
    add_json(p)
    p.set_defaults(handler=directory_add)

    p = directory.add_parser("list", help="list the directories with their health")
    add_json(p)
    p.set_defaults(handler=directory_list)

    p = directory.add_parser("test", help="bind as the service account, count the people")
    p.add_argument("name")
    add_json(p)
    p.set_defaults(handler=directory_test)

    p = directory.add_parser("sync", help="sync now (otherwise every --sync-minutes)")
    p.add_argument("name")
    add_json(p)
    p.set_defaults(handler=directory_sync)

    p = directory.add_parser("remove", help="remove a directory (its accounts lose access)")
    p.add_argument("name")
    p.set_defaults(handler=directory_remove)


def _password(path: str) -> str:
    if path == "-":
        return sys.stdin.read(4096)
    return read_file(path, "the bind password file")


def directory_add(rt: Runtime) -> int:
    a = rt.args
    body: dict[str, object] = {
        "name": a.name,
        "url": a.directory_url,
        "bind_dn": a.bind_dn,
        "bind_password": _password(a.bind_password_file),
        "base_dn": a.base_dn,
        "roles": a.roles,
        "user_attribute": a.user_attribute,
        "user_object_class": a.user_object_class,
        "ssh_key_attribute": a.ssh_key_attribute or None,
        "sync_seconds": round(a.sync_minutes * 60),
        "timeout_seconds": a.timeout,
        "on_outage": a.on_outage,
    }
    for key in ("customer_groups", "customer_attribute", "ca_file"):
        if getattr(a, key) is not None:
            body[key] = getattr(a, key)
    rt.show_one(rt.api.request("POST", "/directories", body))
    return 0


def directory_list(rt: Runtime) -> int:
    rt.show_list(rt.api.request("GET", "/directories"), LIST_COLUMNS)
    return 0


def directory_test(rt: Runtime) -> int:
    data = rt.api.request("POST", f"/directories/{quote(rt.args.name, safe='')}/test")
    if not isinstance(data, dict):
        raise CliError("the broker sent an unexpected answer")
    if rt.json:
        rt.show_one(data)
    else:
        print(
            f"directory {data['name']}: {'ok' if data.get('ok') else 'FAILED'}: {data['message']}"
        )
    return 0 if data.get("ok") else 1


def directory_sync(rt: Runtime) -> int:
    data = rt.api.request("POST", f"/directories/{quote(rt.args.name, safe='')}/sync")
    rt.show_one(data, ["name", "healthy", "health", "synced_at"])
    return 0 if isinstance(data, dict) and data.get("healthy") else 1


def directory_remove(rt: Runtime) -> int:
    rt.api.request("DELETE", f"/directories/{quote(rt.args.name, safe='')}")
    print(f"directory {rt.args.name} removed; its accounts stay, without access")
    return 0
