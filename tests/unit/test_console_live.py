"""Live connections per console session: held while open, closed once per session end, and
one failing close never stops the others."""

from __future__ import annotations

import pytest

from broker.console.live import LiveConnections
from broker.console.session_store import ConsoleUser


def person(session: str, user_id: int) -> ConsoleUser:
    return ConsoleUser(session, user_id, f"u{user_id}", "", "level2", None, "csrf", None)


async def test_close_by_user_and_by_session() -> None:
    """close_user reaches every session of a person; close_session only the one."""
    live = LiveConnections()
    closed: list[tuple[str, str]] = []

    def closer(name: str):  # type: ignore[no-untyped-def]
        async def close(reason: str) -> None:
            closed.append((name, reason))

        return close

    async with (
        live.hold(person("s1", 1), close=closer("a")),
        live.hold(person("s2", 1), close=closer("b"), keeps_alive=True),
        live.hold(person("s3", 2), close=closer("c")),
    ):
        assert len(live) == 3
        assert live.session_ids() == {"s1", "s2", "s3"}
        assert live.interactive_session_ids() == {"s2"}
        assert await live.close_session("s3", "signed_out") == 1
        assert await live.close_user(1, "signed_out") == 2
        # Each connection is closed once, however often its session is ended.
        assert await live.close_user(1, "signed_out") == 0
    assert sorted(closed) == [("a", "signed_out"), ("b", "signed_out"), ("c", "signed_out")]
    assert len(live) == 0


async def test_a_failing_close_does_not_stop_the_rest(caplog: pytest.LogCaptureFixture) -> None:
    """A close that raises is logged; the other connections are still closed."""
    live = LiveConnections()
    closed: list[str] = []

    async def broken(_reason: str) -> None:
        raise ConnectionResetError("gone")

    async def fine(reason: str) -> None:
        closed.append(reason)

    first = live.add(person("s1", 1), close=broken)
    second = live.add(person("s1", 1), close=fine)
    assert await live.close_where(lambda _h: True, "shutdown") == 2
    assert closed == ["shutdown"]
    assert "closing a live connection failed" in caplog.text
    live.discard(first)
    live.discard(second)
    assert len(live) == 0
