"""Input typed while the agent's terminal does not echo is never recorded, whatever the
session prints: the echo state comes out of band, from the agent's input reports.

Each test proves echo is off before it types the secret without relying on output: the
shell writes to a FIFO the test reads, after ``stty -echo`` has returned, and prints
nothing more before it reads the secret.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from broker.transcript import INPUT_HIDDEN_LABEL, transcript_paths
from tests.component.test_sessions_harness import WAIT, World, world
from tests.component.test_sessions_shell import Shell, open_shell, verify, wait_state

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.filterwarnings("ignore:The Result.tuples:DeprecationWarning"),
]

SECRET = "Tr0ub4dor-and-3"
PROMPT_END = b"\x1b]133;B\x07"
# Every escape sequence the product reads or a terminal acts on, printed by the session:
# the former in-band echo marker (both ways), the shell marks, OSC 52, a DCS query.
FORGERIES = (
    r"\033]6973;echo;on\007\033]6973;echo;off\033\\\033]6973;echo;on\007"
    r"\033]133;A\007\033]133;B\007\033]633;E;fake\007\033]133;C\007\033]133;D;0\007"
    r"\033]52;c;aGk=\007\033P\$qm\033\\"
)


async def gate(fifo: Path) -> None:
    """Wait until the shell wrote a line to ``fifo`` (then echo is off)."""
    async with asyncio.timeout(WAIT):
        await asyncio.to_thread(fifo.read_text)


async def prompt_after(shell: Shell, text: bytes) -> None:
    """Wait for the shell's prompt drawn after ``text`` (the line editor has echo off)."""
    async with asyncio.timeout(WAIT):
        while (at := shell.out.find(text)) < 0 or shell.out.find(PROMPT_END, at) < 0:
            chunk = await shell.process.stdout.read(65536)
            assert chunk, f"EOF before a prompt after {text!r}: {bytes(shell.out)[-300:]!r}"
            shell.out += chunk


def recorded(w: World, session_id: str) -> tuple[str, list[list[object]]]:
    cast = transcript_paths(w.services.config.transcripts_dir, session_id).cast
    text = cast.read_text()
    return text, [json.loads(line) for line in text.splitlines()[1:]]


async def test_secrets_are_hidden_whatever_the_session_prints(
    data_dir: Path, tmp_path: Path
) -> None:
    """The issue's case: a prompt printed *before* `stty -echo`, nothing printed after it;
    then the session prints every sequence we read (the old in-band `6973;echo;on`
    included) before a second silent prompt, where the secret comes split across chunks.
    Before that, at the shell's prompt (where the line editor has echo off), a secret pasted
    in one chunk with the command that reads it. No secret is in any event or the note, nor
    on screen; the forged sequences are recorded as the output they are. Typed ahead while
    the terminal still echoes (before the first prompt), and typed at an echoing `read`,
    input is on screen and recorded as typed: the record holds what the screen showed."""
    fifo = tmp_path / "gate"
    os.mkfifo(fifo)
    async with world(data_dir, tmp_path) as w:
        async with await w.ssh() as conn:
            shell = await open_shell(conn)
            shell.type("echo early-$((6*7))\n")
            await prompt_after(shell, b"early-42")
            shell.type(f'read -s y; echo "got ${{#y}}"\n{SECRET}\n')
            await prompt_after(shell, b"got 15")
            shell.type(
                f"printf 'Passphrase: '; stty -echo; echo >{fifo}; read y; stty echo; "
                f"printf '{FORGERIES}Again: '; stty -echo; echo >{fifo}; read z; stty echo; "
                'echo "got ${#y} and ${#z}"; read visible; echo "visible=$visible"\n'
            )
            await gate(fifo)
            shell.type(SECRET + "\n")
            await gate(fifo)
            for piece in (SECRET[:4], SECRET[4:9], SECRET[9:] + "\n"):
                shell.type(piece)
            await shell.expect(b"got 15 and 15")
            shell.type("shown-typed\n")
            await shell.expect(b"visible=shown-typed")
            shell.type("exit 0\n")
            assert await shell.finish() == 0
        for part in (SECRET[:4], SECRET[4:9], SECRET[9:]):
            assert part.encode() not in shell.out
        detail = await wait_state(w, w.ticket, "ended")
        text, events = recorded(w, detail["id"])
        for part in (SECRET[:4], SECRET[4:9], SECRET[9:]):
            assert part not in text
        typed = "".join(str(e[2]) for e in events if e[1] == "i")
        assert "echo early-$((6*7))" in typed
        assert "shown-typed" in typed
        labels = [e[2] for e in events if e[1] == "m"]
        assert INPUT_HIDDEN_LABEL in labels
        shown = "".join(str(e[2]) for e in events if e[1] == "o")
        assert "\x1b]6973;echo;on\x07" in shown  # recorded as printed, changing nothing
        _, ticket = await w.call("GET", f"/tickets/{w.ticket}", expect=200)
        assert all(SECRET[:4] not in n["text"] for n in ticket["notes"])
        assert verify(w, detail["id"])[0] == "valid"


async def test_input_to_a_command_without_a_terminal_is_not_recorded(
    data_dir: Path, tmp_path: Path
) -> None:
    """`echo secret | ssh host 'sudo -S …'`: without a PTY nothing echoes, so stdin is
    recorded as hidden input, never as typed text."""
    async with world(data_dir, tmp_path) as w:
        async with await w.ssh() as conn:
            result = await conn.run(
                'read -r y; echo "got ${#y}"', input=(SECRET + "\n").encode(), encoding=None
            )
        assert result.stdout == b"got 15\n"
        detail = await wait_state(w, w.ticket, "ended")
        text, events = recorded(w, detail["id"])
        assert SECRET not in text
        assert INPUT_HIDDEN_LABEL in [e[2] for e in events if e[1] == "m"]
        assert verify(w, detail["id"])[0] == "valid"
