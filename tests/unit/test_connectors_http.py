"""How long a rate-limited connector waits: ``Retry-After`` as seconds or as an HTTP date
(pure)."""

from __future__ import annotations

import datetime as dt

from broker.connectors.http import RETRY_AFTER_DEFAULT, retry_after_seconds

NOW = dt.datetime(2026, 12, 6, 23, 0, 0, tzinfo=dt.UTC)


def test_retry_after_in_seconds_or_as_a_date() -> None:
    """Delta-seconds are taken as they are; a date is the time left until it (never
    negative); a missing or unreadable value waits the default."""
    assert retry_after_seconds("7", NOW) == 7.0
    assert retry_after_seconds("Sun, 06 Dec 2026 23:00:30 GMT", NOW) == 30.0
    assert retry_after_seconds("Sun, 06 Dec 2026 22:59:00 GMT", NOW) == 0.0
    for unusable in (None, "", "soon", "-3"):
        assert retry_after_seconds(unusable, NOW) == RETRY_AFTER_DEFAULT
