"""Invitations and handing control over in a live session, driven from console terminals."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.component.test_sessions_console import Browser, connect, mint
from tests.component.test_sessions_harness import world

pytestmark = [
    pytest.mark.postgres,
    # broker.agents.tokens (another part, in progress) still calls Result.tuples().
    pytest.mark.filterwarnings("ignore:The Result.tuples:DeprecationWarning"),
]


def owner_is(name: str) -> Callable[[Browser], bool]:
    """A reader condition: the last participant list shows ``name`` as the owner."""

    def check(b: Browser) -> bool:
        lists = [c["list"] for c in b.controls if c["type"] == "participants"]
        return bool(lists) and {"name": name, "role": "owner"} in lists[-1]

    return check


async def test_invite_join_hand_over_and_resize(data_dir: Path, tmp_path: Path) -> None:
    """An invited level-2 colleague joins and types, takes control and drives the PTY size."""
    async with world(data_dir, tmp_path) as w:
        _, carol = await w.add_staff("carol", "level2")
        owner = await connect(w, w.staff_token, await mint(w, w.staff_token, cols=80, rows=24))
        await owner.read_until(lambda b: b.has_state("running"))
        _, live = await w.call("GET", "/sessions?live=1", token=w.staff_token, expect=200)
        sid = live[0]["id"]
        early = await connect(w, carol, await mint(w, carol, mode="join", session=sid))
        await early.read_to_close()
        assert "invite you" in early.controls[-1]["reason"]
        await w.call("POST", f"/sessions/{sid}/invite", {"user": "carol"}, token=carol, expect=403)
        _, state = await w.call(
            "POST", f"/sessions/{sid}/invite", {"user": "carol"}, token=w.staff_token, expect=200
        )
        assert state["invited"] == ["carol"]
        joiner = await connect(w, carol, await mint(w, carol, mode="join", session=sid))
        await joiner.read_until(lambda b: b.has_state("running"))
        await joiner.ws.send_bytes(b"echo carol-$((2+2))\n")
        await owner.read_until(lambda b: b"carol-4" in b.out)
        for body, status in (({"to": "bob"}, 403), ({"to": "dave"}, 409), ({"to": "x y"}, 422)):
            token = carol if status == 403 else w.staff_token
            await w.call("POST", f"/sessions/{sid}/control", body, token=token, expect=status)
        _, state = await w.call(
            "POST", f"/sessions/{sid}/control", {"to": "carol"}, token=w.staff_token, expect=200
        )
        assert {"name": "carol", "role": "owner"} in state["participants"]
        await joiner.read_until(owner_is("carol"))
        await owner.read_until(owner_is("carol"))
        # The old owner's resize no longer reaches the PTY; it still types.
        await owner.ws.send_str(json.dumps({"type": "resize", "cols": 70, "rows": 15}))
        await owner.ws.send_bytes(b"stty size; echo old-$((3+3))\n")
        await joiner.read_until(lambda b: b"old-6" in b.out)
        assert b"15 70" not in joiner.out
        await joiner.ws.send_str(json.dumps({"type": "resize", "cols": 132, "rows": 43}))
        await joiner.ws.send_bytes(b"stty size\n")
        await owner.read_until(lambda b: b"43 132" in b.out)
        await joiner.ws.send_bytes(b"exit\n")
        await owner.read_to_close()
        _, events = await w.call("GET", "/audit?limit=50&action=session.control", expect=200)
        outcomes = sorted(e["outcome"] for e in events)
        assert outcomes == ["denied", "denied", "ok"]
        _, transcript = await w.call("GET", f"/sessions/{sid}/transcript", expect=200)
        assert "invited: carol" in transcript["content"]
        assert "control handed from bob to carol" in transcript["content"]
