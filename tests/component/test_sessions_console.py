"""The console's terminal WebSocket: origin and principal checks, one-time tickets, a
shell opened from the browser, observers and joiners beside an SSH owner, and slow viewers."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from broker.transcript import transcript_paths
from broker.web.terminal_ws import PATH
from tests.component.test_sessions_harness import WAIT, World, world
from tests.component.test_sessions_shell import open_shell
from tests.support.api import refusals_of

pytestmark = [
    pytest.mark.postgres,
    # broker.agents.tokens (another part, in progress) still calls Result.tuples().
    pytest.mark.filterwarnings("ignore:The Result.tuples:DeprecationWarning"),
]


class Browser:
    """A console terminal as the browser sees it."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.out = bytearray()
        self.controls: list[dict[str, Any]] = []

    async def read_until(self, done: Any) -> None:
        """Read frames until ``done(self)`` holds; fail if the socket closes first."""
        async with asyncio.timeout(WAIT):
            while not done(self):
                msg = await self.ws.receive()
                if msg.type == aiohttp.WSMsgType.BINARY:
                    self.out += msg.data
                elif msg.type == aiohttp.WSMsgType.TEXT:
                    self.controls.append(json.loads(msg.data))
                else:
                    raise AssertionError(f"closed ({self.ws.close_code}): {self.controls}")

    async def read_to_close(self) -> None:
        async with asyncio.timeout(WAIT):
            async for msg in self.ws:
                if msg.type == aiohttp.WSMsgType.BINARY:
                    self.out += msg.data
                elif msg.type == aiohttp.WSMsgType.TEXT:
                    self.controls.append(json.loads(msg.data))

    def states(self) -> list[str]:
        return [c["state"] for c in self.controls if c["type"] == "state"]

    def has_state(self, state: str) -> bool:
        return state in self.states()


def origin(w: World) -> str:
    return w.services.config.public_url


async def mint(w: World, token: str, **body: Any) -> str:
    payload = {"ticket_id": w.ticket, "mode": "open", **body}
    _, data = await w.call("POST", "/sessions/terminal-tickets", payload, token=token, expect=201)
    return str(data["ticket"])


async def connect(w: World, token: str, ticket: str | None) -> Browser:
    ws = await w.client.ws_connect(
        PATH, headers={"Origin": origin(w), "Authorization": f"Bearer {token}"}
    )
    if ticket is not None:
        await ws.send_str(json.dumps({"ticket": ticket}))
    return Browser(ws)


async def test_upgrade_needs_our_origin_and_a_principal(data_dir: Path, tmp_path: Path) -> None:
    """A foreign or missing Origin is refused (403, audited); so is a missing principal."""
    async with world(data_dir, tmp_path) as w:
        for bad in ("https://evil.example", "null", ""):
            headers = {"Authorization": f"Bearer {w.staff_token}"}
            if bad:
                headers["Origin"] = bad
            resp = await w.client.get(PATH, headers=headers)
            assert resp.status == 403
        resp = await w.client.get(PATH, headers={"Origin": origin(w)})
        assert resp.status == 401
        _, events = await w.call("GET", "/audit?limit=50", expect=200)
        assert refusals_of(events, "console.ws_refused") == 3


async def test_browser_opens_a_shell(data_dir: Path, tmp_path: Path) -> None:
    """A terminal ticket opens a shell: state, participants, output, resize, then the end."""
    async with world(data_dir, tmp_path) as w:
        ticket = await mint(w, w.staff_token, cols=90, rows=20)
        browser = await connect(w, w.staff_token, ticket)
        await browser.read_until(lambda b: b.has_state("running"))
        await browser.ws.send_bytes(b"echo web-$((20+1))\n")
        await browser.read_until(lambda b: b"web-21" in b.out)
        await browser.ws.send_str(json.dumps({"type": "resize", "cols": 132, "rows": 43}))
        await browser.ws.send_bytes(b"stty size\n")
        await browser.read_until(lambda b: b"43 132" in b.out)
        await browser.ws.send_bytes(b"exit\n")
        await browser.read_to_close()
        assert browser.states()[-1] == "ended"
        people = [c["list"] for c in browser.controls if c["type"] == "participants"]
        assert people[0] == [{"name": "bob", "role": "owner"}]
        _, sessions = await w.call("GET", f"/sessions?ticket={w.ticket}", expect=200)
        assert sessions[0]["via"] == "web"


async def test_terminal_tickets_are_single_use_and_personal(data_dir: Path, tmp_path: Path) -> None:
    """A used ticket, someone else's ticket or no ticket at all opens nothing."""
    async with world(data_dir, tmp_path) as w:
        _, carol = await w.add_staff("carol", "level2")
        ticket = await mint(w, w.staff_token)
        stolen = await connect(w, carol, ticket)
        await stolen.read_to_close()
        assert stolen.ws.close_code == 4401
        assert "not valid" in stolen.controls[-1]["reason"]
        first = await connect(w, w.staff_token, ticket)
        await first.read_until(lambda b: b.has_state("running"))
        again = await connect(w, w.staff_token, ticket)
        await again.read_to_close()
        assert again.ws.close_code == 4401
        garbage = await w.client.ws_connect(
            PATH, headers={"Origin": origin(w), "Authorization": f"Bearer {w.staff_token}"}
        )
        await garbage.send_str('{"ticket": 1, "extra": true}')
        leftover = Browser(garbage)
        await leftover.read_to_close()
        assert garbage.close_code == 4401
        await first.ws.close()


async def test_minting_checks_input_and_rights(data_dir: Path, tmp_path: Path) -> None:
    """Malformed requests are refused; join and observe need a session of that ticket."""
    async with world(data_dir, tmp_path) as w:
        bad = [
            {"ticket_id": "1042; rm", "mode": "open"},
            {"ticket_id": w.ticket, "mode": "observe"},
            {"ticket_id": w.ticket, "mode": "open", "session": "s-" + "a" * 22},
            {"ticket_id": w.ticket, "mode": "open", "agent": "../x"},
            {"ticket_id": w.ticket, "mode": "open", "cols": 0},
            {"ticket_id": w.ticket, "mode": "shell"},
        ]
        for body in bad:
            status, _ = await w.call(
                "POST", "/sessions/terminal-tickets", body, token=w.staff_token
            )
            assert status in (400, 422), body
        body = {"ticket_id": w.ticket, "mode": "observe", "session": "s-" + "a" * 22}
        await w.call("POST", "/sessions/terminal-tickets", body, token=w.staff_token, expect=404)
        await w.call(
            "POST",
            "/sessions/terminal-tickets",
            {"ticket_id": w.ticket, "mode": "open"},
            expect=403,
        )  # the admin token has no "session" scope


async def test_observer_and_joiner_beside_an_ssh_owner(data_dir: Path, tmp_path: Path) -> None:
    """An observer sees output and cannot type (told once); a level-3 joiner types."""
    async with world(data_dir, tmp_path) as w:
        _, carol = await w.add_staff("carol", "level1")
        _, dave = await w.add_staff("dave", "level3")
        async with await w.ssh() as conn:
            shell = await open_shell(conn)
            shell.type("echo owner-$((1+1))\n")
            await shell.expect(b"owner-2")
            _, live = await w.call("GET", "/sessions?live=1", token=w.staff_token, expect=200)
            sid = live[0]["id"]
            watcher = await connect(w, carol, await mint(w, carol, mode="observe", session=sid))
            await watcher.read_until(lambda b: b.has_state("running"))
            await shell.expect_err(b"carol joined this session (observer)")
            await watcher.ws.send_bytes(b"echo observer-typed\n")
            await watcher.read_until(lambda b: any(c["type"] == "notice" for c in b.controls))
            await watcher.ws.send_bytes(b"echo observer-again\n")
            joiner = await connect(w, dave, await mint(w, dave, mode="join", session=sid))
            await joiner.read_until(lambda b: b.has_state("running"))
            await joiner.ws.send_bytes(b"echo joiner-$((3+3))\n")
            await shell.expect(b"joiner-6")
            await watcher.read_until(lambda b: b"joiner-6" in b.out)
            assert b"observer-typed" not in shell.out
            notices = [c for c in watcher.controls if c["type"] == "notice"]
            assert len(notices) == 1
            assert "observing" in notices[0]["message"]
            level1_join = await connect(w, carol, await mint(w, carol, mode="join", session=sid))
            await level1_join.read_to_close()
            assert "watch sessions but do not type" in level1_join.controls[-1]["reason"]
            shell.type("exit\n")
            assert await shell.finish() == 0
            await watcher.read_to_close()
            assert watcher.states()[-1] == "ended"
        _, detail = await w.call("GET", f"/sessions/{sid}", expect=200)
        roles = {(p["name"], p["role"]) for p in detail["participants"]}
        assert roles == {("bob", "owner"), ("carol", "observer"), ("dave", "joiner")}


async def test_slow_observer_is_cut_off_and_the_owner_goes_on(
    data_dir: Path, tmp_path: Path
) -> None:
    """An observer that stops reading is disconnected with a message; output goes on."""
    async with world(data_dir, tmp_path) as w:
        _, carol = await w.add_staff("carol", "level1")
        async with await w.ssh() as conn:
            shell = await open_shell(conn)
            shell.type("echo go-$((1+1))\n")
            await shell.expect(b"go-2")
            _, live = await w.call("GET", "/sessions?live=1", token=w.staff_token, expect=200)
            sid = live[0]["id"]
            watcher = await connect(w, carol, await mint(w, carol, mode="observe", session=sid))
            await watcher.read_until(lambda b: b.has_state("running"))
            # The watcher stops reading; the owner's client reads everything as it comes.
            shell.type("head -c 80000000 /dev/zero | tr '\\0' x; echo; echo done-$((4+4))\n")
            seen = 0
            tail = b""
            async with asyncio.timeout(WAIT * 3):
                while b"done-8" not in tail:
                    chunk = await shell.process.stdout.read(1 << 20)
                    assert chunk, "the owner's output ended early"
                    seen += len(chunk)
                    tail = (tail + chunk)[-64:]
            assert seen > 80_000_000
            await shell.expect_err(b"carol left this session")
            await watcher.read_to_close()
            assert "could not keep up" in watcher.controls[-1]["reason"]
            shell.type("exit\n")
            assert await shell.finish() == 0


async def test_terminal_replies_are_recorded_as_replies(data_dir: Path, tmp_path: Path) -> None:
    """A browser terminal's answer-back ({"type": "reply"}) reaches the shell and is recorded
    as an `a` event, never as typed input; a "reply" that is no terminal answer is typed
    input; a joiner's or observer's answers are dropped without a notice (only the owner's
    terminal answers for the session)."""
    async with world(data_dir, tmp_path) as w:
        _, dave = await w.add_staff("dave", "level3")
        owner = await connect(w, w.staff_token, await mint(w, w.staff_token))
        await owner.read_until(lambda b: b.has_state("running"))
        _, live = await w.call("GET", "/sessions?live=1", token=w.staff_token, expect=200)
        sid = live[0]["id"]
        joiner = await connect(w, dave, await mint(w, dave, mode="join", session=sid))
        await joiner.read_until(lambda b: b.has_state("running"))
        # `od` shows what reached the shell; the terminal echoes it too (echo is on).
        # Answers are sent once `read` runs (the terminal echoes then; at the prompt the line
        # editor has echo off, and they would be hidden input).
        await owner.ws.send_bytes(
            b"echo reading-$((2+2)); IFS= read -r got; printf '%s' \"$got\" | od -An -c\n"
        )
        await owner.read_until(lambda b: b"reading-4" in b.out)
        for who, data in ((joiner, "\x1b[9;9R"), (owner, "\x1b[12;1R\x1b[?1;2c")):
            await who.ws.send_str(json.dumps({"type": "reply", "data": data}))
        await owner.ws.send_str(json.dumps({"type": "reply", "data": "typed-as-reply"}))
        await owner.ws.send_bytes(b"\n")
        await owner.read_until(lambda b: b"1   R" in b.out and b"y" in b.out.split(b"od")[-1])
        await owner.ws.send_bytes(b"exit\n")
        await owner.read_to_close()
        assert not any(c["type"] == "notice" for c in joiner.controls)
        assert b"9   ;   9" not in owner.out
        cast = transcript_paths(w.services.config.transcripts_dir, sid).cast
        events = [json.loads(line) for line in cast.read_text().splitlines()[1:]]
        replies = "".join(e[2] for e in events if e[1] == "a")
        typed = "".join(e[2] for e in events if e[1] == "i")
        assert replies == "\x1b[12;1R\x1b[?1;2c"
        assert "typed-as-reply" in typed
        assert "\x1b[" not in typed
