"""The knowledge-base REST API on SQLite and PostgreSQL: drafts from tickets, versions,
publishing rights, search, suggestions, "this solved it", export."""

from __future__ import annotations

import datetime as dt
import secrets
import string
from collections.abc import Sequence
from typing import Any

import pytest
from sqlalchemy import func, select

from broker.db.models_agents import Agent
from broker.db.models_sessions import RemoteSession
from broker.db.models_staff import Customer
from broker.db.models_tickets import Ticket, TicketAgent, TicketLevelChange
from broker.services import SERVICES
from tests.support.api import Api
from tests.unit.test_kb_render import Elements

pytestmark = pytest.mark.postgres

_ALNUM = string.ascii_letters + string.digits
DEBIAN: dict[str, object] = {
    "hostname": "print01",
    "os": "Debian GNU/Linux",
    "os_version": "12",
    "kernel": "6.1.0-18-amd64",
    "arch": "x86_64",
    "users": ["alice"],
}


def _id(prefix: str, n: int, chars: str) -> str:
    return prefix + "".join(secrets.choice(chars) for _ in range(n))


async def seed_ticket(
    api: Api,
    customer: str,
    title: str,
    description: str,
    *,
    status: str = "open",
    solution: str | None = None,
    reasons: Sequence[str] = (),
    facts: dict[str, object] | None = None,
    sessions: Sequence[Sequence[tuple[str, int | None]]] = (),
) -> str:
    """A ticket with its machine, escalations and recorded sessions, written as the ticket
    store and the session recorder write them (their tables, on the test's backend)."""
    services = api.client.app[SERVICES]
    now = dt.datetime.now(dt.UTC)
    async with services.db() as db, db.begin():
        customer_id = (
            await db.execute(select(Customer.id).where(Customer.name == customer))
        ).scalar_one()
        number = ((await db.execute(select(func.max(Ticket.id)))).scalar() or 1000) + 1
        db.add(
            Ticket(
                id=number,
                title=title,
                description=description,
                customer_id=customer_id,
                requester="requester@example.org",
                level=2 if reasons else 1,
                status=status,
                assignee=None,
                created_by="lena",
                solution=solution,
                created_at=now,
                updated_at=now,
                resolved_at=now if status in ("resolved", "closed") else None,
            )
        )
        agent_id = _id("ag-", 16, string.ascii_lowercase + string.digits)
        if facts is not None:
            db.add(
                Agent(
                    id=agent_id,
                    name=f"host{number}",
                    customer_id=customer_id,
                    labels={},
                    facts=facts,
                    consent="unattended",
                    public_key="ssh-ed25519 AAAAtest",
                    key_fingerprint=f"SHA256:{agent_id}",
                    enrolled_with="tok",
                    enrolled_at=now,
                )
            )
            await db.flush()
            db.add(
                TicketAgent(ticket_id=number, agent_id=agent_id, linked_by="lena", linked_at=now)
            )
        for i, reason in enumerate(reasons):
            db.add(
                TicketLevelChange(
                    ticket_id=number,
                    kind="escalate",
                    from_level=1 + i,
                    to_level=2 + i,
                    reason=reason,
                    actor="lena",
                    at=now + dt.timedelta(seconds=i),
                )
            )
        for j, commands in enumerate(sessions):
            db.add(
                RemoteSession(
                    id=_id("s-", 22, _ALNUM),
                    ticket_id=number,
                    customer=customer,
                    agent_id=agent_id,
                    agent_name=f"host{number}",
                    owner="max",
                    owner_level=2,
                    kind="shell",
                    via="ssh",
                    state="ended",
                    created_at=now + dt.timedelta(seconds=j),
                    commands=[
                        {"command_line": c, "start": 1.0, "duration": 0.5, "exit_status": s}
                        for c, s in commands
                    ],
                )
            )
    return f"T-{number}"


async def staff(api: Api) -> dict[str, str]:
    """A customer and one account of each kind the tests act as."""
    await api.call("POST", "/customers", {"name": "acme"}, expect=201)
    await api.call("POST", "/customers", {"name": "globex"}, expect=201)
    return {
        "l1": await api.staff_token("lena", "level1", customers=["acme"]),
        "l2": await api.staff_token("max", "level2", customers=["acme"]),
        "l3": await api.staff_token("olga", "level3"),
        "g1": await api.staff_token("gus", "level1", customers=["globex"]),
    }


PRINTER_PROBLEM = (
    "Der Drucker im 2. OG druckt nicht mehr. Druckaufträge bleiben in der Warteschlange "
    "hängen, the printer queue shows 'Filter failed'."
)


async def printer_article(
    api: Api, tokens: dict[str, str], *, publish: bool = True
) -> dict[str, Any]:
    ticket = await seed_ticket(
        api,
        "acme",
        "Printer queue stuck with 'Filter failed'",
        PRINTER_PROBLEM,
        status="resolved",
        solution="Reinstalled the cups-filters package and restarted CUPS.",
        reasons=["needs root on the print server"],
        facts=DEBIAN,
        sessions=[
            [
                ("lpstat -p", 0),
                ("journalctl -u cups --since today", 0),
                ("apt-get install --reinstall cups-filters", 0),
                ("lp /nonexistent", 1),
                ("systemctl restart cups", 0),
            ]
        ],
    )
    _, draft = await api.call(
        "POST", "/kb/drafts", {"ticket": ticket}, token=tokens["l2"], expect=201
    )
    assert isinstance(draft, dict)
    _, draft = await api.call(
        "PATCH",
        f"/kb/articles/{draft['id']}",
        {"tags": ["printing", "cups"], "cause": "The cups-filters package was broken."},
        token=tokens["l2"],
        expect=200,
    )
    assert isinstance(draft, dict)
    if publish:
        _, draft = await api.call(
            "POST", f"/kb/articles/{draft['id']}/publish", token=tokens["l2"], expect=200
        )
    assert isinstance(draft, dict)
    article: dict[str, Any] = dict(draft)
    article["ticket"] = ticket
    return article


async def audit_events(api: Api, action: str) -> list[dict]:  # type: ignore[type-arg]
    _, data = await api.call("GET", f"/audit?limit=1000&action={action}", expect=200)
    assert isinstance(data, list)
    return data


async def test_draft_is_prefilled_from_ticket(api: Api) -> None:
    """A draft carries the ticket's title, description, escalation reason, solution, OS facts
    without host or user names, and only the commands that exited 0, each once."""
    tokens = await staff(api)
    article = await printer_article(api, tokens, publish=False)
    assert article["status"] == "draft"
    assert article["version"] == 2
    assert article["title"] == "Printer queue stuck with 'Filter failed'"
    assert article["problem"] == PRINTER_PROBLEM
    assert article["solution"].startswith("Reinstalled the cups-filters")
    assert article["environment"] == "Debian GNU/Linux 12 (kernel 6.1.0-18-amd64, x86_64)"
    assert article["os"] == ["Debian GNU/Linux 12"]
    assert "print01" not in str(article)
    assert "alice" not in str(article)
    commands = [c["command"] for c in article["commands"]]
    assert commands == [
        "lpstat -p",
        "journalctl -u cups --since today",
        "apt-get install --reinstall cups-filters",
        "systemctl restart cups",
    ]
    assert all(c["exit_status"] == 0 and c["session"].startswith("s-") for c in article["commands"])
    kinds = [s["kind"] for s in article["sources"]]
    assert kinds == ["ticket", "session"]
    assert article["sources"][0]["ref"] == article["ticket"]
    _, first = await api.call(
        "GET", f"/kb/articles/{article['id']}/versions/1", token=tokens["l2"], expect=200
    )
    assert isinstance(first, dict)
    assert "needs root on the print server" in first["cause"]
    assert await audit_events(api, "kb.draft")


async def test_level1_may_not_publish_and_is_audited(api: Api) -> None:
    """Level 1 is refused publishing (403, audited as denied); level 2 publishes, becomes the
    reviewer, and the publication is audited."""
    tokens = await staff(api)
    article = await printer_article(api, tokens, publish=False)
    status, body = await api.call(
        "POST", f"/kb/articles/{article['id']}/publish", token=tokens["l1"]
    )
    assert status == 403
    assert isinstance(body, dict)
    assert body["error"]["code"] == "level_too_low_to_publish"
    denied = await audit_events(api, "kb.publish")
    assert [(e["actor"], e["outcome"]) for e in denied] == [("lena", "denied")]
    _, done = await api.call(
        "POST", f"/kb/articles/{article['id']}/publish", token=tokens["l2"], expect=200
    )
    assert isinstance(done, dict)
    assert done["status"] == "published"
    assert done["reviewer"] == "max"
    assert done["published_at"]
    events = await audit_events(api, "kb.publish")
    assert ("max", "ok") in [(e["actor"], e["outcome"]) for e in events]
    status, body = await api.call(
        "POST", f"/kb/articles/{article['id']}/publish", token=tokens["l2"]
    )
    assert status == 409


async def test_who_may_write_what(api: Api) -> None:
    """Level 1 writes drafts but not published articles; admins and read-only tokens write
    nothing; level 1 cannot read drafts."""
    tokens = await staff(api)
    _, draft = await api.call(
        "POST", "/kb/articles", {"title": "VPN drops"}, token=tokens["l1"], expect=201
    )
    assert isinstance(draft, dict)
    await api.call(
        "PATCH",
        f"/kb/articles/{draft['id']}",
        {"problem": "drops hourly"},
        token=tokens["l1"],
        expect=200,
    )
    await api.call("GET", f"/kb/articles/{draft['id']}", token=tokens["l1"], expect=200)
    _, theirs = await api.call(
        "POST", "/kb/articles", {"title": "WLAN"}, token=tokens["l2"], expect=201
    )
    assert isinstance(theirs, dict)
    status, _ = await api.call("GET", f"/kb/articles/{theirs['id']}", token=tokens["l1"])
    assert status == 403
    published = await printer_article(api, tokens)
    status, body = await api.call(
        "PATCH", f"/kb/articles/{published['id']}", {"title": "x"}, token=tokens["l1"]
    )
    assert status == 403
    assert isinstance(body, dict)
    assert body["error"]["code"] == "level_too_low_to_edit_published"
    status, _ = await api.call("POST", "/kb/articles", {"title": "x"}, token="admin")
    assert status == 403
    reader = await api.staff_token("rita", "level2", scopes=["read"])
    status, body = await api.call("POST", "/kb/articles", {"title": "x"}, token=reader)
    assert status == 403
    assert isinstance(body, dict)
    assert body["error"]["code"] == "scope_missing"


async def test_versions_history_and_diff(api: Api) -> None:
    """Every save is a version; history lists them, diff shows the changed fields, a stale
    base version is refused, and a retired article is read-only until reopened."""
    tokens = await staff(api)
    t = tokens["l2"]
    _, a = await api.call(
        "POST", "/kb/articles", {"title": "Outlook hangs", "problem": "hangs"}, token=t, expect=201
    )
    assert isinstance(a, dict)
    path = f"/kb/articles/{a['id']}"
    await api.call(
        "PATCH", path, {"solution": "Start in safe mode.", "base_version": 1}, token=t, expect=200
    )
    status, body = await api.call("PATCH", path, {"solution": "x", "base_version": 1}, token=t)
    assert status == 409
    assert isinstance(body, dict)
    assert body["error"]["code"] == "version_conflict"
    await api.call(
        "PATCH",
        path,
        {"solution": "Start with outlook.exe /safe.", "note": "exact switch"},
        token=t,
        expect=200,
    )
    await api.call("POST", f"{path}/publish", token=t, expect=200)
    _, history = await api.call("GET", f"{path}/history", token=t, expect=200)
    assert isinstance(history, list)
    assert [(v["version"], v["action"]) for v in history] == [
        (1, "create"),
        (2, "edit"),
        (3, "edit"),
        (4, "publish"),
    ]
    assert history[2]["note"] == "exact switch"
    _, diff = await api.call("GET", f"{path}/diff?from=2&to=3", token=t, expect=200)
    assert isinstance(diff, dict)
    assert [f["field"] for f in diff["fields"]] == ["solution"]
    assert diff["fields"][0]["lines"][1:] == [
        "-Start in safe mode.",
        "+Start with outlook.exe /safe.",
    ]
    status, _ = await api.call("GET", f"{path}/diff?from=1&to=9", token=t)
    assert status == 422
    await api.call("POST", f"{path}/retire", token=t, expect=200)
    status, _ = await api.call("PATCH", path, {"title": "y"}, token=t)
    assert status == 409
    _, reopened = await api.call("POST", f"{path}/reopen", token=t, expect=200)
    assert isinstance(reopened, dict)
    assert reopened["status"] == "draft"


async def test_search_ranks_highlights_and_filters(api: Api) -> None:
    """Search finds the article from other word forms in English and German, marks the
    matched words, and honours the OS and tag filters; level 1 never sees drafts."""
    tokens = await staff(api)
    article = await printer_article(api, tokens)
    _, other = await api.call(
        "POST",
        "/kb/articles",
        {
            "title": "Printing slow on Windows 11",
            "problem": "prints take minutes",
            "solution": "Update the driver.",
            "os": ["Windows 11"],
            "tags": ["printing"],
        },
        token=tokens["l2"],
        expect=201,
    )
    assert isinstance(other, dict)
    await api.call("POST", f"/kb/articles/{other['id']}/publish", token=tokens["l2"], expect=200)
    await api.call(
        "POST",
        "/kb/articles",
        {"title": "Printer draft nobody reviewed", "problem": "printer"},
        token=tokens["l2"],
        expect=201,
    )

    _, found = await api.call(
        "GET", "/kb/search?q=filters+failing+printers", token=tokens["l1"], expect=200
    )
    assert isinstance(found, dict)
    refs = [r["ref"] for r in found["results"]]
    assert refs[0] == article["ref"]
    assert "draft" not in str(found["results"])
    marked = [s["text"] for s in found["results"][0]["title_highlight"] if s["match"]]
    assert marked == ["Printer", "Filter", "failed"]

    _, german = await api.call(
        "POST",
        "/kb/search",
        {"q": "Druckauftrag hängt in Warteschlange"},
        token=tokens["l1"],
        expect=200,
    )
    assert isinstance(german, dict)
    assert german["results"][0]["ref"] == article["ref"]
    snippet = german["results"][0]["snippet"]
    assert {s["text"] for s in snippet if s["match"]} >= {"Druckaufträge", "Warteschlange"}

    _, debian = await api.call(
        "GET", "/kb/search?q=printing&os=debian", token=tokens["l1"], expect=200
    )
    _, windows = await api.call(
        "GET", "/kb/search?q=printing&os=windows+11", token=tokens["l1"], expect=200
    )
    _, tagged = await api.call(
        "GET", "/kb/search?q=printing&tag=cups", token=tokens["l1"], expect=200
    )
    assert isinstance(debian, dict)
    assert isinstance(windows, dict)
    assert isinstance(tagged, dict)
    assert [r["ref"] for r in debian["results"]] == [article["ref"]]
    assert [r["ref"] for r in windows["results"]] == [other["ref"]]
    assert [r["ref"] for r in tagged["results"]] == [article["ref"]]

    status, _ = await api.call("GET", "/kb/search?q=printer&status=any", token=tokens["l1"])
    assert status == 403
    _, drafts = await api.call(
        "GET", "/kb/search?q=printer&status=draft", token=tokens["l2"], expect=200
    )
    assert isinstance(drafts, dict)
    assert [r["title"] for r in drafts["results"]] == ["Printer draft nobody reviewed"]


HOSTILE_QUERIES = [
    'printer AND NOT "cups',
    "printer OR (queue",
    'title:printer NEAR("a b") ^start *',
    "print*",
    '"""',
    "printer\x00queue",
    "-printer +queue ~ | & ! :* <-> '",
    "\u202eprinter\u200b",
    "stems : druck",
    "drucker " * 1500,
]


async def test_search_treats_any_text_as_words(api: Api) -> None:
    """Operators, quotes, unbalanced quotes, NUL, bidi controls, column filters and 10 KB of
    text are searched as plain words, never an error, by GET and POST alike."""
    tokens = await staff(api)
    article = await printer_article(api, tokens)
    for query in HOSTILE_QUERIES:
        _, found = await api.call(
            "POST", "/kb/search", {"q": query}, token=tokens["l1"], expect=200
        )
        assert isinstance(found, dict)
        if any(w in query.lower() for w in ("printer", "drucker", "druck")):
            assert found["results"][0]["ref"] == article["ref"], query
        if len(query) < 2000:
            resp = await api.client.get(
                "/api/v1/kb/search", params={"q": query}, headers=api.headers(tokens["l1"])
            )
            assert resp.status == 200, query


async def test_empty_and_stopword_queries(api: Api) -> None:
    """An empty query finds nothing; a query of stopwords only still searches them."""
    tokens = await staff(api)
    await printer_article(api, tokens)
    _, empty = await api.call("GET", "/kb/search?q=", token=tokens["l1"], expect=200)
    _, punct = await api.call("GET", "/kb/search?q=%22%28%29", token=tokens["l1"], expect=200)
    _, stop = await api.call("GET", "/kb/search?q=the+der", token=tokens["l1"], expect=200)
    assert empty == {"words": [], "results": []}
    assert isinstance(punct, dict)
    assert punct["results"] == []
    assert isinstance(stop, dict)
    assert stop["words"] == ["the", "der"]


async def test_suggestions_and_solved(api: Api) -> None:
    """A new ticket's suggestions list the article and the solved ticket of the same
    customer; "this solved it" links them once and counts; other customers see nothing."""
    tokens = await staff(api)
    article = await printer_article(api, tokens)
    new = await seed_ticket(
        api, "acme", "Printer not printing", "print jobs stuck in the queue, filter failed"
    )
    _, sugg = await api.call("GET", f"/kb/suggestions?ticket={new}", token=tokens["l1"], expect=200)
    assert isinstance(sugg, dict)
    assert sugg["ticket"] == new
    assert [a["ref"] for a in sugg["articles"]][:1] == [article["ref"]]
    assert [t["ref"] for t in sugg["tickets"]] == [article["ticket"]]

    path = f"/kb/articles/{article['id']}/solved"
    _, first = await api.call("POST", path, {"ticket": new}, token=tokens["l1"], expect=200)
    _, again = await api.call("POST", path, {"ticket": new}, token=tokens["l1"], expect=200)
    assert isinstance(first, dict)
    assert isinstance(again, dict)
    assert (first["linked"], first["article"]["solved_count"]) == (True, 1)
    assert (again["linked"], again["article"]["solved_count"]) == (False, 1)
    assert again["solved_tickets"] == [new]
    assert [e["actor"] for e in await audit_events(api, "kb.solved")] == ["lena"]

    status, _ = await api.call("GET", f"/kb/suggestions?ticket={new}", token=tokens["g1"])
    assert status == 404
    status, _ = await api.call("POST", path, {"ticket": new}, token=tokens["g1"])
    assert status == 404
    globex = await seed_ticket(api, "globex", "Printer not printing", "queue stuck, filter failed")
    _, theirs = await api.call(
        "GET", f"/kb/suggestions?ticket={globex}", token=tokens["g1"], expect=200
    )
    assert isinstance(theirs, dict)
    assert [a["ref"] for a in theirs["articles"]][:1] == [article["ref"]]
    assert theirs["tickets"] == []
    _, seen = await api.call("GET", f"/kb/articles/{article['id']}", token=tokens["g1"], expect=200)
    assert isinstance(seen, dict)
    assert seen["sources"] == []
    status, _ = await api.call("GET", "/kb/suggestions?ticket=T-999999", token=tokens["l1"])
    assert status == 404
    status, _ = await api.call("GET", "/kb/suggestions?ticket=nonsense", token=tokens["l1"])
    assert status == 422


async def test_solved_needs_a_published_article(api: Api) -> None:
    """A draft cannot be marked as a ticket's solution."""
    tokens = await staff(api)
    draft = await printer_article(api, tokens, publish=False)
    status, body = await api.call(
        "POST",
        f"/kb/articles/{draft['id']}/solved",
        {"ticket": draft["ticket"]},
        token=tokens["l2"],
    )
    assert status == 409
    assert isinstance(body, dict)
    assert body["error"]["code"] == "status_refused"


async def test_export_markdown_and_safe_html(api: Api) -> None:
    """Export gives Markdown with every section and HTML in which script, event handlers and
    javascript: links are inert."""
    tokens = await staff(api)
    _, a = await api.call(
        "POST",
        "/kb/articles",
        {
            "title": "XSS <script>alert(1)</script>",
            "problem": '<img src=x onerror="alert(1)"> and [click](javascript:alert(1))',
            "solution": "Run it:\n\n<script>alert(2)</script>\n\n<a href='x' onclick='y'>z</a>",
            "commands": [{"command": "echo ```; rm -rf /", "exit_status": 0}],
        },
        token=tokens["l2"],
        expect=201,
    )
    assert isinstance(a, dict)
    _, out = await api.call("GET", f"/kb/articles/{a['id']}/export", token=tokens["l2"], expect=200)
    assert isinstance(out, dict)
    assert out["filename"] == f"KB-{a['id']}.md"
    md = out["markdown"]
    assert "## Problem" in md
    assert "## Solution" in md
    assert "## Commands" in md
    assert "````sh" in md
    found = Elements(out["html"])
    assert set(found.tags) <= {"h1", "h2", "p", "em", "br", "pre", "code", "a"}
    assert all(name in ("href", "rel", "class") for name, _ in found.attrs), found.attrs
    assert not any(v.lower().startswith("javascript:") for _, v in found.attrs)


BAD_ARTICLES: list[tuple[dict[str, object], int, str]] = [
    ({"title": ""}, 422, "article_invalid"),
    ({"title": "x" * 201}, 422, "article_invalid"),
    ({"title": "x", "tags": ["Not A Tag!"]}, 422, "article_invalid"),
    ({"title": "x", "commands": [{"command": "ls", "exit_status": 999}]}, 422, "article_invalid"),
    (
        {"title": "x", "commands": [{"command": "ls", "session": "s-../../etc"}]},
        422,
        "article_invalid",
    ),
    ({"title": "x", "problem": "p" * 20_001}, 422, "article_invalid"),
    ({"title": "x", "solution": "s" * 100_001}, 422, "validation_failed"),
    ({"title": "x", "extra": 1}, 422, "validation_failed"),
]


async def test_article_input_is_checked(api: Api) -> None:
    """Bad titles, tags, commands, session ids and oversized fields are refused by name."""
    tokens = await staff(api)
    for body, status, code in BAD_ARTICLES:
        got, data = await api.call("POST", "/kb/articles", body, token=tokens["l2"])
        assert got == status, body
        assert isinstance(data, dict)
        assert data["error"]["code"] == code, body


async def test_unknown_article_and_ticket(api: Api) -> None:
    """Unknown or malformed article ids and tickets give 404 and 422 with a sentence."""
    tokens = await staff(api)
    status, _ = await api.call("GET", "/kb/articles/KB-4242", token=tokens["l2"])
    assert status == 404
    status, _ = await api.call("GET", "/kb/articles/..%2f1", token=tokens["l2"])
    assert status in (404, 422)
    status, _ = await api.call("POST", "/kb/drafts", {"ticket": "T-77"}, token=tokens["l2"])
    assert status == 404
    other = await seed_ticket(api, "globex", "x", "y")
    status, _ = await api.call("POST", "/kb/drafts", {"ticket": other}, token=tokens["l2"])
    assert status == 404
    assert [e["outcome"] for e in await audit_events(api, "kb.draft")] == ["denied"]
