"""Bulk output through the whole relay: a real `secondline serve`, a really enrolled
`secondline-agent run` and the real OpenSSH client push ≥ 50 MB through one recorded
session, with and without a PTY, and every byte arrives (regression: the relay stalled
after a few MB when a transcript flush was asked for while another one was finishing)."""

from __future__ import annotations

import asyncio

import pytest

from agent.reaping import reap
from tests.support.broker import cli_env
from tests.support.site import Site, new_ticket, start_agent

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]


BULK_BYTES = 60_000_000
RELAY_BOUND = 120.0  # failure bound for one transfer, never a pause
READ_CHUNK = 1 << 20


async def count_output(site: Site, command: str, *, tty: bool) -> tuple[int, int | None]:
    """Run ``command`` through the gateway with OpenSSH; bytes read from stdout, exit code."""
    options = ("-tt",) if tty else ()
    argv = site.ssh_argv(site.ticket, *options)
    proc = await asyncio.create_subprocess_exec(
        *argv,
        command,
        stdin=asyncio.subprocess.PIPE if tty else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env=cli_env(site.tmp),
    )
    assert proc.stdout is not None
    total = 0
    try:
        async with asyncio.timeout(RELAY_BOUND):
            while chunk := await proc.stdout.read(READ_CHUNK):
                total += len(chunk)
            code = await proc.wait()
    except TimeoutError:
        raise AssertionError(f"the relay stalled after {total} of the expected bytes") from None
    finally:
        await reap(proc)
    return total, code


async def test_bulk_output_arrives_whole_with_and_without_a_pty(site: Site) -> None:
    """60 MB of `head -c` arrive byte for byte without a PTY, and 60 MB of base64 text
    (81 MB on the wire) arrive whole through a PTY, both recorded."""
    await start_agent(site, "web01", "unattended")
    site.ticket = new_ticket(site, "web01")

    total, code = await count_output(site, f"head -c {BULK_BYTES} /dev/zero", tty=False)
    assert (total, code) == (BULK_BYTES, 0)

    # base64 without line breaks: the PTY adds nothing but the trailing "\r\n".
    expected = (BULK_BYTES + 2) // 3 * 4 + 2
    total, code = await count_output(
        site, f"head -c {BULK_BYTES} /dev/zero | base64 -w0; echo", tty=True
    )
    assert (total, code) == (expected, 0)
