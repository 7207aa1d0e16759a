"""Level 1 sees why and says so: "did not help" on a suggestion is noted once, audited, goes
last on that ticket and weighs against the article elsewhere; "this solved it" weighs for
it; a suggestion says which ticket its article solved and in how many minutes."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

import pytest
from sqlalchemy import select

from broker.db.models_sessions import RemoteSession
from broker.services import SERVICES
from tests.component.test_kb_api import audit_events, seed_ticket, staff
from tests.support.api import Api

pytestmark = pytest.mark.postgres

QUEUE = {
    "title": "Print jobs stuck in the queue",
    "problem": "The printer does not print; print jobs stay stuck in the queue.",
    "solution": "Clear the queue and restart the spooler.",
}
# The same symptoms, another fix: the text ranks it just behind QUEUE (whose solution
# mentions the queue too), so marks decide between them.
DRIVER = {
    "title": QUEUE["title"],
    "problem": QUEUE["problem"],
    "solution": "Install the printer's own driver again.",
}
TEXT = "printer does not print, jobs stuck in the queue"


async def publish(api: Api, token: str, body: Mapping[str, object]) -> str:
    _, made = await api.call("POST", "/kb/articles", body, token=token, expect=201)
    assert isinstance(made, dict)
    await api.call("POST", f"/kb/articles/{made['id']}/publish", token=token, expect=200)
    return str(made["ref"])


async def suggested(api: Api, token: str, ticket: str) -> list[str]:
    _, sugg = await api.call("GET", f"/kb/suggestions?ticket={ticket}", token=token, expect=200)
    assert isinstance(sugg, dict)
    return [a["ref"] for a in sugg["articles"]]


async def test_not_helped_goes_last_here_and_weighs_elsewhere(api: Api) -> None:
    """Marked on a ticket, the article goes last there at once and, the words being close,
    behind the other article on a new ticket too; a second mark of the same pair counts
    once; audited; two "solved it" later it leads again."""
    tokens = await staff(api)
    queue = await publish(api, tokens["l2"], QUEUE)
    driver = await publish(api, tokens["l2"], DRIVER)
    first = await seed_ticket(api, "acme", "Printer not printing", TEXT)
    assert await suggested(api, tokens["l1"], first) == [queue, driver]

    path = f"/kb/articles/{queue}/not-helped"
    _, noted = await api.call("POST", path, {"ticket": first}, token=tokens["l1"], expect=200)
    _, again = await api.call("POST", path, {"ticket": first}, token=tokens["l1"], expect=200)
    assert noted == {"article": queue, "linked": True, "not_helped_count": 1}
    assert again == {"article": queue, "linked": False, "not_helped_count": 1}
    assert await suggested(api, tokens["l1"], first) == [driver, queue]
    events = await audit_events(api, "kb.not_helped")
    assert [(e["actor"], e["target"]) for e in events] == [("lena", queue)]

    fresh = await seed_ticket(api, "acme", "Printer not printing", TEXT)
    assert await suggested(api, tokens["l1"], fresh) == [driver, queue]  # close ranks: it weighs
    _, shown = await api.call("GET", f"/kb/articles/{queue}", token=tokens["l1"], expect=200)
    assert isinstance(shown, dict)
    assert (shown["not_helped_count"], shown["solved_count"]) == (1, 0)

    for solved in (fresh, await seed_ticket(api, "acme", "Printer not printing", TEXT)):
        await api.call(
            "POST", f"/kb/articles/{queue}/solved", {"ticket": solved}, token=tokens["l1"]
        )
    other = await seed_ticket(api, "acme", "Printer not printing", TEXT)
    assert await suggested(api, tokens["l1"], other) == [queue, driver]  # helped twice since


async def test_not_helped_refusals_are_clear_and_audited(api: Api) -> None:
    """Another customer's ticket is not found (the attempt is audited); a draft is never
    suggested, so it cannot be marked; nothing is stored by a refusal."""
    tokens = await staff(api)
    queue = await publish(api, tokens["l2"], QUEUE)
    ticket = await seed_ticket(api, "acme", "Printer not printing", TEXT)
    path = f"/kb/articles/{queue}/not-helped"
    status, _ = await api.call("POST", path, {"ticket": ticket}, token=tokens["g1"])
    assert status == 404
    refusals = await audit_events(api, "kb.not_helped")
    assert [(e["actor"], e["outcome"]) for e in refusals] == [("gus", "denied")]
    _, draft = await api.call("POST", "/kb/articles", DRIVER, token=tokens["l2"], expect=201)
    assert isinstance(draft, dict)
    status, body = await api.call(
        "POST", f"/kb/articles/{draft['id']}/not-helped", {"ticket": ticket}, token=tokens["l1"]
    )
    assert status == 409, body
    _, shown = await api.call("GET", f"/kb/articles/{queue}", token=tokens["l1"], expect=200)
    assert isinstance(shown, dict)
    assert shown["not_helped_count"] == 0


async def test_suggestions_say_what_the_article_solved_and_how_fast(api: Api) -> None:
    """An article written from a ticket's recorded session says "this solved T-… in n
    minutes" in suggestions; staff of another customer get the minutes without the ticket."""
    tokens = await staff(api)
    source = await seed_ticket(
        api,
        "acme",
        "Print jobs stuck in the queue",
        TEXT,
        status="resolved",
        solution="Cleared the queue and restarted the spooler.",
        sessions=[[("lpstat -t", 0), ("systemctl restart cups", 0)]],
    )
    services = api.client.app[SERVICES]
    async with services.db() as db, db.begin():
        session = (
            await db.execute(
                select(RemoteSession).where(RemoteSession.ticket_id == int(source[2:]))
            )
        ).scalar_one()
        # As the session manager records a session that ran 3.5 minutes.
        session.started_at = session.created_at
        session.ended_at = session.created_at + dt.timedelta(minutes=3, seconds=30)
    _, draft = await api.call(
        "POST", "/kb/drafts", {"ticket": source}, token=tokens["l2"], expect=201
    )
    assert isinstance(draft, dict)
    await api.call("POST", f"/kb/articles/{draft['id']}/publish", token=tokens["l2"], expect=200)

    ours = await seed_ticket(api, "acme", "Printer not printing", TEXT)
    theirs = await seed_ticket(api, "globex", "Printer not printing", TEXT)
    for ticket, token, shown in ((ours, "l1", source), (theirs, "g1", None)):
        _, sugg = await api.call(
            "GET", f"/kb/suggestions?ticket={ticket}", token=tokens[token], expect=200
        )
        assert isinstance(sugg, dict)
        first = sugg["articles"][0]
        assert first["ref"] == draft["ref"]
        assert first["solved_in"] == {"ticket": shown, "minutes": 4}
