"""No secret anywhere: staff type secrets at the hidden prompts of `read -s`,
`stty -echo; read`, Python's `getpass`, `sudo -S` and `ssh-keygen -p`, through the real
OpenSSH client running on a PTY of its own (as on a staff member's desk), into a real broker
and a really enrolled agent. Afterwards the secret is in none of: the `.cast`, the `.txt`,
the ticket's note, the ticket's attachments, the broker's log, a knowledge-base draft.

Each secret is typed only once its program has turned echo off: `read -s`, `getpass`,
`sudo` and `ssh-keygen` turn it off before they print their prompt, so the prompt on screen
proves it; for `stty -echo; read`, whose prompt comes *before* `stty` and which prints
nothing after it (the case an in-band echo marker could not see), the shell writes to a FIFO
the test reads once `stty -echo` has returned; it also prints the in-band echo marker
older agents sent (`ESC]6973;echo;on`), which must change nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pty
import ssl
import urllib.request
from collections.abc import AsyncIterator

import pytest

from broker.cli.client import ApiClient, Connection
from broker.config import load_config
from tests.support.broker import cli_env, secondline
from tests.support.site import (
    WAIT,
    Site,
    new_ticket,
    ok,
    sessions_of,
    start_agent,
    ticket_json,
    wait_note,
)

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]

# One secret per prompt, so a leak names its prompt; none is a substring of another.
SECRETS = {
    "read -s": "Kx7-readS-Qw9z",
    "stty -echo": "Pm4-sttyEcho-Lr2v",
    "getpass": "Vn8-getPass-Hy3k",
    "sudo -S": "Wd5-sudoS-Tc6j",
    "ssh-keygen -p": "Bq2-sshKeygen-Zf7m",
}


class DeskTerminal:
    """`ssh` on a PTY of its own: it puts that terminal in raw mode and asks the gateway for
    a PTY, as it does for a person at a terminal. Enter is a carriage return."""

    def __init__(self, proc: asyncio.subprocess.Process, master: int) -> None:
        self.proc = proc
        self.master = master
        self.out = bytearray()
        self._data = asyncio.Event()
        self._eof = False
        asyncio.get_running_loop().add_reader(master, self._readable)

    def _readable(self) -> None:
        try:
            chunk = os.read(self.master, 65536)
        except OSError:  # EIO: the client closed its terminal
            chunk = b""
        if chunk:
            self.out += chunk
        else:
            self._eof = True
            asyncio.get_running_loop().remove_reader(self.master)
        self._data.set()

    def type(self, text: str) -> None:
        os.write(self.master, text.replace("\n", "\r").encode())

    async def expect(self, pattern: bytes, start: int = 0) -> int:
        """Wait until ``pattern`` shows at or after ``start``; return where it ends."""
        try:
            async with asyncio.timeout(WAIT):
                while (found := self.out.find(pattern, start)) < 0:
                    if self._eof:
                        raise AssertionError(f"EOF before {pattern!r}: {self.tail()!r}")
                    self._data.clear()
                    await self._data.wait()
        except TimeoutError:
            raise AssertionError(f"no {pattern!r} in time: {self.tail()!r}") from None
        return found + len(pattern)

    def tail(self) -> bytes:
        return bytes(self.out)[-600:]

    async def finish(self) -> int:
        async with asyncio.timeout(WAIT):
            code = await self.proc.wait()
            while not self._eof:
                self._data.clear()
                await self._data.wait()
        return code


@contextlib.asynccontextmanager
async def desk_ssh(site: Site, user: str) -> AsyncIterator[DeskTerminal]:
    master, slave = pty.openpty()
    try:
        proc = await asyncio.create_subprocess_exec(
            *site.ssh_argv(user),
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=cli_env(site.tmp),
            start_new_session=True,
        )
    finally:
        os.close(slave)
    terminal = DeskTerminal(proc, master)
    try:
        yield terminal
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        with contextlib.suppress(ValueError):
            asyncio.get_running_loop().remove_reader(master)
        os.close(master)


def download(site: Site, token: str, path: str) -> bytes:
    context = ssl.create_default_context(
        cafile=str(load_config(site.data_dir, env={}).tls_cert_path)
    )
    request = urllib.request.Request(site.broker.url + path)  # noqa: S310 - https only
    request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=WAIT, context=context) as response:  # noqa: S310
        return bytes(response.read())


async def test_no_secret_typed_at_a_hidden_prompt_is_kept_anywhere(site: Site) -> None:
    """Five hidden prompts, five secrets, six places none of them may be."""
    await start_agent(site, "web01", "unattended")
    ref = new_ticket(site, "web01")
    work = site.tmp / "work"
    work.mkdir()
    gate = work / "gate"
    os.mkfifo(gate)
    key = work / "key"
    async with desk_ssh(site, ref) as term:
        at = await term.expect(b"\x1b]133;B\x07")

        term.type('read -s -p "ReadS$((1)): " a; echo "readS=${#a}"\n')
        at = await term.expect(b"ReadS1: ", at)
        term.type(SECRETS["read -s"] + "\n")
        at = await term.expect(b"readS=14", at)

        term.type(
            f"printf 'Passphrase: '; stty -echo; printf '\\033]6973;echo;on\\007'; "
            f"echo >{gate}; read b; stty echo; "
            'echo; echo "stty=${#b}"\n'
        )
        async with asyncio.timeout(WAIT):
            await asyncio.to_thread(gate.read_text)
        term.type(SECRETS["stty -echo"] + "\n")
        at = await term.expect(b"stty=17", at)

        term.type(
            'python3 -c \'import getpass; s = getpass.getpass("PyPass%d: " % 3); '
            'print("getpass=%d" % len(s))\'\n'
        )
        at = await term.expect(b"PyPass3: ", at)
        term.type(SECRETS["getpass"] + "\n")
        at = await term.expect(b"getpass=16", at)

        # As root sudo asks nothing; as nobody it asks for nobody's password with echo off,
        # reads it, and refuses it (nobody has none): the hidden prompt is exercised for real.
        # Typed after the prompt shows, so it never runs ahead of the shell's echo.
        at = await term.expect(b"\x1b]133;B\x07", at)
        term.type("su -s /bin/sh nobody -c \"sudo -S -k -p 'SudoPass%%: ' true\"\n")
        for _ in range(3):  # sudo's tries: "Sorry, try again." twice, then it gives up
            at = await term.expect(b"SudoPass%: ", at)
            term.type(SECRETS["sudo -S"] + "\n")
        at = await term.expect(b"incorrect password attempt", at)

        term.type(f"ssh-keygen -q -t ed25519 -N '' -C demo -f {key} && echo key-made\n")
        at = await term.expect(b"key-made", at)
        term.type(f"ssh-keygen -p -f {key}\n")
        at = await term.expect(b"Enter new passphrase", at)
        at = await term.expect(b": ", at)
        term.type(SECRETS["ssh-keygen -p"] + "\n")
        at = await term.expect(b"Enter same passphrase again: ", at)
        term.type(SECRETS["ssh-keygen -p"] + "\n")
        at = await term.expect(b"with the new passphrase", at)

        term.type("exit 0\n")
        mark = len(site.broker.output)
        assert await term.finish() == 0
    screen = bytes(term.out)

    session_id = str(sessions_of(site, ref)[0]["id"])
    note = await wait_note(site, ref, session_id, mark)
    attachments = note["attachments"]
    assert isinstance(attachments, list)
    assert sorted(attachments) == sorted([f"{session_id}.cast", f"{session_id}.txt"])

    bob = ok(site.admin("user", "token", "bob"))
    places: dict[str, bytes] = {
        "the staff member's screen": screen,
        ".cast": (site.data_dir / "transcripts" / f"{session_id}.cast").read_bytes(),
        "the ticket": ok(site.admin("ticket", "show", ref, "--json")).encode(),
        "the broker's log": b"".join(site.broker.output),
    }
    for name in attachments:
        places[f"attachment {name}"] = download(
            site, bob, f"/files/tickets/{ref}/attachments/{name}"
        )
    text = site.tmp / "export.txt"
    ok(site.admin("transcript", "export", session_id, "--format", "txt", "-o", str(text)))
    places[".txt"] = text.read_bytes()
    solved = secondline(
        "--token", bob, "ticket", "resolve", ref,
        "--solution", "Checked the hidden prompts; nothing leaked.", data_dir=site.data_dir,
    )  # fmt: skip
    assert solved.code == 0, solved.err
    cert = str(load_config(site.data_dir, env={}).tls_cert_path)
    draft = ApiClient(Connection(site.broker.url, bob, cert)).request(
        "POST", "/kb/drafts", {"ticket": ref}
    )
    places["a knowledge-base draft"] = repr(draft).encode()

    # Each program got its secret (the lengths above), and the session was recorded.
    assert b"readS=14" in places[".cast"]
    assert b"input hidden (echo off)" in places[".txt"]
    assert ticket_json(site, ref)["notes"]
    leaks = [
        f"{prompt} secret in {place}"
        for prompt, secret in SECRETS.items()
        for place, content in places.items()
        if secret.encode() in content
    ]
    assert leaks == []
