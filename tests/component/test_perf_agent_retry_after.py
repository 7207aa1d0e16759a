"""The agent honours the broker's ``503`` + ``Retry-After`` (the handshake limiter's answer
during a mass reconnect): it waits at least that long, with jitter, instead of its own
backoff; the parsing of the header is checked branch by branch."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import asyncssh
import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import InvalidStatus
from websockets.http11 import Request, Response

from agent.protocol import iso_utc
from agent.runner import RETRY_AFTER_MAX_S, AgentRunner, busy_delay, retry_after
from tests.component.test_agent_harness import (
    WAIT,
    enroll_state_dir,
    make_cert,
    runner_settings,
)

NOW = 1_700_000_000.0


def answer(status: int, retry: str | None) -> InvalidStatus:
    headers = Headers() if retry is None else Headers({"Retry-After": retry})
    return InvalidStatus(Response(status, "x", headers, b""))


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (answer(503, "7"), 7.0),
        (answer(503, " 12 "), 12.0),
        (answer(503, "0"), 0.0),
        (answer(503, "999999"), float(RETRY_AFTER_MAX_S)),
        (answer(503, "1234567"), None),  # longer than any sensible wait
        (answer(503, "Wed, 21 Oct 2015 07:28:00 GMT"), None),  # HTTP-date form ignored
        (answer(503, "-3"), None),
        (answer(503, ""), None),
        (answer(503, None), None),
        (answer(502, "7"), None),  # only the limiter's 503 names a turn
        (TimeoutError(), None),
    ],
)
def test_retry_after_reads_only_a_503_delay_in_seconds(
    exc: BaseException, expected: float | None
) -> None:
    """Retry-After counts only on a 503, in the delay-seconds form, capped."""
    assert retry_after(exc) == expected


def test_busy_delay_is_at_least_the_wait_plus_up_to_half() -> None:
    """The jitter only ever adds, at most half the wait again."""
    assert busy_delay(8.0, 0.0) == 8.0
    assert busy_delay(8.0, 0.5) == 10.0
    assert 8.0 <= busy_delay(8.0, 0.999) < 12.0


async def test_a_busy_broker_sets_the_next_attempt_after_retry_after(tmp_path: Path) -> None:
    """A real agent runner, told 503 with Retry-After: 37 over TLS, plans its next dial
    for 37 s (plus jitter) later, not at its 1 s backoff."""
    cert = make_cert()
    agent_key = asyncssh.generate_private_key("ssh-ed25519")
    broker_key = asyncssh.generate_private_key("ssh-ed25519")
    attempts: asyncio.Queue[str] = asyncio.Queue()

    def busy(connection: ServerConnection, request: Request) -> Response:
        attempts.put_nowait(request.path)
        return Response(503, "Service Unavailable", Headers({"Retry-After": "37"}), b"busy\n")

    async with serve(
        lambda ws: ws.close(),
        "127.0.0.1",
        0,
        ssl=cert.server_context(tmp_path),
        process_request=busy,
    ) as server:
        port = server.sockets[0].getsockname()[1]
        paths = enroll_state_dir(
            tmp_path / "state",
            tunnel_url=f"wss://127.0.0.1:{port}/agent/v1/tunnel",
            cert=cert,
            agent_key=agent_key,
            broker_key=broker_key,
        )
        runner = AgentRunner(runner_settings(paths, agent_key), rand=lambda: 0.5, clock=lambda: NOW)
        stop = asyncio.Event()
        task = asyncio.create_task(runner.run(stop))
        try:
            async with asyncio.timeout(WAIT):
                await attempts.get()
                status = await next_attempt_written(runner, paths.status_json)
        finally:
            stop.set()
            async with asyncio.timeout(WAIT):
                await task
    assert status["next_attempt_at"] == iso_utc(NOW + 37 * 1.25)
    assert "503" in str(status["last_error"])
    assert attempts.empty()  # no second dial before the broker's turn


def planned(path: Path) -> dict[str, object] | None:
    """The status file if it names the next attempt."""
    if not path.exists():
        return None
    status: dict[str, object] = json.loads(path.read_text())
    return status if status["next_attempt_at"] is not None else None


async def next_attempt_written(runner: AgentRunner, path: Path) -> dict[str, object]:
    """The status file once it names the next attempt (woken by each status change)."""
    while (status := planned(path)) is None:
        await runner.status_changed.wait()
        runner.status_changed.clear()
    return status
