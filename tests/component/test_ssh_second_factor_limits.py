"""Bad input at the SSH gateway's code prompt (docs/identity.md), with asyncssh as the
client: wrong codes sent quickly lock the account out of the prompt through the console's
throttle (even the right code is then refused), a client that keeps opening the prompt is
cut off, and a prompt held open ends at the login timeout; each audited."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncssh
import pytest
from sqlalchemy import update

from broker.auth import totp
from broker.db.models_staff import User
from tests.component.test_sessions_harness import WAIT, World, world

pytestmark = pytest.mark.postgres

EVERY_SESSION = {"SECONDLINE_SSH_SECOND_FACTOR": "every-session"}


class CodeTyper(asyncssh.SSHClient):
    """Answers each code prompt with the next of ``answers``; ``hold`` never answers."""

    def __init__(self, answers: Sequence[str], hold: bool = False) -> None:
        self.answers = list(answers)
        self.hold = hold
        self.prompts = 0

    def kbdint_auth_requested(self) -> str:
        return ""

    async def kbdint_challenge_received(
        self, name: str, instructions: str, lang: str, prompts: Sequence[tuple[str, bool]]
    ) -> list[str] | None:
        if not prompts:
            return []
        self.prompts += 1
        if self.hold:
            await asyncio.Event().wait()  # the person walked away from the prompt
        return [self.answers.pop(0)] if self.answers else None


async def enrol(w: World) -> str:
    secret = totp.new_secret()
    async with w.services.db() as db, db.begin():
        await db.execute(update(User).where(User.name == "bob").values(totp_secret=secret))
    return secret


async def sign_in(w: World, client: CodeTyper) -> bool:
    try:
        conn = await asyncssh.connect(
            "127.0.0.1",
            w.gateway_port,
            username=w.ticket,
            client_keys=[w.staff_key],
            known_hosts=([w.services.keys.ssh_host_key.convert_to_public()], [], []),
            config=None,
            agent_path=None,
            client_factory=lambda: client,
            login_timeout=WAIT,
        )
    except (asyncssh.PermissionDenied, asyncssh.ConnectionLost, asyncssh.DisconnectError):
        return False
    conn.close()
    await conn.wait_closed()
    return True


async def audit(w: World, action: str) -> list[dict[str, Any]]:
    _, events = await w.call("GET", f"/audit?limit=500&action={action}", expect=200)
    return list(events)


async def test_wrong_codes_quickly_lock_the_prompt_even_for_the_right_code(
    data_dir: Path, tmp_path: Path
) -> None:
    async with world(data_dir, tmp_path, env=EVERY_SESSION) as w:
        secret = await enrol(w)
        right = totp.code_at(secret, time.time())
        wrong = "000000" if right != "000000" else "111111"
        # Ten wrong codes, three per connection as fast as the client can type them.
        clients = [CodeTyper([wrong] * 3), CodeTyper([wrong] * 3), CodeTyper([wrong] * 3)]
        clients.append(CodeTyper([wrong]))
        for client in clients:
            assert not await sign_in(w, client)
        assert not await sign_in(w, CodeTyper([right]))

        async def audited() -> bool:
            return len(await audit(w, "ssh.code_throttled")) == 1

        await w.wait_for(audited, "the throttled code audited")
        refused = await audit(w, "ssh.code_refused")
        assert len(refused) == 10
        assert {e["actor"] for e in refused} == {"bob"}
        # The console's throttle: bob's console sign-in is locked too (one throttle).
        assert w.services.login_throttle.retry_after("user:bob", time.monotonic()) > 0


async def test_a_client_reopening_the_prompt_is_cut_off(data_dir: Path, tmp_path: Path) -> None:
    async with world(data_dir, tmp_path, env=EVERY_SESSION) as w:
        await enrol(w)
        # Empty answers: asyncssh asks again for as long as the server offers the prompt.
        client = CodeTyper([""] * 10)
        assert not await sign_in(w, client)
        assert client.prompts == 3

        async def audited() -> bool:
            failed = await audit(w, "ssh.auth_failed")
            return any("code_prompts_exceeded" in str(e["details"]) for e in failed)

        await w.wait_for(audited, "the cut-off audited")


async def test_a_held_prompt_ends_at_the_login_timeout(data_dir: Path, tmp_path: Path) -> None:
    env = {**EVERY_SESSION, "SECONDLINE_SSH_LOGIN_TIMEOUT_SECONDS": "1"}
    async with world(data_dir, tmp_path, env=env) as w:
        await enrol(w)
        client = CodeTyper([], hold=True)
        assert not await sign_in(w, client)
        assert client.prompts == 1

        async def audited() -> bool:
            failed = await audit(w, "ssh.auth_failed")
            return any("code_not_given" in str(e["details"]) for e in failed)

        await w.wait_for(audited, "the unanswered prompt audited")
