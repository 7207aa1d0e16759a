"""Knowledge-base commands: search, show, publish, export."""

from __future__ import annotations

import argparse
import re
import sys
from urllib.parse import quote

from broker.cli.client import CliError
from broker.cli.output import print_json
from broker.cli.runtime import Runtime, add_json
from broker.rules.outside_text import escape_controls

_ARTICLE = re.compile(r"(?:KB-)?([1-9][0-9]{0,8})")
# Agent- or user-supplied text must not drive the terminal (see output._cell).


def _article(text: str) -> str:
    match = _ARTICLE.fullmatch(text.strip())
    if match is None:
        raise CliError(f"{text[:20]!r} is not an article id; write KB-12 or 12")
    return match.group(1)


def _plain(text: object) -> str:
    return escape_controls(str(text))


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    kb = sub.add_parser("kb", help="knowledge base").add_subparsers(dest="sub", required=True)
    p = kb.add_parser("search", help="search articles by symptoms")
    p.add_argument("query", help="what the requester describes, in plain words")
    p.add_argument("--os", default=None, help="only articles for this OS, e.g. debian")
    p.add_argument("--tag", default=None, help="only articles with this tag")
    p.add_argument("--limit", type=int, default=10)
    add_json(p)
    p.set_defaults(handler=search)
    p = kb.add_parser("show", help="show an article")
    p.add_argument("id", help="KB-12 or 12")
    add_json(p)
    p.set_defaults(handler=show)
    p = kb.add_parser("publish", help="publish a draft (level 2 or 3)")
    p.add_argument("id")
    add_json(p)
    p.set_defaults(handler=publish)
    p = kb.add_parser("export", help="print an article as Markdown")
    p.add_argument("id")
    p.add_argument("-o", "--output", default=None, help="write to this file instead")
    p.set_defaults(handler=export)


def _highlighted(segments: object) -> str:
    if not isinstance(segments, list):
        return ""
    parts = []
    for seg in segments:
        if isinstance(seg, dict):
            text = _plain(seg.get("text", ""))
            parts.append(f"[{text}]" if seg.get("match") else text)
    return "".join(parts)


def search(rt: Runtime) -> int:
    a = rt.args
    if not 1 <= a.limit <= 50:
        raise CliError("--limit is a number from 1 to 50")
    body: dict[str, object] = {"q": a.query, "limit": a.limit}
    if a.os:
        body["os"] = a.os
    if a.tag:
        body["tag"] = a.tag
    data = rt.api.request("POST", "/kb/search", body)
    if rt.json:
        print_json(data)
        return 0
    results = data.get("results") if isinstance(data, dict) else None
    if not isinstance(results, list):
        raise CliError("the broker sent an unexpected answer")
    if not results:
        print("no article matches; try other words, or fewer", file=sys.stderr)
        return 0
    for r in results:
        if not isinstance(r, dict):
            continue
        helped = r.get("solved_count") or 0
        print(f"{_plain(r.get('ref'))}  {_highlighted(r.get('title_highlight'))}")
        meta = ", ".join(_plain(t) for t in r.get("tags") or [])
        if helped:
            meta = (meta + ", " if meta else "") + f"helped {helped}x"
        if meta:
            print(f"    {meta}")
        snippet = _highlighted(r.get("snippet"))
        if snippet:
            print(f"    {snippet}")
    return 0


def show(rt: Runtime) -> int:
    data = rt.api.request("GET", f"/kb/articles/{quote(_article(rt.args.id))}")
    if rt.json:
        print_json(data)
        return 0
    if not isinstance(data, dict):
        raise CliError("the broker sent an unexpected answer")
    print(f"{_plain(data.get('ref'))}  {_plain(data.get('title'))}")
    print(
        f"status {data.get('status')}, version {data.get('version')}, author {data.get('author')}"
    )
    for field in ("problem", "environment", "cause", "solution"):
        text = data.get(field)
        if text:
            print(f"\n{field.upper()}\n{_plain_block(str(text))}")
    commands = data.get("commands") or []
    if isinstance(commands, list) and commands:
        print("\nCOMMANDS")
        for c in commands:
            if isinstance(c, dict):
                status = c.get("exit_status")
                suffix = "" if status is None else f"   # exit {status}"
                print(f"  $ {_plain(c.get('command'))}{suffix}")
    return 0


def _plain_block(text: str) -> str:
    return "\n".join(_plain(line) for line in text.splitlines())


def publish(rt: Runtime) -> int:
    data = rt.api.request("POST", f"/kb/articles/{quote(_article(rt.args.id))}/publish")
    rt.show_one(data, ["ref", "title", "status", "version", "reviewer"])
    return 0


def export(rt: Runtime) -> int:
    data = rt.api.request("GET", f"/kb/articles/{quote(_article(rt.args.id))}/export")
    if not isinstance(data, dict) or not isinstance(data.get("markdown"), str):
        raise CliError("the broker sent an unexpected answer")
    markdown = str(data["markdown"])
    if rt.args.output:
        try:
            with open(rt.args.output, "w", encoding="utf-8") as fh:
                fh.write(markdown)
        except OSError as exc:
            raise CliError(f"cannot write {rt.args.output} ({exc.strerror})") from None
        return 0
    sys.stdout.write(markdown)
    return 0
