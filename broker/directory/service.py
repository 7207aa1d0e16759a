"""Directory accounts at run time: the periodic sync and the sign-in check.

- :meth:`Directories.run`: every directory is synced every ``sync_seconds`` (5 minutes by
  default), and at once when woken (``directory sync``, ``directory add``). A sync reads
  every person in one search and the mapped groups in another, applies each person's
  verdict, and ends the live shells of accounts that just lost access (``on_lost``); their
  console pages see the disabled account at their next request or event tick.
- :meth:`Directories.sign_in`: the password is checked by a simple bind as the person
  (never against a stored copy), then that person is synced before the sign-in goes on.

A directory that cannot be reached is marked unhealthy (``directory list``, audited once).
Its accounts keep what the last successful sync gave them, unless the directory's
``on_outage`` is ``end``; sign-ins of its people are refused with that reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from broker.db.models_staff import User
from broker.directory import accounts
from broker.directory.ldap_client import DirectoryClient, DirectoryError
from broker.directory.rules import Verdict, decide
from broker.directory.store import DirectoryRecord, DirectoryStore
from broker.services import Services
from broker.supervision import OnFailure, Supervisor

log = logging.getLogger(__name__)

OUTAGE_REFUSAL: Final = "the directory could not be reached (its outage policy ends access)"
REMOVED_DIRECTORY: Final = "the directory was removed from Secondline"

Outcome = Literal["not_directory", "ok", "wrong_password", "refused", "unavailable"]


@dataclass(frozen=True)
class SignIn:
    """The directory's answer to a sign-in: ``message`` says why for refused/unavailable."""

    outcome: Outcome
    message: str = ""


class Directories:
    def __init__(
        self,
        services: Services,
        store: DirectoryStore,
        on_lost: Callable[[set[str]], None],
    ) -> None:
        self.services = services
        self.store = store
        self.on_lost = on_lost
        self._wake = asyncio.Event()
        self._tasks = Supervisor("directories")
        self._last: dict[int, float] = {}  # directory id → loop time of its last sync
        self.rounds = 0  # finished sync rounds (tests wait on it via ``synced``)
        self._round_done = asyncio.Condition()
        # One sync or sign-in applies directory data at a time in this process (a sync
        # woken by `directory add` and one asked for by `directory sync` would otherwise
        # both create the same account); across nodes the unique name decides.
        self._apply_lock = asyncio.Lock()

    def client(self, record: DirectoryRecord) -> DirectoryClient:
        return DirectoryClient(record.connection, record.settings)

    # -- the periodic sync ---------------------------------------------------------------

    def start(self) -> None:
        # RESTART: what the sync works from lives in the database and the directory, so a
        # new loop picks up where a failed one stopped (its own errors are caught per round).
        self._tasks.keep("directory sync", self.run, on_failure=OnFailure.RESTART)

    def wake(self) -> None:
        self._last.clear()
        self._wake.set()

    async def close(self) -> None:
        await self._tasks.stop()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            wait = 60.0
            try:
                for record in await self.store.all():
                    due = self._last.get(record.id, -1e18) + record.settings.sync_seconds
                    if loop.time() >= due:
                        self._last[record.id] = loop.time()
                        await self.sync(record)
                        due = loop.time() + record.settings.sync_seconds
                    wait = min(wait, max(0.0, due - loop.time()))
            except asyncio.CancelledError:
                raise
            except (SQLAlchemyError, OSError) as exc:
                # The database is down: said once a round, without a traceback; next round.
                log.error("directory sync: the database is unavailable (%s)", type(exc).__name__)
            except Exception:
                log.exception("the directories could not be synced; retrying")
            async with self._round_done:
                self.rounds += 1
                self._round_done.notify_all()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()

    async def synced(self, after: int) -> None:
        """Return once a sync round after round ``after`` has finished."""
        async with self._round_done:
            await self._round_done.wait_for(lambda: self.rounds > after)

    async def sync(self, record: DirectoryRecord) -> None:
        """One sync of one directory: every person, and every account it made before."""
        async with self._apply_lock:
            await self._sync(record)

    async def _sync(self, record: DirectoryRecord) -> None:
        try:
            people = await self.client(record).everyone()
        except DirectoryError as exc:
            if await self.store.set_health(record, False, exc.message, synced=False):
                log.warning("directory %s is unhealthy: %s", record.name, exc.message)
            if record.settings.on_outage == "end":
                await self._refuse_all(record, OUTAGE_REFUSAL)
            return
        by_name = {p.name: p for p in people}
        now = self.services.clock()
        lost: set[str] = set()
        counts = {"created": 0, "lost": 0, "regained": 0}
        async with self.services.db() as db:
            known = set(await accounts.directory_accounts(db, record.name))
        for name in sorted(known | set(by_name)):
            person = by_name.get(name)
            verdict = decide(person, record.settings)
            try:
                async with self.services.db() as db, db.begin():
                    applied = await accounts.apply(
                        db,
                        directory=record.name,
                        name=name,
                        dn=person.dn if person else None,
                        verdict=verdict,
                        now=now,
                        create=True,
                    )
            except IntegrityError:
                # Another node made the account (or took the key) meanwhile: next round.
                log.warning(
                    "directory %s: %s changed meanwhile; applied next sync", record.name, name
                )
                continue
            await self._audit(record, applied)
            for key in counts:
                counts[key] += int(getattr(applied, key))
            if applied.lost:
                lost.add(applied.name)
        if lost:
            self.on_lost(lost)
        await self.store.set_health(
            record,
            True,
            f"{len(people)} people read, {len(known | set(by_name))} considered",
            synced=True,
        )
        log.info("directory %s synced: %s", record.name, counts)

    async def _audit(self, record: DirectoryRecord, applied: accounts.Applied) -> None:
        if applied.created:
            action, outcome = "directory.account_created", "ok"
        elif applied.lost:
            action, outcome = "directory.access_lost", "denied"
        elif applied.regained:
            action, outcome = "directory.access_regained", "ok"
        else:
            return
        await self.services.audit.record(
            actor="directory-sync",
            action=action,
            target=applied.name,
            outcome=outcome,
            details={"directory": record.name, "reason": applied.refusal or ""},
        )

    async def _refuse_all(self, record: DirectoryRecord, reason: str) -> None:
        now = self.services.clock()
        lost: set[str] = set()
        async with self.services.db() as db:
            names = sorted(await accounts.directory_accounts(db, record.name))
        for name in names:
            async with self.services.db() as db, db.begin():
                applied = await accounts.apply(
                    db,
                    directory=record.name,
                    name=name,
                    dn=None,
                    verdict=Verdict(None, refusal=reason),
                    now=now,
                    create=False,
                )
            await self._audit(record, applied)
            if applied.lost:
                lost.add(applied.name)
        if lost:
            self.on_lost(lost)

    async def removed(self, record: DirectoryRecord) -> None:
        """The directory was removed: its accounts lose access (they stay, for the audit)."""
        async with self._apply_lock:
            await self._refuse_all(record, REMOVED_DIRECTORY)

    # -- sign-in -------------------------------------------------------------------------

    async def password_check(self, name: str, password: str) -> SignIn:
        """For a sign-in: "not_directory" when ``name`` is a local (or OpenID) account, or
        no directory knows it; otherwise the directory's answer."""
        async with self.services.db() as db:
            row = (
                await db.execute(select(User.source, User.source_name).where(User.name == name))
            ).one_or_none()
        if row is not None and row[0] != accounts.SOURCE:
            return SignIn("not_directory")
        return await self.sign_in(name, password, row[1] if row is not None else None)

    async def sign_in(self, name: str, password: str, source_name: str | None) -> SignIn:
        """Check ``name``'s password against their directory (``source_name``, or for a
        name without an account every directory in turn) and sync that person."""
        records = await self.store.all()
        if source_name is not None:
            records = [r for r in records if r.name == source_name]
            if not records:
                return SignIn("refused", REMOVED_DIRECTORY)
        if not records:
            return SignIn("not_directory")
        down: list[str] = []
        for record in records:
            client = self.client(record)
            try:
                person = await client.find(name)
                if person is None:
                    if source_name is None:
                        continue
                    verdict = decide(None, record.settings)
                    await self._apply_one(record, name, None, verdict)
                    return SignIn("wrong_password")
                if not await client.password_ok(person.dn, password):
                    return SignIn("wrong_password")
            except DirectoryError as exc:
                log.warning("directory %s: %s", record.name, exc.message)
                down.append(record.name)
                continue
            verdict = decide(person, record.settings)
            applied = await self._apply_one(record, person.name, person.dn, verdict)
            if applied.skipped:
                return SignIn("refused", applied.skipped)
            if applied.refusal:
                return SignIn("refused", applied.refusal)
            return SignIn("ok")
        if down:
            return SignIn(
                "unavailable",
                "the company directory cannot be reached, so directory accounts cannot sign "
                "in now; try again in a few minutes, and tell an admin if it lasts",
            )
        return SignIn("not_directory")

    async def _apply_one(
        self, record: DirectoryRecord, name: str, dn: str | None, verdict: Verdict
    ) -> accounts.Applied:
        async with self._apply_lock, self.services.db() as db, db.begin():
            applied = await accounts.apply(
                db,
                directory=record.name,
                name=name,
                dn=dn,
                verdict=verdict,
                now=self.services.clock(),
                create=True,
            )
        await self._audit(record, applied)
        if applied.lost:
            self.on_lost({applied.name})
        return applied
