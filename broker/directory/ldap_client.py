"""Talking to the directory over LDAP (bonsai, asyncio-native on OpenLDAP's libldap).

Every operation is bounded twice: bonsai's own timeout (handed to libldap) and an
``asyncio.timeout`` around it, so a directory that accepts the connection and never answers
costs a sign-in ``timeout_seconds`` and never stalls the event loop.

Errors: :class:`DirectoryUnavailable` (cannot reach it, too slow, TLS fails),
:class:`DirectoryRefused` (reachable, but the service account or a search is refused).
A wrong user password is not an error: :meth:`DirectoryClient.password_ok` says False.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

import bonsai
from bonsai import LDAPSearchScope
from bonsai.ldapconnection import BaseLDAPConnection

from broker.directory.rules import (
    DirectorySettings,
    Person,
    group_filter,
    mapped_groups,
    person_filter,
    person_of,
)

log = logging.getLogger(__name__)

# A search returning more people than this is cut (and said so): a base DN set too wide.
MAX_PEOPLE: Final = 20_000


class DirectoryError(Exception):
    """Root of the directory client's errors; ``message`` says what happened and what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class DirectoryUnavailable(DirectoryError):
    pass


class DirectoryRefused(DirectoryError):
    pass


@dataclass(frozen=True)
class Connection:
    url: str
    bind_dn: str
    bind_password: str = ""
    ca_file: str | None = None


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


class DirectoryClient:
    def __init__(self, connection: Connection, settings: DirectorySettings) -> None:
        self.connection = connection
        self.settings = settings

    def _client(self, dn: str, password: str) -> bonsai.LDAPClient:
        # ldap:// to anything but this machine goes through StartTLS: passwords are sent.
        client = bonsai.LDAPClient(self.connection.url, tls=needs_starttls(self.connection.url))
        client.set_credentials("SIMPLE", user=dn, password=password)
        if self.connection.ca_file:
            client.set_ca_cert(self.connection.ca_file)
        client.set_cert_policy("demand")
        # Referrals would send the service account's password to another server.
        client.ignore_referrals = True
        return client

    @asynccontextmanager
    async def _open(self, dn: str, password: str) -> AsyncIterator[BaseLDAPConnection]:
        limit = self.settings.timeout_seconds
        try:
            async with asyncio.timeout(limit):
                conn = await self._client(dn, password).connect(is_async=True, timeout=limit)
        except TimeoutError:
            raise DirectoryUnavailable(
                f"the directory at {self.connection.url} did not answer within {limit:g} s"
            ) from None
        except bonsai.AuthenticationError:
            raise
        except bonsai.LDAPError as exc:
            raise DirectoryUnavailable(
                f"cannot reach the directory at {self.connection.url}: {_reason(exc)}"
            ) from None
        try:
            yield conn
        finally:
            conn.close()

    @asynccontextmanager
    async def _service(self) -> AsyncIterator[BaseLDAPConnection]:
        try:
            async with self._open(self.connection.bind_dn, self.connection.bind_password) as c:
                yield c
        except bonsai.AuthenticationError:
            raise DirectoryRefused(
                f"the directory refused the service account {self.connection.bind_dn}: check "
                "--bind-dn and the password file (`secondline directory add` again)"
            ) from None

    async def _search(
        self, conn: BaseLDAPConnection, query: str, attributes: list[str]
    ) -> list[tuple[str, dict[str, list[str]]]]:
        limit = self.settings.timeout_seconds
        try:
            async with asyncio.timeout(limit):
                found = await conn.search(
                    self.settings.base_dn,
                    LDAPSearchScope.SUBTREE,
                    query,
                    attrlist=attributes,
                    timeout=limit,
                    sizelimit=MAX_PEOPLE,
                )
        except TimeoutError:
            raise DirectoryUnavailable(
                f"the directory at {self.connection.url} did not answer a search within {limit:g} s"
            ) from None
        except bonsai.NoSuchObjectError:
            raise DirectoryRefused(
                f"the base DN {self.settings.base_dn} does not exist in the directory"
            ) from None
        except bonsai.LDAPError as exc:
            raise DirectoryUnavailable(f"a directory search failed: {_reason(exc)}") from None
        out = []
        for entry in found:
            attrs = {str(k).lower(): [_text(v) for v in entry[k]] for k in entry if k != "dn"}
            out.append((str(entry.dn), attrs))
        return out

    async def _groups(self, conn: BaseLDAPConnection) -> dict[str, frozenset[str]]:
        """Member DN (lower case) or memberUid → the mapped groups (cn) holding it."""
        if not mapped_groups(self.settings):
            return {}
        rows = await self._search(
            conn, group_filter(self.settings), ["cn", "member", "uniqueMember", "memberUid"]
        )
        held: dict[str, set[str]] = {}
        for _dn, attrs in rows:
            for cn in attrs.get("cn", []):
                for key in ("member", "uniquemember", "memberuid"):
                    for member in attrs.get(key, []):
                        held.setdefault(member.lower(), set()).add(cn.lower())
        return {member: frozenset(cns) for member, cns in held.items()}

    @staticmethod
    def _groups_of(
        groups: dict[str, frozenset[str]], dn: str, attrs: dict[str, list[str]], user_attr: str
    ) -> frozenset[str]:
        uid = (attrs.get(user_attr.lower()) or [""])[0].lower()
        return groups.get(dn.lower(), frozenset()) | groups.get(uid, frozenset())

    async def find(self, name: str) -> Person | None:
        """The person with this user name (None: not in the directory, or ambiguous)."""
        s = self.settings
        async with self._service() as conn:
            rows = await self._search(conn, person_filter(s, name), s.attributes())
            if len(rows) != 1:
                if len(rows) > 1:
                    log.warning("directory: %d entries share one user name; none used", len(rows))
                return None
            groups = await self._groups(conn)
        dn, attrs = rows[0]
        return person_of(dn, attrs, s, self._groups_of(groups, dn, attrs, s.user_attribute))

    async def everyone(self) -> list[Person]:
        """Every person under the base DN (for a sync)."""
        s = self.settings
        async with self._service() as conn:
            rows = await self._search(conn, person_filter(s, None), s.attributes())
            groups = await self._groups(conn)
        people = []
        for dn, attrs in rows:
            found = person_of(dn, attrs, s, self._groups_of(groups, dn, attrs, s.user_attribute))
            if found is not None:
                people.append(found)
        return people

    async def password_ok(self, dn: str, password: str) -> bool:
        """A simple bind as the person: the directory checks the password, we keep none."""
        # An empty password is an "unauthenticated bind", which LDAP servers answer with
        # success (RFC 4513 5.1.2): it must never count as a correct password.
        if not password or "\x00" in password:
            return False
        try:
            async with self._open(dn, password):
                return True
        except bonsai.AuthenticationError:
            return False

    async def check(self) -> int:
        """Bind as the service account and count the people found (``directory test``)."""
        return len(await self.everyone())


def needs_starttls(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme.lower() == "ldap" and parts.hostname not in (
        "127.0.0.1",
        "::1",
        "localhost",
    )


def _reason(exc: bonsai.LDAPError) -> str:
    text = str(exc).split(" (0x", 1)[0].strip().rstrip(".")
    return text or type(exc).__name__
