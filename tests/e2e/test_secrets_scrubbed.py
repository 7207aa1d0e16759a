"""Secrets typed in a real recorded session (real broker, agent and OpenSSH client) reach
neither the ticket note, its text rendering, the session's command index, the knowledge-base
draft nor the search index; the sealed .cast keeps them, and publishing an article that still
holds one is refused and audited."""

from __future__ import annotations

import json
import ssl
import urllib.parse
import urllib.request

import pytest

from broker.cli.client import ApiClient, Connection
from broker.config import load_config
from tests.support.broker import secondline
from tests.support.site import Site, new_ticket, ok, sessions_of, start_agent, wait_note

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]

REDACTED = "\u2039redacted\u203a"
# Each line runs with exit status 0, so the draft takes every one of them.
TYPED = [
    "echo mysql -u root -pHunter2my shop",
    "true --password=Hunter2pw",
    "PGPASSWORD=Hunter2pg true",
    ": https://deploy:Hunter2url@git.example.com/r.git",
    "echo 'Authorization: Bearer Hunter2bearerToken'",
    "printf '%s\\n' '-----BEGIN OPENSSH PRIVATE KEY-----' 'b3BlbnNzaC1Hunter2key'"
    " '-----END OPENSSH PRIVATE KEY-----'",
    "echo done-typing",
]


def _api(site: Site, token: str) -> ApiClient:
    cert = str(load_config(site.data_dir, env={}).tls_cert_path)
    return ApiClient(Connection(site.broker.url, token, cert))


def _download(site: Site, token: str, path: str) -> str:
    config = load_config(site.data_dir, env={})
    context = ssl.create_default_context(cafile=str(config.tls_cert_path))
    req = urllib.request.Request(site.broker.url + path)  # noqa: S310 - https to our broker
    req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, context=context, timeout=10) as resp:  # noqa: S310
        data: bytes = resp.read()
    return data.decode("utf-8")


async def test_typed_secrets_are_scrubbed_from_everything_derived(site: Site) -> None:
    """The note, the .txt (attached and exported), the command index, the draft and the
    search index show the redaction marker where the secrets were; the .cast keeps them."""
    await start_agent(site, "web01", "unattended")
    ref = new_ticket(site, "web01")
    term = await site.interactive(ref)
    for line in TYPED:
        term.type(line + "\n")
    await term.expect(b"done-typing\r\n")
    term.type("exit 0\n")
    mark = len(site.broker.output)
    code, _ = await term.finish()
    assert code == 0
    session_id = str(sessions_of(site, ref)[0]["id"])
    note = await wait_note(site, ref, session_id, mark)

    text = str(note["text"])
    assert "Hunter2" not in text
    assert f"mysql -u root -p{REDACTED} shop" in text
    assert f"PGPASSWORD={REDACTED} true" in text

    bob = ok(site.admin("user", "token", "bob"))
    attached = _download(site, bob, f"/files/tickets/{ref}/attachments/{session_id}.txt")
    assert "Hunter2" not in attached
    assert f"mysql -u root -p{REDACTED} shop" in attached  # the echoed output too
    assert f"-----BEGIN OPENSSH PRIVATE KEY-----\n{REDACTED}\n-----END" in attached

    exported = site.tmp / "export.txt"
    ok(site.admin("transcript", "export", session_id, "--format", "txt", "-o", str(exported)))
    assert "Hunter2" not in exported.read_text()
    cast = site.tmp / "export.cast"
    ok(site.admin("transcript", "export", session_id, "--format", "cast", "-o", str(cast)))
    assert "Hunter2my" in cast.read_text()  # the sealed evidence is unaltered

    shown = _api(site, bob).request("GET", f"/sessions/{session_id}")
    assert isinstance(shown, dict)
    index = [c["command"] for c in shown["commands"]]
    assert f"true --password={REDACTED}" in index
    assert not [c for c in index if "Hunter2" in c]

    # A one-command session: its command line is scrubbed in the session list and its note.
    mark = len(site.broker.output)
    ran = await site.ssh(ref, "echo --password=Hunter2exec")
    assert ran.code == 0, ran.err
    exec_session = next(s for s in sessions_of(site, ref) if s["id"] != session_id)
    assert exec_session["command"] == f"echo --password={REDACTED}"
    exec_note = await wait_note(site, ref, str(exec_session["id"]), mark)
    assert "Hunter2" not in str(exec_note["text"])

    solution = "Cleared the queue; the database password is now PGPASSWORD=Hunter2sol for psql."
    resolved = secondline(
        "--token", bob, "ticket", "resolve", ref, "--solution", solution, data_dir=site.data_dir
    )
    assert resolved.code == 0, resolved.err
    as_bob = _api(site, bob)
    draft = as_bob.request("POST", "/kb/drafts", {"ticket": ref})
    assert isinstance(draft, dict)
    assert "Hunter2" not in json.dumps(draft, ensure_ascii=False)
    commands = [c["command"] for c in draft["commands"]]
    assert f"echo mysql -u root -p{REDACTED} shop" in commands
    assert f": https://deploy:{REDACTED}@git.example.com/r.git" in commands

    # A secret written into the draft by hand: kept in the draft (staff only), never indexed.
    edited = as_bob.request(
        "PATCH",
        f"/kb/articles/{draft['id']}",
        {"solution": "Run:\nmysql -u app -pHunter2typed shop\nthen retry the print job.",
         "problem": "Print jobs stay in the queue.", "base_version": draft["version"]},
    )  # fmt: skip
    assert isinstance(edited, dict)
    hits = as_bob.request("GET", "/kb/search?" + urllib.parse.urlencode(
        {"q": "Hunter2typed", "status": "draft"}))  # fmt: skip
    assert isinstance(hits, dict)
    assert hits["results"] == []
    hits = as_bob.request("GET", "/kb/search?q=retry+print+job&status=draft")
    assert isinstance(hits, dict)
    assert [r["ref"] for r in hits["results"]] == [draft["ref"]]
    assert "Hunter2" not in json.dumps(hits, ensure_ascii=False)

    refused = secondline("--token", bob, "kb", "publish", str(draft["ref"]), data_dir=site.data_dir)
    assert refused.code != 0
    assert "still holds a secret in the solution, line 2 (password option)" in refused.err
    assert "Hunter2" not in refused.err
    audit = json.loads(ok(site.admin("audit", "list", "--action", "kb.publish", "--json")))
    denied = [e for e in audit if e["action"] == "kb.publish" and e["outcome"] == "denied"]
    assert denied, audit
    assert "Hunter2" not in json.dumps(denied)

    fixed = as_bob.request(
        "PATCH",
        f"/kb/articles/{draft['id']}",
        {"solution": f"Run:\nmysql -u app -p{REDACTED} shop\nthen retry the print job.",
         "base_version": edited["version"]},
    )  # fmt: skip
    assert isinstance(fixed, dict)
    published = json.loads(
        ok(secondline("--token", bob, "kb", "publish", str(draft["ref"]), "--json",
                      data_dir=site.data_dir))
    )  # fmt: skip
    assert published["status"] == "published"
