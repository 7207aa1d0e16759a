"""Commands for staff accounts, sign-in, customers and the audit log."""

from __future__ import annotations

import argparse
import base64
import binascii
import getpass
import hashlib
import re

from broker.cli.client import ApiClient, CliError, Connection, resolve_connection, store_credentials
from broker.cli.runtime import Runtime, add_json, read_file

_TTL = re.compile(r"^(\d{1,6})([smhd])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_ttl(text: str) -> int:
    match = _TTL.fullmatch(text)
    if not match:
        raise CliError(f"--ttl {text!r} is not a duration; write e.g. 30m, 8h or 7d")
    return int(match.group(1)) * _UNIT[match.group(2)]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    user = sub.add_parser("user", help="staff accounts").add_subparsers(dest="sub", required=True)
    p = user.add_parser("add", help="add a staff account")
    p.add_argument("name")
    p.add_argument("--role", required=True, choices=["level1", "level2", "level3", "admin"])
    p.add_argument("--display-name", default="")
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    p.add_argument("--ssh-key", action="append", default=[], metavar="FILE")
    p.add_argument("--customer", action="append", default=[], metavar="C")
    add_json(p)
    p.set_defaults(handler=user_add)
    p = user.add_parser("list", help="list staff accounts")
    add_json(p)
    p.set_defaults(handler=user_list)
    p = user.add_parser("show", help="show one staff account")
    p.add_argument("name")
    add_json(p)
    p.set_defaults(handler=user_show)
    p = user.add_parser("disable", help="disable an account; its tokens stop working at once")
    p.add_argument("name")
    add_json(p)
    p.set_defaults(handler=user_disable)
    key = user.add_parser("key", help="SSH keys").add_subparsers(dest="keysub", required=True)
    p = key.add_parser("add", help="register an SSH public key")
    p.add_argument("name")
    p.add_argument("file", help="the public key file, e.g. id_ed25519.pub")
    add_json(p)
    p.set_defaults(handler=user_key_add)
    p = key.add_parser("list", help="list a staff member's SSH keys")
    p.add_argument("name")
    add_json(p)
    p.set_defaults(handler=user_key_list)
    p = key.add_parser("remove", help="remove an SSH key; it opens no new shell from then on")
    p.add_argument("name")
    p.add_argument("key", metavar="FINGERPRINT|FILE", help="SHA256:… (see `key list`) or the .pub")
    add_json(p)
    p.set_defaults(handler=user_key_remove)
    p = user.add_parser("token", help="mint an API token for a staff member (printed once)")
    p.add_argument("name")
    p.add_argument("--ttl", default="8h", help="lifetime, e.g. 30m, 8h, 30d (default 8h)")
    p.add_argument(
        "--scope", action="append", default=None, choices=["read", "write", "session", "admin"]
    )
    p.add_argument("--label", default="")
    add_json(p)
    p.set_defaults(handler=user_token)

    p = sub.add_parser("login", help="sign in and keep an API token in your config dir")
    p.add_argument("user")
    p.add_argument("--password-stdin", action="store_true")
    p.add_argument("--totp", default=None, help="the 6-digit code of your authenticator app")
    p.add_argument("--ttl", default="8h")
    p.set_defaults(handler=login)

    cust = sub.add_parser("customer", help="customers").add_subparsers(dest="sub", required=True)
    p = cust.add_parser("add", help="add a customer")
    p.add_argument("name")
    p.add_argument("--display-name", default="")
    p.add_argument(
        "--language", choices=["en", "de"], default="en", help="language of its session notes"
    )
    add_json(p)
    p.set_defaults(handler=customer_add)
    p = cust.add_parser("set", help="change a customer's settings")
    p.add_argument("name")
    p.add_argument(
        "--language", choices=["en", "de"], required=True, help="language of its session notes"
    )
    add_json(p)
    p.set_defaults(handler=customer_set)
    p = cust.add_parser("list", help="list customers")
    add_json(p)
    p.set_defaults(handler=customer_list)
    p = cust.add_parser("show", help="show a customer")
    p.add_argument("name")
    add_json(p)
    p.set_defaults(handler=customer_show)

    audit = sub.add_parser("audit", help="the audit log").add_subparsers(dest="sub", required=True)
    p = audit.add_parser("list", help="newest events first")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--action", default=None)
    add_json(p)
    p.set_defaults(handler=audit_list)
    p = audit.add_parser("verify", help="check the chain; names the first bad record")
    add_json(p)
    p.set_defaults(handler=audit_verify)


USER_COLUMNS = ["name", "role", "source", "disabled", "customers", "keys", "display_name"]


def _user_row(u: object) -> object:
    if isinstance(u, dict):
        source = str(u.get("source") or "local")
        if u.get("source_name"):
            source += f":{u['source_name']}"
        return {**u, "keys": len(u.get("ssh_keys") or []), "source": source}
    return u


def user_add(rt: Runtime) -> int:
    a = rt.args
    body: dict[str, object] = {
        "name": a.name,
        "role": a.role,
        "display_name": a.display_name,
        "ssh_keys": [read_file(f, "SSH key file") for f in a.ssh_key],
        "customers": a.customer,
    }
    if a.password_stdin:
        body["password"] = rt.read_stdin_secret()
    rt.show_one(
        rt.api.request("POST", "/users", body), None if rt.json else ["name", "role", "customers"]
    )
    return 0


def user_list(rt: Runtime) -> int:
    data = rt.api.request("GET", "/users")
    if rt.json:
        rt.show_list(data, USER_COLUMNS)
    else:
        rt.show_list([_user_row(u) for u in data] if isinstance(data, list) else data, USER_COLUMNS)
    return 0


def user_show(rt: Runtime) -> int:
    data = rt.api.request("GET", f"/users/{_seg(rt.args.name)}")
    if rt.json or not isinstance(data, dict):
        rt.show_one(data)
        return 0
    rt.show_one({**data, "ssh_keys": [_key_text(k) for k in data.get("ssh_keys") or []]})
    return 0


def _key_text(key: object) -> str:
    if not isinstance(key, dict):
        return str(key)
    comment = key.get("comment")
    return f"{key.get('fingerprint')} ({comment})" if comment else str(key.get("fingerprint"))


def user_disable(rt: Runtime) -> int:
    rt.show_one(
        rt.api.request("POST", f"/users/{_seg(rt.args.name)}/disable"),
        None if rt.json else ["name", "disabled"],
    )
    return 0


KEY_COLUMNS = ["fingerprint", "comment", "created_at"]


def user_key_add(rt: Runtime) -> int:
    text = read_file(rt.args.file, "SSH key file")
    body = {"public_key": text}
    data = rt.api.request("POST", f"/users/{_seg(rt.args.name)}/keys", body)
    if rt.json:
        rt.show_one(data)
        return 0
    added = public_key_fingerprint(text)
    print(f"Added SSH key {added or rt.args.file} to {rt.args.name}; {_key_count(data)}.")
    return 0


def user_key_list(rt: Runtime) -> int:
    data = rt.api.request("GET", f"/users/{_seg(rt.args.name)}")
    keys = data.get("ssh_keys") if isinstance(data, dict) else None
    rt.show_list(keys if isinstance(keys, list) else data, KEY_COLUMNS)
    return 0


def user_key_remove(rt: Runtime) -> int:
    given = rt.args.key
    fingerprint = given if given.startswith("SHA256:") else None
    if fingerprint is None:
        fingerprint = public_key_fingerprint(read_file(given, "SSH key file"))
        if fingerprint is None:
            raise CliError(f"{given} is neither a fingerprint (SHA256:…) nor an SSH public key")
    path = f"/users/{_seg(rt.args.name)}/keys?fingerprint={_seg(fingerprint)}"
    data = rt.api.request("DELETE", path)
    if rt.json:
        rt.show_one(data)
        return 0
    print(f"Removed SSH key {fingerprint} of {rt.args.name}; {_key_count(data)}.")
    return 0


def _key_count(user: object) -> str:
    keys = user.get("ssh_keys") if isinstance(user, dict) else None
    count = len(keys) if isinstance(keys, list) else 0
    return f"{count} key{'' if count == 1 else 's'} registered now"


def public_key_fingerprint(text: str) -> str | None:
    """OpenSSH's SHA256 fingerprint of a public key line (as `ssh-keygen -l` prints it),
    or None when ``text`` is not one; the broker checks the key itself."""
    fields = text.strip().split()
    if len(fields) < 2:
        return None
    try:
        blob = base64.b64decode(fields[1], validate=True)
    except (ValueError, binascii.Error):
        return None
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


def user_token(rt: Runtime) -> int:
    body = {"ttl_seconds": parse_ttl(rt.args.ttl), "scopes": rt.args.scope, "label": rt.args.label}
    data = rt.api.request("POST", f"/users/{_seg(rt.args.name)}/tokens", body)
    if rt.json:
        rt.show_one(data)
    elif isinstance(data, dict):
        print(data["token"])
    return 0


def login(rt: Runtime) -> int:
    a = rt.args
    base = resolve_connection(
        url=a.url, token=None, ca_cert=a.ca_cert, data_dir=a.data_dir, env=rt.env
    )
    password = rt.read_stdin_secret() if a.password_stdin else getpass.getpass("Password: ")
    client = ApiClient(Connection(base.url, None, base.ca_cert))
    body = {"user": a.user, "password": password, "totp": a.totp, "ttl_seconds": parse_ttl(a.ttl)}
    data = client.request("POST", "/auth/login", body, auth=False)
    if not isinstance(data, dict) or "token" not in data:
        raise CliError("the broker sent an unexpected answer")
    path = store_credentials(rt.env, base.url, str(data["token"]), base.ca_cert)
    print(f"Signed in as {a.user}; token kept in {path} until {data.get('expires_at')}.")
    return 0


def customer_add(rt: Runtime) -> int:
    body = {"name": rt.args.name, "display_name": rt.args.display_name}
    if rt.args.language != "en":
        body["language"] = rt.args.language
    rt.show_one(rt.api.request("POST", "/customers", body))
    return 0


def customer_set(rt: Runtime) -> int:
    body = {"language": rt.args.language}
    rt.show_one(rt.api.request("PATCH", f"/customers/{_seg(rt.args.name)}", body))
    return 0


def customer_list(rt: Runtime) -> int:
    rt.show_list(
        rt.api.request("GET", "/customers"), ["name", "display_name", "language", "created_at"]
    )
    return 0


def customer_show(rt: Runtime) -> int:
    rt.show_one(rt.api.request("GET", f"/customers/{_seg(rt.args.name)}"))
    return 0


def audit_list(rt: Runtime) -> int:
    limit = max(1, min(rt.args.limit, 1000))
    path = f"/audit?limit={limit}"
    if rt.args.action:
        path += f"&action={_seg(rt.args.action)}"
    rt.show_list(
        rt.api.request("GET", path), ["seq", "at", "actor", "action", "target", "outcome", "source"]
    )
    return 0


def audit_verify(rt: Runtime) -> int:
    data = rt.api.request("GET", "/audit/verify")
    if not isinstance(data, dict):
        raise CliError("the broker sent an unexpected answer")
    if rt.json:
        rt.show_one(data)
    else:
        print(data["message"])
    return 0 if data.get("ok") else 1


def _seg(text: str) -> str:
    """A value placed in a URL path: only our strict name characters pass unchanged."""
    from urllib.parse import quote

    return quote(text, safe="")
