"""The SSH gateway's second factor through the real OpenSSH client on a real terminal: after
the key, the code prompt (keyboard-interactive); a good code opens the shell, a wrong or
reused one is refused and audited; under ``per-shift`` the key then needs no code until the
window ends, and without a terminal (BatchMode) the refusal says how to get a window."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from broker.auth import totp
from broker.demo import ConsoleBrowser
from tests.support.broker import BrokerProcess, cli_env, init_dir, secondline
from tests.support.database import Backend
from tests.support.pty_terminal import PtyTerminal
from tests.support.site import Site, keygen, new_ticket, ok, start_agent, stop_agent

PASSWORD = "bob's long password"
PROMPT = b"Authenticator code: "
HINT = "Allow my key for this shift"


@pytest.fixture
def data_dir(backend: Backend, tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    """A data dir with the policy the test names (the product default when it names none)."""
    policy = getattr(request, "param", "per-shift")
    return init_dir(tmp_path / "data", backend, ssh_second_factor=policy)


class Staff:
    """bob's authenticator: a code for each step not yet used, as his app shows them."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.step = totp.step_at(time.time())  # the enrolment spent this step

    def next_code(self) -> str:
        self.step = max(totp.step_at(time.time()), self.step + 1)
        return totp.code_at(self.secret, self.step * totp.STEP_SECONDS)


@pytest.fixture
async def site(broker: BrokerProcess, tmp_path: Path) -> AsyncIterator[Site]:
    """acme, lena (level 1) and bob (level 2, SSH key, password), agent web01 running, a
    ticket escalated to level 2 and assigned to bob."""
    d = broker.data_dir
    key = keygen(tmp_path / "bob_ed25519")
    ok(secondline("customer", "add", "acme", data_dir=d))
    ok(secondline("user", "add", "lena", "--role", "level1", "--customer", "acme", data_dir=d))
    ok(
        secondline(
            "user", "add", "bob", "--role", "level2", "--customer", "acme",
            "--ssh-key", f"{key}.pub", "--password-stdin", data_dir=d, stdin=PASSWORD,
        )
    )  # fmt: skip
    host_key = (d / "keys" / "ssh_host_ed25519.pub").read_text().split()
    s = Site(broker, tmp_path, key, tmp_path / "known_hosts")
    s.known_hosts.write_text(f"[127.0.0.1]:{s.ssh_port} {host_key[0]} {host_key[1]}\n")
    await start_agent(s, "web01", "unattended")
    s.ticket = new_ticket(s, "web01")
    try:
        yield s
    finally:
        await stop_agent(s)


@pytest.fixture
def bob(site: Site) -> Staff:
    """bob sets up his authenticator in the console, as a person does."""
    browser = ConsoleBrowser(site.broker.url, site.data_dir / "keys" / "tls.crt")
    return Staff(browser.enrol_totp("bob", PASSWORD))


@pytest.fixture
async def terminals() -> AsyncIterator[list[PtyTerminal]]:
    opened: list[PtyTerminal] = []
    yield opened
    for terminal in opened:
        terminal.close()


def on_terminal(site: Site, opened: list[PtyTerminal]) -> PtyTerminal:
    """`ssh` to the ticket's machine as a person runs it: on a terminal, prompts allowed."""
    argv = site.ssh_argv(site.ticket)
    argv[argv.index("BatchMode=yes")] = "BatchMode=no"
    terminal = PtyTerminal.spawn(argv, cli_env(site.tmp))
    opened.append(terminal)
    return terminal


async def shell_works(terminal: PtyTerminal, start: int) -> None:
    end = await terminal.expect(b"$ ", b"# ", start=start)  # the shell's prompt
    terminal.type("echo second-factor-$((6*7))\r")
    await terminal.expect(b"second-factor-42", start=end)
    terminal.type("exit\r")
    assert await terminal.finish() == 0


def audit(site: Site) -> list[dict[str, object]]:
    events = json.loads(ok(site.admin("audit", "list", "--json")))
    assert isinstance(events, list)
    return events


async def test_code_prompt_then_per_shift_window(
    site: Site, bob: Staff, terminals: list[PtyTerminal]
) -> None:
    """per-shift (the product default): without a terminal the key alone is refused and told
    how to get a window; on a terminal the code prompt comes, a good code opens the shell
    and the key's window; a second `ssh`, even in BatchMode, then asks no code."""
    batch = await site.ssh(site.ticket, "echo no")
    assert batch.code == 255
    assert HINT in batch.err, batch.err
    assert "Permission denied (keyboard-interactive)" in batch.err, batch.err

    terminal = on_terminal(site, terminals)
    after = await terminal.expect(PROMPT)
    terminal.type(bob.next_code() + "\r")
    await shell_works(terminal, after)

    again = await site.ssh(site.ticket, "echo within-the-shift")
    assert again.code == 0, again.err
    assert again.out.strip() == "within-the-shift"

    events = audit(site)
    bobs = [(e["action"], e["outcome"]) for e in events if e["actor"] == "bob"]
    assert ("ssh.code_accepted", "ok") in bobs
    assert ("ssh.shift_window_used", "ok") in bobs
    accepted = next(e for e in events if e["action"] == "ssh.code_accepted")
    assert isinstance(accepted["details"], dict)
    assert accepted["details"]["policy"] == "per-shift"
    assert "shift_window_until" in accepted["details"]
    refused = [e for e in events if e["action"] == "ssh.auth_failed"]
    assert any("code_not_given" in str(e["details"]) for e in refused), refused


@pytest.mark.parametrize("data_dir", ["every-session"], indirect=True)
async def test_wrong_and_reused_codes_refused_and_audited(
    site: Site, bob: Staff, terminals: list[PtyTerminal]
) -> None:
    """every-session: a wrong code is refused and asked again, the good one opens the shell;
    the next connection asks again, and the code already used is refused; after three
    prompts the client is told no and exits."""
    code = bob.next_code()
    wrong = "000000" if code != "000000" else "111111"
    first = on_terminal(site, terminals)
    mark = await first.expect(PROMPT)
    first.type(wrong + "\r")
    mark = await first.expect(PROMPT, start=mark)  # asked again
    first.type(code + "\r")
    await shell_works(first, mark)

    second = on_terminal(site, terminals)
    mark = await second.expect(PROMPT)  # every session asks
    for answer in (code, wrong):  # the code used already, then a wrong one: asked again
        second.type(answer + "\r")
        mark = await second.expect(PROMPT, start=mark)
    second.type(wrong + "\r")  # the third prompt's answer: no more prompts
    await second.expect(b"Permission denied", start=mark)
    assert await second.finish() == 255

    batch = await site.ssh(site.ticket, "echo no")
    assert batch.code == 255
    assert HINT in batch.err, batch.err

    events = audit(site)
    bobs = [(e["action"], e["outcome"]) for e in events if e["actor"] == "bob"]
    assert bobs.count(("ssh.code_refused", "denied")) == 4, bobs
    assert bobs.count(("ssh.code_accepted", "ok")) == 1, bobs
    assert ("ssh.shift_window_used", "ok") not in bobs
