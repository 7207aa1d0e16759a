"""Over SSH, the staff terminal's answer to a query in the output arrives among the typed
bytes: an answer at the head of the input while a query is open is recorded as a reply."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from broker.transcript import transcript_paths
from tests.component.test_sessions_harness import world
from tests.component.test_sessions_hidden_input import prompt_after
from tests.component.test_sessions_shell import open_shell, wait_state

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.filterwarnings("ignore:The Result.tuples:DeprecationWarning"),
]


async def test_an_ssh_terminals_answer_is_a_reply_a_look_alike_key_is_typed(
    data_dir: Path, tmp_path: Path
) -> None:
    """A program asks for the cursor position; the client's terminal answers in the same
    chunk as three typed keys: the shell reads all of it, the answer is an `a` event and the
    keys are `i`. The same bytes typed with no query open (Ctrl+F3 sends that shape) are
    typed input."""
    async with world(data_dir, tmp_path) as w:
        async with await w.ssh() as conn:
            shell = await open_shell(conn)
            await prompt_after(shell, b"")
            shell.type(
                "stty -icanon; printf '\\033[5;10H\\033[6n'; head -c 10 | od -An -c | tr -d ' ';"
                " stty icanon; echo done-$((1+1))\n"
            )
            await shell.expect(b"\x1b[6n")
            shell.type("\x1b[5;10Rabc")
            await shell.expect(b"done-2")
            assert b"033[5;10Rabc" in shell.out
            await prompt_after(shell, b"done-2")
            shell.type(
                "stty -icanon; echo go-$((3+3)); head -c 6 | od -An -c | tr -d ' ';"
                " stty icanon; echo fin-$((2+2))\n"
            )
            await shell.expect(b"go-6")
            shell.type("\x1b[1;5R")
            await shell.expect(b"fin-4")
            shell.type("exit 0\n")
            assert await shell.finish() == 0
        detail = await wait_state(w, w.ticket, "ended")
        cast = transcript_paths(w.services.config.transcripts_dir, detail["id"]).cast
        events = [json.loads(line) for line in cast.read_text().splitlines()[1:]]
        assert "".join(e[2] for e in events if e[1] == "a") == "\x1b[5;10R"
        typed = "".join(e[2] for e in events if e[1] == "i")
        assert "abc" in typed
        assert "\x1b[1;5R" in typed
