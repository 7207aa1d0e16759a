"""The signed webhook connector, for real: a real `secondline serve`, a really enrolled agent,
the real OpenSSH client, and a receiver that is its own process verifying every signature
(tests/support/webhook_receiver.py).

Inbound, a ticket system's signed events create and escalate a mirrored ticket; refused
are bad signatures, old ones (replay window), ones from a clock too far ahead, replayed
event ids and oversized bodies, each audited. Outbound, a session on the ticket and an
escalation in Secondline become signed `session.started`, `session.ended` (with the note
and attachment links the receiver fetches with a token) and `ticket.escalated` events,
retried with backoff and taken once."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from broker.config import load_config
from tests.support.broker import BrokerProcess, secondline, start_broker
from tests.support.processes import communicate
from tests.support.site import Site, ok, sessions_of, start_agent, ticket_json
from tests.support.webhook import Receiver, post_event, signature, ticket_event

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]

CONNECTOR = "wh-acme"
ROOT = Path(__file__).resolve().parents[2]
HOSTILE_TITLE = "Printer \x1b[31mjammed\u202e <b>now</b>"


def configure(data_dir: Path, **settings: float) -> None:
    path = data_dir / "secondline.toml"
    lines = [line for line in path.read_text().splitlines() if line.split(" = ")[0] not in settings]
    lines += [f"{key} = {value!r}" for key, value in settings.items()]
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
async def broker(data_dir: Path) -> AsyncIterator[BrokerProcess]:
    """A broker whose sync sends queued events five times a second and retries fast."""
    configure(
        data_dir,
        connector_poll_seconds=0.2,
        ticket_retry_first_seconds=0.2,
        ticket_retry_max_seconds=1.0,
    )
    proc = await start_broker(data_dir)
    try:
        yield proc
    finally:
        await proc.stop()


class Desk:
    """The helpdesk's side: the secret, the receiver, and signed events to the broker."""

    def __init__(self, site: Site, receiver: Receiver, secret: str) -> None:
        self.site = site
        self.receiver = receiver
        self.secret = secret
        self.cafile = load_config(site.data_dir, env={}).tls_cert_path

    @property
    def inbound(self) -> str:
        return f"{self.site.broker.url}/webhooks/{CONNECTOR}"

    async def send(
        self, body: bytes, *, header: str | None = None, url: str | None = None
    ) -> tuple[int, dict[str, object]]:
        signed = signature(self.secret, body) if header is None else header
        return await asyncio.to_thread(post_event, url or self.inbound, self.cafile, body, signed)


@pytest.fixture
async def desk(site: Site) -> AsyncIterator[Desk]:
    secret = secrets.token_hex(32)
    secret_file = site.tmp / "webhook.secret"
    secret_file.write_text(secret + "\n")
    secret_file.chmod(0o600)
    reader = site.tmp / "reader.token"
    reader.write_text(ok(site.admin("user", "token", "bob")) + "\n")
    cafile = load_config(site.data_dir, env={}).tls_cert_path
    receiver = await Receiver.start(
        secret_file, "--fail-first", "1", "--token-file", str(reader), "--cafile", str(cafile)
    )
    try:
        ok(
            site.admin(
                "connector", "add", CONNECTOR, "--kind", "webhook", "--url", receiver.url,
                "--credential-file", str(secret_file), "--customer", "acme",
            )
        )  # fmt: skip
        yield Desk(site, receiver, secret)
    finally:
        await receiver.stop()


async def created(desk: Desk, number: str, title: str = "Printer jammed") -> str:
    """A ticket the system sends in its level-1 queue, mirrored; our ref."""
    status, answer = await desk.send(
        ticket_event(
            f"evt-{number}-new", "ticket.created", id=number, title=title, queue="Level 1",
            status="new", requester="eve@example.com", url=f"https://desk.example.com/t/{number}",
        )
    )  # fmt: skip
    assert status == 200, answer
    assert answer["external"] == f"WH-{number}"
    return str(answer["ticket"])


async def level2_ticket(site: Site, desk: Desk, number: str) -> str:
    """Created in level 1, its machine linked by level 1, moved to level 2 by the system."""
    ref = await created(desk, number)
    lena = ok(site.admin("user", "token", "lena"))
    ok(secondline("--token", lena, "ticket", "link", ref, "web01", data_dir=site.data_dir))
    status, answer = await desk.send(
        ticket_event(
            f"evt-{number}-l2", "ticket.updated", id=number, title="Printer jammed",
            queue="Level 2", status="open",
        )
    )  # fmt: skip
    assert status == 200, answer
    return ref


async def test_signed_events_both_ways_through_a_session_and_an_escalation(
    site: Site, desk: Desk
) -> None:
    """Inbound: created (hostile title cleaned) and moved to level 2 by the system. Outbound:
    the machine linked gives ticket.machine_linked; `ssh WH-<n>` gives session.started
    (first try answered 503, taken on the retry with the same id) and session.ended with
    the note and both attachments, which the receiver fetches with a token; an escalation
    in Secondline gives ticket.escalated; each once."""
    tested = site.admin("connector", "test", CONNECTOR)
    assert tested.code == 0, tested
    assert "verified a signed ping" in tested.out
    secret_file = (site.tmp / "webhook.secret").read_text().strip()
    listed = json.dumps(json.loads(ok(site.admin("connector", "list", "--json"))))
    assert secret_file not in listed
    assert "WH" in listed

    ref = await created(desk, "4711", HOSTILE_TITLE)
    ticket = ticket_json(site, ref)
    assert ticket["title"] == "Printer [31mjammed <b>now</b>"
    assert ticket["external"] == {"ref": "WH-4711", "url": "https://desk.example.com/t/4711"}
    await start_agent(site, "web01", "unattended")
    lena = ok(site.admin("user", "token", "lena"))
    ok(secondline("--token", lena, "ticket", "link", ref, "web01", data_dir=site.data_dir))
    linked = (await desk.receiver.event("ticket.machine_linked"))["event"]
    assert isinstance(linked, dict)
    assert linked["ticket"] == {"ref": ref, "external_id": "4711", "external_ref": "WH-4711"}
    assert (linked["data"]["agent"], linked["data"]["by"]) == ("web01", "lena")
    assert linked["data"]["agent_id"]
    status, answer = await desk.send(
        ticket_event(
            "evt-4711-moved", "ticket.updated", id="4711", title=HOSTILE_TITLE, queue="Level 2",
            status="open", requester="eve@example.com", changed_by="lena",
            url="https://desk.example.com/t/4711",
        )
    )  # fmt: skip
    assert status == 200, answer
    assert "level 1 -> 2" in str(answer["result"])

    term = await site.interactive("WH-4711")
    term.type("echo wh-$((6*7))\n")
    await term.expect(b"wh-42")
    term.type("false\n")
    term.type("exit 4\n")
    code, _ = await term.finish()
    assert code == 4
    session_id = str(sessions_of(site, ref)[0]["id"])

    started = await desk.receiver.event("session.started")
    assert started["tries"] == 2  # the first try was answered 503
    body = started["event"]
    assert isinstance(body, dict)
    assert body["ticket"] == {"ref": ref, "external_id": "4711", "external_ref": "WH-4711"}
    assert body["data"]["session"] == session_id
    assert body["data"]["staff"] == "bob"

    ended = (await desk.receiver.event("session.ended"))["event"]
    assert isinstance(ended, dict)
    assert ended["id"] == f"secondline-session-note:{session_id}"
    note = str(ended["data"]["note"])
    assert "echo wh-$((6*7))" in note
    assert "[exit 1" in note
    names = sorted(str(a["name"]) for a in ended["data"]["attachments"])
    assert names == sorted([f"{session_id}.cast", f"{session_id}.txt"])
    for name in names:
        assert f"fetched {name} SHA256-OK" in [await desk.receiver.wait_for(f"fetched {name}")]

    bob = ok(site.admin("user", "token", "bob"))
    ok(
        secondline(
            "--token", bob, "ticket", "escalate", ref, "--to", "3",
            "--reason", "needs the vendor", data_dir=site.data_dir,
        )
    )  # fmt: skip
    escalated = (await desk.receiver.event("ticket.escalated"))["event"]
    assert isinstance(escalated, dict)
    assert escalated["data"] == {
        "from_level": 2,
        "to_level": 3,
        "reason": "needs the vendor",
        "by": "bob",
    }
    ids = [str(t["id"]) for t in desk.receiver.taken()]
    assert len(ids) == len(set(ids)), ids
    assert not any(line.startswith("refused") for line in desk.receiver.lines)


async def test_an_event_whose_answer_was_lost_is_taken_once(site: Site, desk: Desk) -> None:
    """The receiver takes the first event (the machine linked) and closes the
    connection unanswered; the retry carries the same id and body, the receiver answers 409,
    and the broker counts it delivered: the receiver took it once."""
    await desk.receiver.stop()
    receiver = await Receiver.start(site.tmp / "webhook.secret", "--drop-first")
    desk.receiver = receiver
    try:
        ok(site.admin("connector", "remove", CONNECTOR))
        ok(
            site.admin(
                "connector", "add", CONNECTOR, "--kind", "webhook", "--url", receiver.url,
                "--credential-file", str(site.tmp / "webhook.secret"), "--customer", "acme",
            )
        )  # fmt: skip
        await start_agent(site, "web01", "unattended")
        ref = await level2_ticket(site, desk, "5000")
        result = await site.ssh(ref, "echo answer-lost")
        assert result.code == 0, result.err
        dropped = (await receiver.wait_for("dropped ")).split()[1]
        await receiver.wait_for(f"duplicate {dropped}")
        await receiver.event("session.ended")
        ids = [str(t["id"]) for t in receiver.taken()]
        assert ids.count(dropped) == 1
        assert len(ids) == len(set(ids)), ids
    finally:
        await receiver.stop()


async def test_bad_signatures_replays_skew_and_size_are_refused_and_audited(
    site: Site, desk: Desk
) -> None:
    """Each refusal answers a code and a sentence saying what to fix; nothing is mirrored
    by a refused request; the refusals are in the audit log."""
    body = ticket_event(
        "evt-6000", "ticket.created", id="6000", title="x", queue="Level 1", status="new"
    )
    now = int(time.time())
    cases = [
        (signature("another-secret-" * 3, body), 401, "signature_mismatch", "another secret"),
        (signature(desk.secret, body, now - 400), 401, "signature_expired", "replay window"),
        (signature(desk.secret, body, now + 120), 401, "clock_skew", "sender's clock"),
        ("", 401, "signature_missing", "Secondline-Signature"),
    ]
    for header, status, code, says in cases:
        got, answer = await desk.send(body, header=header)
        assert got == status, answer
        error = answer["error"]
        assert isinstance(error, dict)
        assert (error["code"], says in str(error["message"])) == (code, True), error
    big = ticket_event("evt-big", "ticket.created", id="6001", title="x" * 70_000)
    got, answer = await desk.send(big)
    assert got == 413, answer
    got, answer = await desk.send(body, url=f"{site.broker.url}/webhooks/nobody")
    assert got == 404, answer
    tickets = json.loads(ok(site.admin("ticket", "list", "--json")))
    assert tickets == []

    ref = await created(desk, "6000")
    got, answer = await desk.send(
        ticket_event(
            "evt-6000-new", "ticket.created", id="6000", title="x", queue="Level 1", status="new"
        )
    )
    assert got == 409, answer
    assert answer["error"]["code"] == "duplicate_event"  # type: ignore[index]
    got, answer = await desk.send(ticket_event("evt-bad", "ticket.created", id="6002"))
    assert got == 400, answer
    assert "ticket.title" in str(answer)
    got, answer = await desk.send(
        ticket_event("evt-q", "ticket.created", id="6003", title="y", queue="Sales", status="new")
    )
    assert got == 422, answer
    assert "1=Level 1,2=Level 2,3=Level 3" in str(answer)
    assert [t["id"] for t in json.loads(ok(site.admin("ticket", "list", "--json")))] == [ref]

    events = json.loads(ok(site.admin("audit", "list", "--limit", "200", "--json")))
    own = [e for e in events if e["action"] == "webhook.refused"]
    assert sorted(e["details"]["code"] for e in own) == [
        "duplicate_event",
        "invalid_event",
        "queue_not_mapped",
    ]
    summaries = [e for e in events if e["action"] == "anonymous.refused"]
    kinds: dict[str, int] = {}
    for summary in summaries:
        for kind, count in summary["details"]["kinds"].items():
            kinds[kind] = kinds.get(kind, 0) + count
    for code in (
        "signature_mismatch",
        "signature_expired",
        "clock_skew",
        "signature_missing",
        "too_large",
        "connector_not_found",
    ):
        assert kinds.get(f"webhook.refused: {code}") == 1, kinds
    printed = b"".join(site.broker.output).decode(errors="replace")
    assert desk.secret not in printed


async def test_a_ticket_deleted_or_merged_over_there_closes_and_tells_its_session(
    site: Site, desk: Desk
) -> None:
    """ticket.merged while a session runs on it: the ticket is closed here, the people in
    the session are told, and the session's note goes to the merge target."""
    await start_agent(site, "web01", "unattended")
    ref = await level2_ticket(site, desk, "7000")
    term = await site.interactive("WH-7000")
    term.type("echo before-merge\n")
    await term.expect(b"before-merge")
    mark = len(site.broker.output)
    got, answer = await desk.send(
        ticket_event("evt-7000-merged", "ticket.merged", id="7000", merged_into="7001")
    )
    assert got == 200, answer
    await site.broker.wait_for_line(b"session .*: told that WH-7000 was merged into WH-7001", mark)
    term.type("exit 0\n")
    code, err = await term.finish()
    assert code == 0
    assert "WH-7000 was merged into WH-7001 in the ticket system" in err
    assert f"{ref} is closed" in err
    assert ticket_json(site, ref)["status"] == "closed"
    ended = (await desk.receiver.event("session.ended"))["event"]
    assert isinstance(ended, dict)
    assert ended["ticket"]["external_ref"] == "WH-7001"
    got, answer = await desk.send(ticket_event("evt-7002-gone", "ticket.deleted", id="7002"))
    assert (got, answer["ticket"]) == (200, None)


async def test_the_inbound_example_of_the_docs_runs_as_written(site: Site, desk: Desk) -> None:
    """docs/connectors.md's curl and openssl lines sign an event the broker takes: the
    ticket they name is mirrored."""
    text = (ROOT / "docs" / "connectors.md").read_text()
    found = re.search(r"<!-- webhook-inbound -->\s*```sh\n(.*?)```", text, re.DOTALL)
    assert found is not None
    script = (
        found.group(1)
        .replace("broker.example.com:8443", f"127.0.0.1:{site.broker.https_port}")
        .replace("tls.crt", str(desk.cafile))
    )
    work = site.tmp / "desk"
    work.mkdir()
    (work / "webhook.secret").write_text(desk.secret + "\n")
    proc = await asyncio.create_subprocess_exec(
        "bash", "-euo", "pipefail", "-c", script, cwd=work,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await communicate(proc, 30)
    assert proc.returncode == 0, err
    answer = json.loads(out)
    assert answer["external"] == "WH-4711", answer
    ticket = ticket_json(site, str(answer["ticket"]))
    assert (ticket["title"], ticket["level"]) == ("Printer jammed", 1)


async def test_a_receiver_with_another_secret_is_named_and_marks_unhealthy(
    site: Site, desk: Desk
) -> None:
    """`connector test` against a receiver that holds another secret says the signature was
    refused and exits non-zero; `connector list` shows the connector unhealthy with why."""
    other = site.tmp / "other.secret"
    other.write_text(secrets.token_hex(32) + "\n")
    receiver = await Receiver.start(other)
    try:
        ok(
            site.admin(
                "connector", "add", "wh-other", "--kind", "webhook", "--url", receiver.url,
                "--credential-file", str(site.tmp / "webhook.secret"), "--prefix", "WHO",
            )
        )  # fmt: skip
        tested = site.admin("connector", "test", "wh-other")
        assert tested.code == 1, tested
        assert "refused the signature" in tested.out
        assert "same secret" in tested.out
        await receiver.wait_for("refused 401 mismatch")
        listed = {c["name"]: c for c in json.loads(ok(site.admin("connector", "list", "--json")))}
        assert listed["wh-other"]["healthy"] is False
        assert "refused the signature" in str(listed["wh-other"]["health"])
    finally:
        await receiver.stop()
    short = site.tmp / "short.secret"
    short.write_text("too-short\n")
    refused = site.admin(
        "connector", "add", "wh-short", "--kind", "webhook", "--url", receiver.url,
        "--credential-file", str(short), "--prefix", "WHS",
    )  # fmt: skip
    assert refused.code != 0
    assert "openssl rand -hex 32" in refused.err
