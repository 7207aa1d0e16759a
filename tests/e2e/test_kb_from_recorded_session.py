"""From a real recorded session to a published article level 1 finds: a real broker, a real
agent, the real OpenSSH client, then the knowledge base's pre-filled draft."""

from __future__ import annotations

import json

import pytest

from broker.cli.client import ApiClient, Connection
from broker.config import load_config
from tests.support.broker import secondline
from tests.support.site import (  # the same real broker, agent and ssh set-up
    Site,
    new_ticket,
    ok,
    sessions_of,
    start_agent,
    wait_note,
)

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]


def api(site: Site, token: str) -> ApiClient:
    cert = str(load_config(site.data_dir, env={}).tls_cert_path)
    return ApiClient(Connection(site.broker.url, token, cert))


async def test_recorded_fix_becomes_an_article_level1_finds(site: Site) -> None:
    """Commands typed in a recorded OpenSSH session are pre-filled into the draft; once
    published, a German ticket with the same symptoms gets it as a top-three suggestion and
    level 1 finds it by search."""
    await start_agent(site, "web01", "unattended")
    ref = new_ticket(site, "web01")
    term = await site.interactive(ref)
    term.type("printf 'queue %s\\n' cleared\n")
    await term.expect(b"queue cleared")
    term.type("ls /no-such-spool-dir\n")
    await term.expect(b"No such file")
    term.type("exit 0\n")
    mark = len(site.broker.output)
    code, _ = await term.finish()
    assert code == 0
    session_id = str(sessions_of(site, ref)[0]["id"])
    await wait_note(site, ref, session_id, mark)

    bob = ok(site.admin("user", "token", "bob"))
    lena = ok(site.admin("user", "token", "lena"))
    solution = "The print queue was stuck; cleared the spool and the printer printed again."
    resolved = secondline(
        "--token", bob, "ticket", "resolve", ref, "--solution", solution, data_dir=site.data_dir
    )
    assert resolved.code == 0, resolved.err
    as_bob = api(site, bob)
    draft = as_bob.request("POST", "/kb/drafts", {"ticket": ref})
    assert isinstance(draft, dict)
    commands = [c["command"] for c in draft["commands"]]
    assert "printf 'queue %s\\n' cleared" in commands  # exit 0: kept
    assert "ls /no-such-spool-dir" not in commands  # failed: left out
    assert {"kind": "session", "ref": session_id} in draft["sources"]
    as_bob.request(
        "PATCH",
        f"/kb/articles/{draft['id']}",
        {"title": "Printer queue stuck: clear the spool", "tags": ["printing"],
         "problem": "Print jobs stay in the printer queue and nothing prints.",
         "base_version": draft["version"]},
    )  # fmt: skip
    published = json.loads(
        ok(secondline("--token", bob, "kb", "publish", str(draft["ref"]), "--json",
                      data_dir=site.data_dir))
    )  # fmt: skip
    assert published["status"] == "published"

    german = ok(
        secondline(
            "--token", lena, "ticket", "create", "--title", "Drucker druckt nicht",
            "--customer", "acme", "--description",
            "Die Druckerwarteschlange (printer queue) hängt, nichts wird gedruckt.",
            data_dir=site.data_dir,
        )
    )  # fmt: skip
    suggestions = api(site, lena).request("GET", f"/kb/suggestions?ticket={german}")
    assert isinstance(suggestions, dict)
    assert draft["ref"] in [a["ref"] for a in suggestions["articles"][:3]], suggestions
    found = json.loads(
        ok(secondline("--token", lena, "kb", "search", "printer queue stuck", "--json",
                      data_dir=site.data_dir))
    )  # fmt: skip
    assert found["results"][0]["ref"] == draft["ref"]
