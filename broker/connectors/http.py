"""The HTTP plumbing the REST connectors share: one aiohttp session per system, a JSON call
whose failures become the connector errors, and the answer to rate limiting.

A system that answers ``429 Too Many Requests`` has not processed the request, so the call
is made again after the ``Retry-After`` it names (seconds or an HTTP date), up to
:data:`RATE_LIMIT_TRIES` times and never waiting longer than :data:`RETRY_AFTER_MAX`; past
that the call is :class:`ExternalDown` and the sync or the outbox tries again later.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import aiohttp

from broker.connectors.errors import ExternalDown

log = logging.getLogger(__name__)

TIMEOUT: Final = 30.0
RATE_LIMIT_TRIES: Final = 4
RETRY_AFTER_MAX: Final = 60.0
# Without a usable Retry-After: this long before the next try.
RETRY_AFTER_DEFAULT: Final = 5.0


@dataclass(frozen=True)
class Answer:
    """A system's answer: status, body text (decoded leniently) and the server's Date."""

    status: int
    text: str
    date: dt.datetime | None

    def json(self) -> object:
        """The body as JSON; ``ValueError`` when it is not."""
        return json.loads(self.text) if self.text.strip() else None


def retry_after_seconds(value: str | None, now: dt.datetime) -> float:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return RETRY_AFTER_DEFAULT
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return RETRY_AFTER_DEFAULT
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - now).total_seconds())


def _server_date(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)


class JsonHttp:
    """Requests to one system; ``name`` is how errors name it (``Zammad at https://…``)."""

    def __init__(self, name: str, headers: Mapping[str, str], *, timeout: float = TIMEOUT) -> None:
        self.name = name
        self._headers = {"Accept": "application/json", **headers}
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._http: aiohttp.ClientSession | None = None

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(timeout=self._timeout, headers=self._headers)
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def request(
        self,
        method: str,
        url: str,
        *,
        what: str,
        params: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
        body: object = None,
    ) -> Answer:
        """One call, repeated after a 429 as the system asks; ``what`` names it in errors
        (never the URL's query, which may hold a session id)."""
        data = None if body is None else json.dumps(body).encode()
        headers = {} if body is None else {"Content-Type": "application/json"}
        for attempt in range(1, RATE_LIMIT_TRIES + 1):
            try:
                async with self._session().request(
                    method, url, params=params, data=data, headers=headers
                ) as resp:
                    text = await resp.text(errors="replace")
                    answer = Answer(resp.status, text, _server_date(resp.headers.get("Date")))
                    retry_after = resp.headers.get("Retry-After")
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                raise ExternalDown(f"{self.name} cannot be reached: {type(exc).__name__}") from None
            if answer.status != 429:
                return answer
            wait = retry_after_seconds(retry_after, dt.datetime.now(dt.UTC))
            if wait > RETRY_AFTER_MAX or attempt == RATE_LIMIT_TRIES:
                raise ExternalDown(
                    f"{self.name} limits our rate ({what}: 429, retry after {wait:.0f} s); "
                    "trying again later"
                )
            log.info("%s asks to wait %.1f s before %s (429)", self.name, wait, what)
            await asyncio.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


def short(text: str) -> str:
    """An answer's text for an error message: bounded, every character printable."""
    return ascii(text.strip()[:200])


def text_of(obj: object, key: str) -> str:
    """``obj[key]`` as text: "" when ``obj`` is no object or the value is missing."""
    if not isinstance(obj, dict):
        return ""
    value = obj.get(key)
    return value if isinstance(value, str) else "" if value is None else str(value)
