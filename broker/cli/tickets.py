"""`secondline ticket ...`: tickets through the REST API.

A ticket id is typed as ``T-1042`` or ``1042``. ``create`` prints the new id alone (or the
ticket with ``--json``), so scripts can capture it; every other command prints the ticket's
state after the change, or JSON with ``--json``.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from urllib.parse import quote, urlencode

from broker.cli.client import CliError
from broker.cli.runtime import Runtime, add_json
from broker.rules import InvalidName, format_ticket_id, parse_ticket_ref
from broker.rules.outside_text import escape_controls

LIST_COLUMNS = ["id", "level", "status", "assignee", "customer", "agents", "title"]
STATE_FIELDS = ["id", "title", "customer", "level", "status", "assignee", "agents"]
_STATUSES = ["new", "open", "pending", "resolved", "closed"]
_LEVELS = [1, 2, 3]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ticket = sub.add_parser("ticket", help="tickets").add_subparsers(dest="sub", required=True)

    p = ticket.add_parser("create", help="create a ticket; prints its id")
    p.add_argument("--title", required=True)
    p.add_argument("--customer", required=True)
    p.add_argument("--description", default="")
    p.add_argument("--requester", default="", help="who asked for help")
    p.add_argument("--agent", action="append", default=[], metavar="AGENT", help="link an agent")
    p.add_argument("--level", type=int, choices=_LEVELS, default=1)
    add_json(p)
    p.set_defaults(handler=ticket_create)

    p = ticket.add_parser("list", help="list tickets, newest first")
    p.add_argument("--level", type=int, choices=_LEVELS)
    p.add_argument("--status", choices=_STATUSES)
    p.add_argument("--assignee", metavar="USER")
    p.add_argument("--customer", metavar="C")
    p.add_argument("--limit", type=int, default=200)
    add_json(p)
    p.set_defaults(handler=ticket_list)

    p = ticket.add_parser("show", help="show a ticket with notes, history, agents and sessions")
    p.add_argument("id")
    add_json(p)
    p.set_defaults(handler=ticket_show)

    for name, helptext in (
        ("escalate", "escalate to a higher level (the reason goes into the history)"),
        ("hand-back", "hand back to a lower level (the reason goes into the history)"),
    ):
        p = ticket.add_parser(name, help=helptext)
        p.add_argument("id")
        p.add_argument("--to", type=int, required=True, choices=_LEVELS, metavar="LEVEL")
        p.add_argument("--reason", required=True)
        add_json(p)
        p.set_defaults(handler=ticket_level_change, route=name)

    p = ticket.add_parser("assign", help="assign a ticket to a staff member")
    p.add_argument("id")
    p.add_argument("user")
    add_json(p)
    p.set_defaults(handler=ticket_assign)

    p = ticket.add_parser("take", help="assign a ticket to yourself")
    p.add_argument("id")
    add_json(p)
    p.set_defaults(handler=ticket_simple, route="take")

    p = ticket.add_parser("link", help="link an agent (name or id) of the ticket's customer")
    p.add_argument("id")
    p.add_argument("agent")
    add_json(p)
    p.set_defaults(handler=ticket_link)

    p = ticket.add_parser("note", help="add a note (internal unless --public)")
    p.add_argument("id")
    p.add_argument("text")
    p.add_argument("--public", action="store_true", help="the customer may see this note")
    add_json(p)
    p.set_defaults(handler=ticket_note)

    p = ticket.add_parser("resolve", help="resolve a ticket with its solution")
    p.add_argument("id")
    p.add_argument("--solution", required=True)
    add_json(p)
    p.set_defaults(handler=ticket_resolve)

    for name, route, helptext in (
        ("open", "open", "start work on a new ticket"),
        ("pending", "pending", "wait for the customer or a third party"),
        ("resume", "resume", "resume a pending ticket"),
        ("close", "close", "close a resolved ticket"),
        ("reopen", "reopen", "reopen a resolved or closed ticket"),
    ):
        p = ticket.add_parser(name, help=helptext)
        p.add_argument("id")
        add_json(p)
        p.set_defaults(handler=ticket_simple, route=route)

    p = ticket.add_parser(
        "session-check", help="may you open a shell on the ticket's agent? if not, why"
    )
    p.add_argument("id")
    p.add_argument("--agent", default=None, help="needed when several agents are linked")
    add_json(p)
    p.set_defaults(handler=ticket_session_check)


def ticket_path(text: str) -> str:
    """``/tickets/T-1042`` for ``T-1042`` or ``1042``, or a CliError that says why not."""
    try:
        return f"/tickets/{format_ticket_id(parse_ticket_ref(text))}"
    except InvalidName as exc:
        raise CliError(exc.message) from None


def _safe(text: object) -> str:
    """Outside text for the terminal: control characters escaped, tabs as spaces."""
    return escape_controls(str(text).replace("\t", "    "))


def _show_state(rt: Runtime, data: object) -> int:
    rt.show_one(data, None if rt.json else STATE_FIELDS)
    return 0


def ticket_create(rt: Runtime) -> int:
    a = rt.args
    body = {
        "title": a.title,
        "customer": a.customer,
        "description": a.description,
        "requester": a.requester,
        "level": a.level,
        "agents": a.agent,
    }
    data = rt.api.request("POST", "/tickets", body)
    if rt.json:
        rt.show_one(data)
    elif isinstance(data, dict):
        print(data["id"])
    return 0


def ticket_list(rt: Runtime) -> int:
    a = rt.args
    query: dict[str, object] = {"limit": max(1, min(a.limit, 1000))}
    for key in ("level", "status", "assignee", "customer"):
        value = getattr(a, key)
        if value is not None:
            query[key] = value
    rt.show_list(rt.api.request("GET", "/tickets?" + urlencode(query)), LIST_COLUMNS)
    return 0


def _lines(text: object, indent: str = "    ") -> list[str]:
    return [indent + _safe(line) for line in str(text or "").splitlines()] or [indent + "-"]


def print_ticket(data: Mapping[str, object]) -> None:
    """A ticket for people: state, then description, history, notes, agents, sessions."""
    print(f"{_safe(data.get('id'))}  {_safe(data.get('title'))}")
    for key in ("customer", "requester", "level", "status", "assignee", "created_by"):
        value = data.get(key)
        print(f"  {key:<11}{_safe(value if value not in (None, '') else '-')}")
    print("description:")
    print("\n".join(_lines(data.get("description"))))
    agents = _records(data.get("linked_agents"))
    print("agents:")
    for agent in agents:
        state = (
            "revoked" if agent.get("revoked") else "online" if agent.get("online") else "offline"
        )
        print(f"    {_safe(agent.get('name'))} ({_safe(agent.get('id'))}, {state})")
    history = _records(data.get("history"))
    print("history:")
    for h in history:
        verb = "escalated" if h.get("kind") == "escalate" else "handed back"
        print(
            f"    {_safe(h.get('at'))}  {_safe(h.get('actor'))} {verb} "
            f"{_safe(h.get('from_level'))} -> {_safe(h.get('to_level'))}: {_safe(h.get('reason'))}"
        )
    notes = _records(data.get("notes"))
    print("notes:")
    for n in notes:
        kind = "internal" if n.get("internal") else "public"
        attached = n.get("attachments")
        files = ", ".join(_safe(f) for f in attached) if isinstance(attached, list) else ""
        print(f"  {_safe(n.get('created_at'))}  {_safe(n.get('author'))} ({kind})")
        print("\n".join(_lines(n.get("text"))))
        if files:
            print(f"    attachments: {files}")
    for a in _records(data.get("attachments")):
        print(f"  attachment {_safe(a.get('name'))} ({_safe(a.get('size'))} bytes)")
    sessions = _records(data.get("sessions"))
    print("sessions:")
    for s in sessions:
        print(
            f"    {_safe(s.get('id'))}  {_safe(s.get('owner'))}  {_safe(s.get('state'))}  "
            f"{_safe(s.get('started_at'))} - {_safe(s.get('ended_at'))}"
        )
    if data.get("solution"):
        print("solution:")
        print("\n".join(_lines(data.get("solution"))))


def _records(value: object) -> Sequence[Mapping[str, object]]:
    if not isinstance(value, list):
        return []
    return [v for v in value if isinstance(v, dict)]


def ticket_show(rt: Runtime) -> int:
    data = rt.api.request("GET", ticket_path(rt.args.id))
    if rt.json:
        rt.show_one(data)
    elif isinstance(data, dict):
        print_ticket(data)
    else:
        raise CliError("the broker sent an unexpected answer")
    return 0


def ticket_level_change(rt: Runtime) -> int:
    body = {"to": rt.args.to, "reason": rt.args.reason}
    path = f"{ticket_path(rt.args.id)}/{rt.args.route}"
    return _show_state(rt, rt.api.request("POST", path, body))


def ticket_assign(rt: Runtime) -> int:
    path = f"{ticket_path(rt.args.id)}/assign"
    return _show_state(rt, rt.api.request("POST", path, {"user": rt.args.user}))


def ticket_link(rt: Runtime) -> int:
    path = f"{ticket_path(rt.args.id)}/link"
    return _show_state(rt, rt.api.request("POST", path, {"agent": rt.args.agent}))


def ticket_note(rt: Runtime) -> int:
    body = {"text": rt.args.text, "internal": not rt.args.public}
    data = rt.api.request("POST", f"{ticket_path(rt.args.id)}/notes", body)
    if rt.json:
        rt.show_one(data)
    else:
        print(f"Note added to {format_ticket_id(parse_ticket_ref(rt.args.id))}.")
    return 0


def ticket_resolve(rt: Runtime) -> int:
    path = f"{ticket_path(rt.args.id)}/resolve"
    return _show_state(rt, rt.api.request("POST", path, {"solution": rt.args.solution}))


def ticket_simple(rt: Runtime) -> int:
    return _show_state(rt, rt.api.request("POST", f"{ticket_path(rt.args.id)}/{rt.args.route}"))


def ticket_session_check(rt: Runtime) -> int:
    path = f"{ticket_path(rt.args.id)}/session-check"
    if rt.args.agent:
        path += "?agent=" + quote(rt.args.agent, safe="")
    data = rt.api.request("GET", path)
    if not isinstance(data, dict):
        raise CliError("the broker sent an unexpected answer")
    if rt.json:
        rt.show_one(data)
    elif data.get("allowed"):
        print(f"allowed: you may open a shell on {_safe(data.get('agent_name'))}")
    else:
        print(f"refused ({_safe(data.get('code'))}): {_safe(data.get('reason'))}")
    return 0 if data.get("allowed") else 1
