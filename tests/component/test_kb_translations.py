"""German and English versions of one article: linked, offered as a task, and suggested in
the reader's language with the passage that matched marked there."""

from __future__ import annotations

from typing import Any

import pytest

from tests.component.test_kb_api import audit_events, seed_ticket, staff
from tests.support.api import Api

pytestmark = pytest.mark.postgres

GERMAN = {
    "title": "Druckaufträge hängen in der Warteschlange",
    "problem": "Der Drucker druckt nicht, die Druckaufträge bleiben in der Warteschlange hängen.",
    "solution": "Warteschlange leeren und den Drucker neu starten.",
    "commands": [{"command": "lpstat -t", "exit_status": 0}],
    "tags": ["drucken"],
}
ENGLISH = {
    "title": "Print jobs stuck in the queue",
    "problem": "The printer does not print; print jobs stay stuck in the queue.",
    "solution": "Clear the queue and restart the printer.",
}


async def call(api: Api, method: str, path: str, token: str, body: Any = None) -> Any:
    status, data = await api.call(method, path, body, token=token)
    assert status in (200, 201), (status, data)
    return data


async def test_other_language_version_is_linked_and_suggested_in_the_readers(api: Api) -> None:
    """Level 2 starts the English version of a German article (a linked draft with its
    commands and tags), writes and publishes it; the task list empties; suggestions show
    each pair once, in the language asked for, the passage marked in that language."""
    tokens = await staff(api)
    l2 = tokens["l2"]
    german = await call(api, "POST", "/kb/articles", l2, GERMAN)
    assert german["language"] == "de"
    await call(api, "POST", f"/kb/articles/{german['id']}/publish", l2)
    tasks = await call(api, "GET", "/kb/translation-tasks", l2)
    assert [t["ref"] for t in tasks] == [german["ref"]]

    english = await call(api, "POST", f"/kb/articles/{german['id']}/translation", l2)
    assert (english["status"], english["language"]) == ("draft", "en")
    assert english["translation"] == german["ref"]
    assert english["commands"] == german["commands"]
    assert english["tags"] == ["drucken"]
    shown = await call(api, "GET", f"/kb/articles/{german['id']}", l2)
    assert shown["translation"] == english["ref"]
    status, again = await api.call("POST", f"/kb/articles/{german['id']}/translation", token=l2)
    assert status == 409
    assert isinstance(again, dict)
    assert again["error"]["code"] == "translation_exists"
    assert [e["target"] for e in await audit_events(api, "kb.translate")] == [english["ref"]]

    await call(api, "PATCH", f"/kb/articles/{english['id']}", l2, {**ENGLISH, "language": "en"})
    await call(api, "POST", f"/kb/articles/{english['id']}/publish", l2)
    assert await call(api, "GET", "/kb/translation-tasks", l2) == []

    ticket = await seed_ticket(api, "acme", "printer not printing", "print jobs stuck in queue")
    base = f"/kb/suggestions?ticket={ticket}"
    for lang, want, text in (("de", german, GERMAN), ("en", english, ENGLISH)):
        sugg = await call(api, "GET", f"{base}&lang={lang}", tokens["l1"])
        refs = [a["ref"] for a in sugg["articles"]]
        assert refs == [want["ref"]]  # the pair once, in the reader's language
        marked = [s["text"] for s in sugg["articles"][0]["snippet"] if s["match"]]
        assert marked
        assert all(m in str(text["problem"]) + str(text["solution"]) for m in marked), marked
    status, _ = await api.call("GET", f"{base}&lang=fr", token=tokens["l1"])
    assert status == 422

    # Search results too: the pair once, in the language asked for; both without one.
    search = "/kb/search?q=print+jobs+stuck+Drucker"
    found = await call(api, "GET", search, tokens["l1"])
    assert {r["ref"] for r in found["results"]} == {german["ref"], english["ref"]}
    for lang, want in (("de", german), ("en", english)):
        found = await call(api, "GET", f"{search}&lang={lang}", tokens["l1"])
        assert [r["ref"] for r in found["results"]] == [want["ref"]]
        body = {"q": "Warteschlange queue", "lang": lang}
        found = await call(api, "POST", "/kb/search", tokens["l1"], body)
        assert [r["ref"] for r in found["results"]] == [want["ref"]]
    status, _ = await api.call("GET", f"{search}&lang=fr", token=tokens["l1"])
    assert status == 422
