"""The end user is asked about every joiner of a session on an attended agent, even after
approving its owner (broker app, real agent SSH server, asyncssh owner, console joiner)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.component.test_sessions_console import connect, mint
from tests.component.test_sessions_harness import world
from tests.component.test_sessions_shell import open_shell, wait_state

pytestmark = [
    pytest.mark.postgres,
    # broker.agents.tokens (another part, in progress) still calls Result.tuples().
    pytest.mark.filterwarnings("ignore:The Result.tuples:DeprecationWarning"),
]


async def test_a_joiner_is_asked_about_after_the_owner_was_approved(
    data_dir: Path, tmp_path: Path
) -> None:
    """The owner's approval does not answer for a level-3 joiner: the end user is asked
    about the joiner by name and role; their denial refuses the joiner with the reason and
    leaves the owner's consent on the session row as it was; an observer nobody answers is
    refused as timed out."""
    async with world(data_dir, tmp_path, attended=True) as w:
        assert w.agent is not None
        _, dave = await w.add_staff("dave", "level3")
        async with await w.ssh() as conn:
            shell = await open_shell(conn)
            owner_request = await w.agent.next_request()
            assert owner_request.env.asked_role == "owner"
            w.agent.consent.decide(owner_request.key, approved=True, by="alice")
            shell.type("echo owner-$((1+1))\n")
            await shell.expect(b"owner-2")
            sid = owner_request.env.session
            joiner = await connect(w, dave, await mint(w, dave, mode="join", session=sid))
            await joiner.read_until(lambda b: b.has_state("waiting_consent"))
            request = await w.agent.next_request()
            assert (request.env.session, request.env.staff) == (sid, "dave")
            assert request.env.asked_role == "participant"
            w.agent.consent.decide(request.key, approved=False, by="alice")
            await joiner.read_to_close()
            assert joiner.controls[-1]["code"] == "consent_denied"
            assert "denied your request to join session" in joiner.controls[-1]["reason"]
            assert not joiner.has_state("running")
            # An observer nobody answers is refused when the agent's timeout runs out.
            _, tina = await w.add_staff("tina", "level1")
            w.agent.consent.book.timeout = 0.3
            watcher = await connect(w, tina, await mint(w, tina, mode="observe", session=sid))
            await watcher.read_until(lambda b: b.has_state("waiting_consent"))
            assert (await w.agent.next_request()).env.asked_role == "observer"
            await watcher.read_to_close()
            assert watcher.controls[-1]["code"] == "consent_timeout"
            assert "request to observe session" in watcher.controls[-1]["reason"]
            shell.type("exit\n")
            assert await shell.finish() == 0
        detail = await wait_state(w, w.ticket, "ended")
        assert (detail["consent"], detail["consent_by"]) == ("approved", "alice")
        _, transcript = await w.call("GET", f"/sessions/{sid}/transcript", expect=200)
        assert "consent denied for dave (participant) by alice" in transcript["content"]
        assert "consent timeout for tina (observer)" in transcript["content"]
