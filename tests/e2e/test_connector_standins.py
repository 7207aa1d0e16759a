"""Zammad and Znuny as the ticket system, against their stand-ins (tests/support/
zammad_standin.py, znuny_standin.py: HTTP servers on loopback that follow the published
API documentation), with a real `secondline serve`, a really enrolled agent and the real
OpenSSH client: the flow of the Request Tracker test, for each kind.

A ticket created in the level-1 group (Zammad) or queue (Znuny) is mirrored; moved to level
2 there, it is escalated here; a level-2 staff member runs `ssh ZM-<number>` / `ZN-…`; the
note lands once as an internal note with both transcripts attached, also through 429s, an
outage of the system, and a connection cut after the note was sent."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.broker import BrokerProcess, secondline, start_broker
from tests.support.cutting_proxy import CuttingProxy
from tests.support.site import Site, ok, sessions_of, start_agent, ticket_json
from tests.support.standin_http import StandIn
from tests.support.zammad_standin import ZammadStandIn
from tests.support.znuny_standin import BASE, ZnunyStandIn

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]

NOTE_KEY = "secondline-session-note:"  # broker.sessions.store.note_key
HOSTILE_TITLE = "Printer \x1b[31mjammed\u202e <b>now</b>"


@dataclass(frozen=True)
class Note:
    subject: str
    text: str
    files: dict[str, bytes]


class System:
    """One stand-in as the test sees it: how people work in it, and what it holds."""

    kind = ""
    prefix = ""
    places = ("", "", "")
    what = ""  # "group" or "queue", as `connector test` says
    name = ""  # how the connector names it in errors
    credential = ""
    standin: StandIn

    def url(self, port: int | None = None) -> str:
        return f"http://127.0.0.1:{port or self.standin.port}"

    def create(self, place: str, title: str) -> str:
        raise NotImplementedError

    def move(self, number: str, place: str) -> str:
        """Move the ticket as a person there; who the mirror will name."""
        raise NotImplementedError

    def notes(self, number: str) -> list[Note]:
        raise NotImplementedError

    def place(self, number: str) -> str:
        raise NotImplementedError


class Zammad(System):
    kind, prefix, what, name = "zammad", "ZM", "group", "Zammad"
    places = ("Users", "2nd Level", "3rd Level")

    def __init__(self) -> None:
        self.standin = self.zammad = ZammadStandIn()
        self.credential = self.zammad.token
        self.zammad.add_agent("bob")

    def create(self, place: str, title: str) -> str:
        return self.zammad.create_ticket(place, title, customer="eve@example.com")

    def move(self, number: str, place: str) -> str:
        self.zammad.move(number, place, by="anna@example.com")
        return "anna@example.com"

    def notes(self, number: str) -> list[Note]:
        return [
            Note(a.subject, a.body, {n: d for _, n, _, d in a.attachments})
            for a in self.zammad.notes(number)
            if a.internal
        ]

    def place(self, number: str) -> str:
        return self.zammad.by_number(number).group


class Znuny(System):
    kind, prefix, what, name = "znuny", "ZN", "queue", "Znuny"
    places = ("Raw", "2nd Level", "3rd Level")

    def __init__(self) -> None:
        self.standin = self.znuny = ZnunyStandIn()
        self.credential = f"{self.znuny.login}:{self.znuny.password}"

    def url(self, port: int | None = None) -> str:
        return super().url(port) + BASE

    def create(self, place: str, title: str) -> str:
        return self.znuny.create_ticket(place, title, customer_user="eve@example.com")

    def move(self, number: str, place: str) -> str:
        self.znuny.move(number, place, by="anna")
        return f"agent #{self.znuny.agents['anna'].id}"

    def notes(self, number: str) -> list[Note]:
        return [
            Note(a.subject, a.body, {n: d for n, _, d in a.attachments})
            for a in self.znuny.notes(number)
        ]

    def place(self, number: str) -> str:
        return self.znuny.by_number(number).queue


@pytest.fixture(params=["zammad", "znuny"])
async def system(request: pytest.FixtureRequest) -> AsyncIterator[System]:
    made: System = Zammad() if request.param == "zammad" else Znuny()
    await made.standin.start()
    try:
        yield made
    finally:
        await made.standin.close()


def configure(data_dir: Path, **settings: float) -> None:
    """Set broker settings in the data dir's config file (replacing earlier ones)."""
    path = data_dir / "secondline.toml"
    lines = [line for line in path.read_text().splitlines() if line.split(" = ")[0] not in settings]
    lines += [f"{key} = {value!r}" for key, value in settings.items()]
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
async def broker(data_dir: Path) -> AsyncIterator[BrokerProcess]:
    """A broker that reads the change feeds five times a second and retries notes fast."""
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


def connector_name(system: System) -> str:
    return f"{system.kind}-acme"


def add_connector(
    site: Site, system: System, *, url: str | None = None, credential: str | None = None,
    name: str | None = None, prefix: str | None = None,
) -> str:  # fmt: skip
    name = name or connector_name(system)
    path = site.tmp / f"{name}.credential"
    path.write_text((credential or system.credential) + "\n")
    path.chmod(0o600)
    args = [
        "connector", "add", name, "--kind", system.kind, "--url", url or system.url(),
        "--credential-file", str(path), "--customer", "acme",
    ]  # fmt: skip
    if prefix:
        args += ["--prefix", prefix]
    ok(site.admin(*args))
    return name


async def mirrored(site: Site, system: System, number: str, mark: int) -> str:
    """Wait until the system's ticket ``number`` is mirrored; our ticket's ref."""
    pattern = rf"connector {connector_name(system)}: {system.prefix}-{number} mirrored as (T-\d+)"
    line = await site.broker.wait_for_line(pattern.encode(), mark)
    found = re.search(rb"(T-\d+)", line.split(b"mirrored as")[1])
    assert found is not None
    return found.group(1).decode()


def session_notes(system: System, number: str) -> list[Note]:
    """The ticket's internal notes that are session notes (not a machine link's or a
    change's)."""
    return [n for n in system.notes(number) if NOTE_KEY in n.subject]


async def level2_ticket(site: Site, system: System, title: str) -> tuple[str, str, str]:
    """A ticket created in the level-1 place, mirrored, its machine linked by level 1 in
    Secondline (written there as an internal note), and moved to the level-2 place over
    there; (number, our ref, mover)."""
    mark = len(site.broker.output)
    number = system.create(system.places[0], title)
    ref = await mirrored(site, system, number, mark)
    lena = ok(site.admin("user", "token", "lena"))
    mark = len(site.broker.output)
    ok(secondline("--token", lena, "ticket", "link", ref, "web01", data_dir=site.data_dir))
    linked = (
        f"connector {connector_name(system)}: note change of {ref} to 'web01' written to "
        f"{system.prefix}-{number}"
    )
    await site.broker.wait_for_line(linked.encode(), mark)
    mark = len(site.broker.output)
    mover = system.move(number, system.places[1])
    moved = rf"connector {connector_name(system)}: {system.prefix}-{number} \({ref}\): "
    await site.broker.wait_for_line((moved + ".*level 1 -> 2").encode(), mark)
    return number, ref, mover


async def test_ticket_escalated_there_worked_over_ssh_noted_once(
    site: Site, system: System
) -> None:
    """Level-1 ticket there → mirrored (hostile title cleaned) → escalated there → `ssh
    ZM-<n>` / `ZN-<n>` through two 429 answers → one internal note with the commands, their
    exit statuses and both attachments."""
    name = add_connector(site, system)
    tested = site.admin("connector", "test", name)
    assert tested.code == 0, tested
    assert f"level 2 is {system.what} '{system.places[1]}'" in tested.out
    listed = json.loads(ok(site.admin("connector", "list", "--json")))
    assert [(c["name"], c["prefix"], c["healthy"]) for c in listed] == [(name, system.prefix, True)]
    assert system.credential not in json.dumps(listed)
    await start_agent(site, "web01", "unattended")
    number, ref, mover = await level2_ticket(site, system, HOSTILE_TITLE)

    ticket = ticket_json(site, ref)
    assert ticket["level"] == 2
    assert ticket["title"] == "Printer [31mjammed <b>now</b>"
    assert ticket["requester"] == "eve@example.com"
    external = ticket["external"]
    assert isinstance(external, dict)
    assert external["ref"] == f"{system.prefix}-{number}"
    assert str(external["url"]).startswith(system.url().split("/otrs/")[0])
    assert (
        f"moved in {system.prefix} by {mover} from queue '{system.places[0]}' "
        f"to '{system.places[1]}'"
    ) in json.dumps(ticket)

    mark = len(site.broker.output)
    system.standin.rate_limited = 2
    term = await site.interactive(f"{system.prefix}-{number}")
    term.type("echo zz-$((6*7))\n")
    await term.expect(b"zz-42")
    term.type("false\n")
    term.type("exit 4\n")
    code, _ = await term.finish()
    assert code == 4
    session_id = str(sessions_of(site, ref)[0]["id"])
    await site.broker.wait_for_line(f"session {session_id}: note delivered to {ref}".encode(), mark)
    assert system.standin.after_429.is_set()
    notes = system.notes(number)
    # The machine linked in Secondline, then the session's note: each once.
    assert len(notes) == 2, notes
    assert "Machine web01 (agent " in notes[0].text
    assert "linked to this ticket in Secondline by lena" in notes[0].text
    note = notes[1]
    assert NOTE_KEY + session_id in note.subject
    assert "echo zz-$((6*7))" in note.text
    assert "[exit 0" in note.text
    assert "[exit 1" in note.text
    assert sorted(note.files) == sorted([f"{session_id}.cast", f"{session_id}.txt"])
    assert b"zz-42" in note.files[f"{session_id}.cast"]


async def test_escalated_in_secondline_is_escalated_there_once(site: Site, system: System) -> None:
    """Level 1 escalates a mirrored ticket in Secondline: the ticket moves to the level-2
    place with a note giving who and why; the move coming back through the change feed is
    no second escalation here."""
    name = add_connector(site, system)
    mark = len(site.broker.output)
    number = system.create(system.places[0], "Mail bounces")
    ref = await mirrored(site, system, number, mark)
    lena = ok(site.admin("user", "token", "lena"))
    mark = len(site.broker.output)
    ok(
        secondline(
            "--token", lena, "ticket", "escalate", ref, "--to", "2",
            "--reason", "needs the mail server's logs", data_dir=site.data_dir,
        )
    )  # fmt: skip
    written = (
        f"connector {name}: level change of {ref} to '{system.places[1]}' written to "
        f"{system.prefix}-{number}"
    )
    await site.broker.wait_for_line(written.encode(), mark)
    back = rf"connector {name}: {system.prefix}-{number} \({ref}\): queue '{system.places[1]}'"
    await site.broker.wait_for_line(back.encode(), mark)
    assert system.place(number) == system.places[1]
    notes = system.notes(number)
    assert len(notes) == 1, notes
    assert "Escalated in Secondline by lena from level 1 to level 2" in notes[0].text
    assert "needs the mail server's logs" in notes[0].text
    ticket = ticket_json(site, ref)
    assert ticket["level"] == 2
    history = ticket["history"]
    assert isinstance(history, list)
    assert len(history) == 1, history


async def test_system_down_for_the_write_back_then_delivered_once(
    site: Site, system: System
) -> None:
    """The stand-in stopped: a session still opens on the mirrored ticket, its note waits
    and the connector is unhealthy; started again on the same port: the note arrives once
    and the connector is healthy again."""
    name = add_connector(site, system)
    await start_agent(site, "web01", "unattended")
    number, ref, _ = await level2_ticket(site, system, "Disk full")
    mark = len(site.broker.output)
    await system.standin.stop()
    try:
        await site.broker.wait_for_line(
            rf"connector {name} is unhealthy: {system.name} at .* cannot be reached".encode(),
            mark,
        )
        listed = json.loads(ok(site.admin("connector", "list", "--json")))
        assert listed[0]["healthy"] is False
        result = await site.ssh(f"{system.prefix}-{number}", "echo while-down; exit 3")
        assert (result.code, result.out) == (3, "while-down\n"), result.err
        session_id = str(sessions_of(site, ref)[0]["id"])
        await site.broker.wait_for_line(
            rf"session {session_id}: note for {ref} not delivered yet \(attempt 2".encode(), mark
        )
    finally:
        await system.standin.start()
    await site.broker.wait_for_line(f"session {session_id}: note delivered to {ref}".encode(), mark)
    notes = session_notes(system, number)
    assert len(notes) == 1, notes
    assert "while-down" in notes[0].text
    await site.broker.wait_for_line(f"connector {name} is healthy again".encode(), mark)


async def test_connection_cut_after_the_note_was_sent_adds_it_once(
    site: Site, system: System
) -> None:
    """The note reaches the system and its answer is lost: the next try finds the note in
    the ticket's history (Zammad: its article list; Znuny: TicketHistoryGet) and does not
    send it again."""
    async with CuttingProxy("127.0.0.1", system.standin.port, NOTE_KEY.encode()) as proxy:
        add_connector(site, system, url=system.url(proxy.port))
        await start_agent(site, "web01", "unattended")
        number, ref, _ = await level2_ticket(site, system, "VPN drops")
        proxy.armed = True
        mark = len(site.broker.output)
        result = await site.ssh(f"{system.prefix}-{number}", "echo cut-after-send")
        assert result.code == 0, result.err
        session_id = str(sessions_of(site, ref)[0]["id"])
        await site.broker.wait_for_line(
            f"session {session_id}: note delivered to {ref}".encode(), mark
        )
        assert proxy.cut.is_set()
    assert len(session_notes(system, number)) == 1
    failed = f"session {session_id}: note for {ref} not delivered yet (attempt 1".encode()
    assert any(failed in line for line in site.broker.output[mark:])
    found_again = f"{system.prefix}-{number} holds the note {NOTE_KEY}{session_id} already"
    assert any(found_again.encode() in line for line in site.broker.output[mark:])


async def test_wrong_credential_or_missing_place_is_named_and_marks_unhealthy(
    site: Site, system: System
) -> None:
    """A refused credential and a level place that is missing are named by `connector test`
    (exit 1) and shown by `connector list` as unhealthy with the reason; the credential
    never appears in what the broker prints."""
    wrong = "0" * 32 if system.kind == "zammad" else f"{system.credential.split(':')[0]}:nope"
    add_connector(site, system, credential=wrong, name=f"{system.kind}-wrong", prefix="WR")
    tested = site.admin("connector", "test", f"{system.kind}-wrong")
    assert tested.code == 1, tested
    assert "refused" in tested.out
    levels = f"1={system.places[0]},2={system.places[1]},3=Engineering"
    path = site.tmp / "right.credential"
    path.write_text(system.credential + "\n")
    ok(
        site.admin(
            "connector", "add", f"{system.kind}-noq", "--kind", system.kind,
            "--url", system.url(), "--credential-file", str(path), "--customer", "acme",
            "--prefix", "NQ", "--levels", levels,
        )
    )  # fmt: skip
    tested = site.admin("connector", "test", f"{system.kind}-noq")
    listed = {c["name"]: c for c in json.loads(ok(site.admin("connector", "list", "--json")))}
    assert listed[f"{system.kind}-wrong"]["healthy"] is False
    assert "refused" in str(listed[f"{system.kind}-wrong"]["health"])
    if system.kind == "zammad":
        # Zammad lists the user's groups: a missing one is named.
        assert tested.code == 1, tested
        assert "MISSING  group 'Engineering' for level 3 is missing" in tested.out
        assert listed["zammad-noq"]["healthy"] is False
        assert "Engineering" in str(listed["zammad-noq"]["health"])
    else:
        # Znuny's search cannot tell a missing queue from an empty one: it is reported,
        # not failed.
        assert tested.code == 0, tested
        assert "level 3 is queue 'Engineering' (no ticket there yet" in tested.out
    printed = b"".join(site.broker.output).decode(errors="replace")
    assert system.credential not in printed
    assert wrong not in printed


async def test_zammad_group_without_write_access_is_named_until_granted(site: Site) -> None:
    """Secondline's agent may read the level-2 group but not write to it: the note is
    refused (403), the connector is unhealthy and `connector list` names the group; once
    full access is granted the waiting note arrives once and the connector is healthy."""
    system = Zammad()
    await system.standin.start()
    try:
        name = add_connector(site, system)
        await start_agent(site, "web01", "unattended")
        number, ref, _ = await level2_ticket(site, system, "Read only")
        with system.zammad.lock:
            system.zammad.agents[system.credential].groups["2nd Level"] = ["read"]
        mark = len(site.broker.output)
        result = await site.ssh(f"ZM-{number}", "echo refused-first")
        assert result.code == 0, result.err
        session_id = str(sessions_of(site, ref)[0]["id"])
        await site.broker.wait_for_line(
            rf"session {session_id}: note for {ref} not delivered yet \(attempt 1".encode(), mark
        )
        listed = json.loads(ok(site.admin("connector", "list", "--json")))
        assert listed[0]["healthy"] is False
        assert "403" in str(listed[0]["health"]) or "2nd Level" in str(listed[0]["health"])
        assert session_notes(system, number) == []
        with system.zammad.lock:
            system.zammad.agents[system.credential].groups["2nd Level"] = ["full"]
        await site.broker.wait_for_line(
            f"session {session_id}: note delivered to {ref}".encode(), mark
        )
        assert len(session_notes(system, number)) == 1
        await site.broker.wait_for_line(f"connector {name} is healthy again".encode(), mark)
    finally:
        await system.standin.close()
