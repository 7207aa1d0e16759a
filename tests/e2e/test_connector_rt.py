"""Request Tracker 5 as the ticket system, for real: Debian's RT served by its own
`rt-server` (one per module, tests/support/request_tracker.py), a real `secondline serve`,
a really enrolled agent and the real OpenSSH client.

A ticket created in RT's level-1 queue through RT's API is mirrored into Secondline; level 1
escalates it in RT; a level-2 staff member runs `ssh RT-<n>@broker`; the session's note lands
in RT's ticket history as one comment with both transcripts attached, also when RT was down
for the write-back or the connection was cut after the comment was sent."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.support.broker import BrokerProcess, secondline, start_broker
from tests.support.counting_proxy import CountingProxy
from tests.support.cutting_proxy import CuttingProxy
from tests.support.request_tracker import RequestTracker, RtApi
from tests.support.site import Site, ok, sessions_of, start_agent, ticket_json

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]

CONNECTOR = "rt-acme"
NOTE_KEY = "secondline-session-note:"  # broker.tickets.outbox.note_key


def configure(data_dir: Path, **settings: float) -> None:
    """Set broker settings in the data dir's config file (replacing earlier ones)."""
    path = data_dir / "secondline.toml"
    lines = [line for line in path.read_text().splitlines() if line.split(" = ")[0] not in settings]
    lines += [f"{key} = {value!r}" for key, value in settings.items()]
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def rt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RequestTracker]:
    """One RT for the module: each test adds its own tickets to it."""
    tracker = RequestTracker(tmp_path_factory.mktemp("rt"))
    tracker.prepare()
    tracker.start()
    try:
        yield tracker
    finally:
        tracker.stop()


@pytest.fixture
async def broker(data_dir: Path) -> AsyncIterator[BrokerProcess]:
    """A broker that reads the change feed five times a second and retries notes fast."""
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


def add_connector(site: Site, rt: RequestTracker, url: str | None = None) -> None:
    credential = site.tmp / "rt.token"
    credential.write_text(rt.token + "\n")
    credential.chmod(0o600)
    ok(
        site.admin(
            "connector", "add", CONNECTOR, "--kind", "rt", "--url", url or rt.url,
            "--credential-file", str(credential), "--customer", "acme",
        )
    )  # fmt: skip


def written(kind: str, ref: str, value: str, number: str) -> bytes:
    """The broker's line saying a change made in Secondline reached RT."""
    line = f"connector {CONNECTOR}: {kind} change of {ref} to '{value}' written to RT-{number}"
    return line.encode()


async def mirrored(site: Site, number: str, mark: int) -> str:
    """Wait until RT's ticket ``number`` is mirrored; our ticket's ref."""
    line = await site.broker.wait_for_line(
        rf"connector {CONNECTOR}: RT-{number} mirrored as (T-\d+)".encode(), mark
    )
    found = re.search(rb"(T-\d+)", line.split(b"mirrored as")[1])
    assert found is not None
    return found.group(1).decode()


def session_notes(comments: list[dict[str, object]]) -> list[dict[str, object]]:
    """The comments that are session notes (not a machine link's or a change's)."""
    return [c for c in comments if NOTE_KEY in str(c["subject"])]


async def level2_ticket(site: Site, api: RtApi, subject: str) -> tuple[str, str]:
    """A ticket created in RT's level-1 queue, mirrored, its machine linked by level 1 in
    Secondline (written to RT as a comment), and escalated by level 1 in RT; (RT number,
    our ref)."""
    mark = len(site.broker.output)
    number = await api.create_ticket("Level 1", subject, "eve@example.com")
    ref = await mirrored(site, number, mark)
    lena = ok(site.admin("user", "token", "lena"))
    mark = len(site.broker.output)
    ok(secondline("--token", lena, "ticket", "link", ref, "web01", data_dir=site.data_dir))
    await site.broker.wait_for_line(written("note", ref, "web01", number), mark)
    mark = len(site.broker.output)
    await api.move(number, "Level 2")
    await site.broker.wait_for_line(
        rf"connector {CONNECTOR}: RT-{number} \({ref}\): .*level 1 -> 2".encode(), mark
    )
    return number, ref


async def shell_session(site: Site, user: str) -> None:
    """An interactive session as `ssh -tt USER@broker` running two commands."""
    term = await site.interactive(user)
    term.type("echo rt-$((6*7))\n")
    await term.expect(b"rt-42")
    term.type("false\n")
    term.type("exit 4\n")
    code, _ = await term.finish()
    assert code == 4


async def test_rt_ticket_escalated_in_rt_worked_over_ssh_noted_once(
    site: Site, rt: RequestTracker
) -> None:
    """RT level-1 ticket → mirrored (hostile title cleaned) → escalated in RT → `ssh
    RT-<n>` → one RT comment with the commands, their exit statuses and both attachments;
    the session's assignment and the resolve in Secondline reach RT too."""
    api = rt.api()
    add_connector(site, rt)
    tested = site.admin("connector", "test", CONNECTOR)
    assert tested.code == 0, tested
    assert "level 2 is queue 'Level 2'" in tested.out
    listed = json.loads(ok(site.admin("connector", "list", "--json")))
    assert [(c["name"], c["prefix"]) for c in listed] == [(CONNECTOR, "RT")]
    assert rt.token not in json.dumps(listed)
    await start_agent(site, "web01", "unattended")
    number, ref = await level2_ticket(site, api, "Printer \x1b[31mjammed\u202e <b>now</b>")

    ticket = ticket_json(site, ref)
    assert ticket["level"] == 2
    assert ticket["title"] == "Printer [31mjammed <b>now</b>"
    assert ticket["requester"] == "eve@example.com"
    assert ticket["external"] == {
        "ref": f"RT-{number}",
        "url": f"{rt.url}/Ticket/Display.html?id={number}",
    }
    history = json.dumps(ticket)
    assert "moved in RT by root from queue 'Level 1' to 'Level 2'" in history

    mark = len(site.broker.output)
    await shell_session(site, f"RT-{number}")
    session_id = str(sessions_of(site, ref)[0]["id"])
    await site.broker.wait_for_line(f"session {session_id}: note delivered to {ref}".encode(), mark)
    comments = await api.comments(number)
    # The machine linked in Secondline, then the session's note: each once.
    assert len(comments) == 2, comments
    assert "Machine web01 (agent " in str(comments[0]["text"])
    assert "linked to this ticket in Secondline by lena" in str(comments[0]["text"])
    comment = comments[1]
    assert NOTE_KEY + session_id in str(comment["subject"])
    text = str(comment["text"])
    assert "echo rt-$((6*7))" in text
    assert "[exit 0" in text
    assert "[exit 1" in text
    files = comment["files"]
    assert isinstance(files, dict)
    assert sorted(files) == sorted([f"{session_id}.cast", f"{session_id}.txt"])
    assert b"rt-42" in files[f"{session_id}.cast"]

    # The session gave the ticket to bob; bob resolves it in Secondline: both reach RT.
    mark = len(site.broker.output)
    bob = ok(site.admin("user", "token", "bob"))
    ok(
        secondline(
            "--token", bob, "ticket", "resolve", ref, "--solution", "cleared the spool",
            data_dir=site.data_dir,
        )
    )  # fmt: skip
    await site.broker.wait_for_line(written("status", ref, "resolved", number), mark)
    shown = await api.call("GET", f"/ticket/{number}")
    assert isinstance(shown, dict)
    assert (shown["Status"], shown["Owner"]["id"]) == ("resolved", "bob")
    comments = await api.comments(number)
    assert len(comments) == 3, comments
    assert "Resolved in Secondline by bob" in str(comments[2]["text"])
    assert "cleared the spool" in str(comments[2]["text"])


async def test_rt_down_for_the_write_back_then_delivered_once(
    site: Site, rt: RequestTracker
) -> None:
    """rt-server stopped: a session still opens on the mirrored ticket, its note waits
    (the connector is marked unhealthy); rt-server started again: the note arrives once."""
    api = rt.api()
    add_connector(site, rt)
    await start_agent(site, "web01", "unattended")
    number, ref = await level2_ticket(site, api, "Disk full")
    mark = len(site.broker.output)
    rt.stop()
    try:
        await site.broker.wait_for_line(
            rf"connector {CONNECTOR} is unhealthy: Request Tracker .* cannot be reached".encode(),
            mark,
        )
        listed = json.loads(ok(site.admin("connector", "list", "--json")))
        assert listed[0]["healthy"] is False
        result = await site.ssh(f"RT-{number}", "echo while-rt-is-down; exit 3")
        assert (result.code, result.out) == (3, "while-rt-is-down\n"), result.err
        session_id = str(sessions_of(site, ref)[0]["id"])
        await site.broker.wait_for_line(
            rf"session {session_id}: note for {ref} not delivered yet \(attempt 2".encode(), mark
        )
    finally:
        rt.start()
    await site.broker.wait_for_line(f"session {session_id}: note delivered to {ref}".encode(), mark)
    comments = session_notes(await api.comments(number))
    assert len(comments) == 1, comments
    assert "while-rt-is-down" in str(comments[0]["text"])
    await site.broker.wait_for_line(f"connector {CONNECTOR} is healthy again".encode(), mark)


async def test_connection_cut_after_the_comment_was_sent_adds_it_once(
    site: Site, rt: RequestTracker
) -> None:
    """The comment request reaches RT, the answer is lost: the next try finds the comment
    in the ticket's history and does not send it again."""
    api = rt.api()
    async with CuttingProxy("127.0.0.1", rt.port, b"/comment HTTP/1.1") as proxy:
        add_connector(site, rt, url=f"http://127.0.0.1:{proxy.port}")
        await start_agent(site, "web01", "unattended")
        number, ref = await level2_ticket(site, api, "VPN drops")
        proxy.armed = True
        mark = len(site.broker.output)
        result = await site.ssh(f"RT-{number}", "echo cut-after-send")
        assert result.code == 0, result.err
        session_id = str(sessions_of(site, ref)[0]["id"])
        await site.broker.wait_for_line(
            f"session {session_id}: note delivered to {ref}".encode(), mark
        )
        assert proxy.cut.is_set()
    comments = session_notes(await api.comments(number))
    assert len(comments) == 1, comments
    failed = f"session {session_id}: note for {ref} not delivered yet (attempt 1".encode()
    assert any(failed in line for line in site.broker.output[mark:])
    found_again = f"RT-{number} holds the note {NOTE_KEY}{session_id} already".encode()
    assert any(found_again in line for line in site.broker.output[mark:])


async def test_escalated_in_secondline_is_escalated_in_rt_once(
    site: Site, rt: RequestTracker
) -> None:
    """Level 1 escalates a mirrored ticket in Secondline: RT's ticket moves to the level-2
    queue with a comment giving who and why; the move coming back through RT's change feed
    is no second escalation here."""
    api = rt.api()
    add_connector(site, rt)
    mark = len(site.broker.output)
    number = await api.create_ticket("Level 1", "Mail bounces")
    ref = await mirrored(site, number, mark)
    lena = ok(site.admin("user", "token", "lena"))
    mark = len(site.broker.output)
    ok(
        secondline(
            "--token", lena, "ticket", "escalate", ref, "--to", "2",
            "--reason", "needs the mail server's logs", data_dir=site.data_dir,
        )
    )  # fmt: skip
    await site.broker.wait_for_line(written("level", ref, "Level 2", number), mark)
    await site.broker.wait_for_line(
        rf"connector {CONNECTOR}: RT-{number} \({ref}\): queue 'Level 2'".encode(), mark
    )
    shown = await api.call("GET", f"/ticket/{number}")
    assert isinstance(shown, dict)
    queue = await api.call("GET", f"/queue/{shown['Queue']['id']}")
    assert isinstance(queue, dict)
    assert queue["Name"] == "Level 2"
    comments = await api.comments(number)
    assert len(comments) == 1, comments
    assert "Escalated in Secondline by lena from level 1 to level 2" in str(comments[0]["text"])
    assert "needs the mail server's logs" in str(comments[0]["text"])
    ticket = ticket_json(site, ref)
    assert ticket["level"] == 2
    history = ticket["history"]
    assert isinstance(history, list)
    assert len(history) == 1, history


async def test_wrong_token_or_missing_queue_is_named_and_marks_unhealthy(
    site: Site, rt: RequestTracker
) -> None:
    """`connector test` names what is missing (a refused token; a queue that does not exist)
    and exits non-zero; `connector list` shows the connector unhealthy with the reason; the
    token never appears in what the broker prints or logs."""
    wrong = site.tmp / "wrong.token"
    wrong.write_text("1-14-00000000000000000000000000000000\n")
    ok(
        site.admin(
            "connector", "add", "rt-wrong", "--kind", "rt", "--url", rt.url,
            "--credential-file", str(wrong), "--customer", "acme", "--prefix", "RTW",
        )
    )  # fmt: skip
    tested = site.admin("connector", "test", "rt-wrong")
    assert tested.code == 1, tested
    assert "the token is refused" in tested.out
    right = site.tmp / "rt.token"
    right.write_text(rt.token + "\n")
    ok(
        site.admin(
            "connector", "add", "rt-noq", "--kind", "rt", "--url", rt.url,
            "--credential-file", str(right), "--customer", "acme", "--prefix", "RTN",
            "--levels", "1=Level 1,2=Level 2,3=Engineering",
        )
    )  # fmt: skip
    tested = site.admin("connector", "test", "rt-noq")
    assert tested.code == 1, tested
    assert "ok       level 2 is queue 'Level 2'" in tested.out
    assert "MISSING  queue 'Engineering' for level 3 is missing" in tested.out
    listed = {c["name"]: c for c in json.loads(ok(site.admin("connector", "list", "--json")))}
    assert listed["rt-wrong"]["healthy"] is False
    assert "refused" in str(listed["rt-wrong"]["health"])
    assert listed["rt-noq"]["healthy"] is False
    assert "Engineering" in str(listed["rt-noq"]["health"])
    printed = b"".join(site.broker.output).decode(errors="replace")
    assert rt.token not in printed
    assert "1-14-0000000000" not in printed


async def test_merged_in_rt_closes_the_mirror_tells_the_session_and_notes_the_target(
    site: Site, rt: RequestTracker
) -> None:
    """RT merges the ticket a session runs on into another: the mirrored ticket is closed,
    the people in the session are told, and its note becomes a comment on the ticket it
    was merged into."""
    api = rt.api()
    add_connector(site, rt)
    await start_agent(site, "web01", "unattended")
    number, ref = await level2_ticket(site, api, "Scanner offline")
    target = await api.create_ticket("Level 2", "Scanners of the second floor")
    term = await site.interactive(f"RT-{number}")
    term.type("echo before-the-merge\n")
    await term.expect(b"before-the-merge")
    mark = len(site.broker.output)
    await rt.merge(number, target)
    told = f"told that RT-{number} was merged into RT-{target}"
    await site.broker.wait_for_line(told.encode(), mark)
    term.type("exit 0\n")
    code, err = await term.finish()
    assert code == 0
    assert f"RT-{number} was merged into RT-{target} in the ticket system" in err
    assert f"its note goes to RT-{target}" in err
    assert ticket_json(site, ref)["status"] == "closed"
    session_id = str(sessions_of(site, ref)[0]["id"])
    await site.broker.wait_for_line(f"session {session_id}: note delivered to {ref}".encode(), mark)
    comments = session_notes(await api.comments(target))
    assert len(comments) == 1, comments
    assert "before-the-merge" in str(comments[0]["text"])


# What this proves is between the broker and RT; the mirror's part in the database is tested
# on both backends in tests/component/test_connector_mirror.py. One backend saves CI a run.
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_a_connector_of_all_customers_takes_ours_from_the_customer_field(
    site: Site, rt: RequestTracker
) -> None:
    """Without --customer the RT field `Customer` names ours: acme's ticket is mirrored as
    acme's; a ticket naming an unknown or hostile customer is refused with a clear line,
    audited once and nothing of it stored; corrected in RT, it is mirrored then."""
    api = rt.api()
    credential = site.tmp / "rt.token"
    credential.write_text(rt.token + "\n")
    ok(
        site.admin(
            "connector", "add", "rt-all", "--kind", "rt", "--url", rt.url,
            "--credential-file", str(credential), "--prefix", "RTA",
        )
    )  # fmt: skip
    listed = json.loads(ok(site.admin("connector", "list", "--json")))
    assert (listed[0]["customer"], listed[0]["customer_field"]) == (None, "Customer")
    mark = len(site.broker.output)
    # Titles of this run: the module's RT keeps the tickets of the other backend's run.
    tag = secrets.token_hex(4)
    ours = await api.create_ticket("Level 1", f"Mail {tag}", fields={"Customer": "acme"})
    unknown = await api.create_ticket("Level 1", f"Who {tag}", fields={"Customer": "globex"})
    hostile = await api.create_ticket(
        "Level 1",
        f"Hostile {tag}",
        fields={"Customer": "acme\x1b[2J\u202e'; DROP TABLE tickets;--"},
    )
    line = await site.broker.wait_for_line(
        rf"connector rt-all: RTA-{ours} mirrored as (T-\d+)".encode(), mark
    )
    ref = line.decode().rsplit(" ", 1)[1].strip()
    assert ticket_json(site, ref)["customer"] == "acme"
    refused = "connector rt-all: RTA-{} not mirrored: its field 'Customer' names {}"
    for number, shown in [(unknown, "'globex'"), (hostile, '"acme[2J\'; DROP TABLE tickets;--"')]:
        await site.broker.wait_for_line(re.escape(refused.format(number, shown)).encode(), mark)
    events = json.loads(ok(site.admin("audit", "list", "--limit", "200", "--json")))
    refusals = [e for e in events if e["action"] == "connector.ticket_refused"]
    # Once each (the open tickets of earlier tests, which name no customer, are refused too).
    targets = [e["target"] for e in refusals]
    assert (targets.count(f"RTA-{unknown}"), targets.count(f"RTA-{hostile}")) == (1, 1), targets
    assert all(e["outcome"] == "denied" for e in refusals)
    tickets = json.dumps(json.loads(ok(site.admin("ticket", "list", "--json"))))
    assert f"Who {tag}" not in tickets
    assert f"Hostile {tag}" not in tickets

    # Corrected in RT: the change comes through the feed and the ticket is mirrored.
    mark = len(site.broker.output)
    await api.set_fields(unknown, {"Customer": "acme"})
    await site.broker.wait_for_line(rf"connector rt-all: RTA-{unknown} mirrored as".encode(), mark)


# What this proves is between the broker and RT; the mirror's part in the database is tested
# on both backends in tests/component/test_connector_mirror.py. One backend saves CI a run.
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_a_huge_ticket_is_mirrored_and_written_to_without_downloading_it(
    site: Site, rt: RequestTracker
) -> None:
    """A ticket of 10,000 comments, the last with a 50 MB file, is mirrored and escalated
    in Secondline through a counting proxy: the broker reads the ticket and searches its
    history in RT (no history listing, no comment, no attachment fetched), writes one
    comment and the move, and receives a few kilobytes."""
    api = rt.api()
    number = await api.create_ticket("Level 1", "Huge", "eve@example.com")
    await asyncio.to_thread(rt.add_history, number, 10_000, 50 << 20)
    async with CountingProxy(rt.url) as proxy:
        mark = len(site.broker.output)
        add_connector(site, rt, url=proxy.url)
        line = await site.broker.wait_for_line(
            rf"connector {CONNECTOR}: RT-{number} mirrored as (T-\d+)".encode(), mark
        )
        ref = line.decode().rsplit(" ", 1)[1].strip()
        lena = ok(site.admin("user", "token", "lena"))
        mark = len(site.broker.output)
        ok(
            secondline(
                "--token", lena, "ticket", "escalate", ref, "--to", "2",
                "--reason", "needs the core dump read", data_dir=site.data_dir,
            )
        )  # fmt: skip
        # Written, then read back through the feed: every request of it went by the proxy.
        await site.broker.wait_for_line(written("level", ref, "Level 2", number), mark)
        await site.broker.wait_for_line(
            rf"connector {CONNECTOR}: RT-{number} \({ref}\): queue 'Level 2'".encode(), mark
        )
    paths = {s.path.split("?")[0] for s in proxy.seen}
    assert not [p for p in paths if "/history" in p or "/attachment" in p], paths
    assert not [p for p in paths if p.startswith("/REST/2.0/transaction/")], paths
    assert f"/REST/2.0/ticket/{number}/comment" in paths
    # Never the 50 MB, nor the 10,000 comments (their ids alone would be over 1 MB).
    assert proxy.received < 512 << 10, proxy.received
    found = await api.call(
        "POST",
        "/transactions?fields=Data",
        [
            {"field": "ObjectId", "value": number},
            {"field": "Type", "value": "Comment"},
            {"field": "Data", "operator": "LIKE", "value": "secondline-change:"},
        ],
    )
    assert isinstance(found, dict)
    assert found["count"] == 1, found
