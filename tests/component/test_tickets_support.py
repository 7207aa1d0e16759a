"""Helpers of the ticket tests (no tests here): two customers, staff of every level, agents.

Agents are added as rows, the way enrollment stores them; ``test_tickets_help`` enrolls a
real one through ``/agent/v1/enroll``.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from sqlalchemy import select, update

from broker import staff_store
from broker.db.models_agents import Agent
from broker.db.models_sessions import RemoteSession
from broker.db.models_staff import Customer
from broker.services import SERVICES, Services
from broker.tickets import TICKET_STORE, TicketStore
from tests.support.api import Api

# JSON answers are read ad hoc in tests; a wrong key fails the test either way.
Json = dict[str, Any]


def rows(value: object) -> list[Json]:
    """A JSON list of objects, as the list routes answer."""
    assert isinstance(value, list), value
    assert all(isinstance(v, dict) for v in value)
    return value


@dataclass
class World:
    """acme and globex; lena (level 1), bob and carl (level 2), tess (level 3) serve acme,
    gina (level 2) serves globex, una (level 2) serves everyone; agents by name."""

    api: Api
    lena: str = ""
    bob: str = ""
    carl: str = ""
    tess: str = ""
    gina: str = ""
    una: str = ""
    agents: dict[str, str] = field(default_factory=dict)

    @property
    def app(self) -> web.Application:
        app: web.Application = self.api.client.app
        return app

    @property
    def services(self) -> Services:
        return self.app[SERVICES]

    @property
    def store(self) -> TicketStore:
        return self.app[TICKET_STORE]

    async def ticket(
        self, token: str | None = None, *, agents: tuple[str, ...] = ("web01",), **extra: object
    ) -> str:
        """Create a ticket of acme as lena (or ``token``) and return its id."""
        body: dict[str, object] = {"title": "Printer down", "customer": "acme"}
        body["agents"] = list(agents)
        body.update(extra)
        _, data = await self.api.call("POST", "/tickets", body, token=token or self.lena)
        assert isinstance(data, dict), data
        return str(data["id"])

    async def escalated(self, to: int = 2) -> str:
        """A ticket lena created and escalated to level ``to`` (unassigned)."""
        ref = await self.ticket()
        await self.call("POST", f"/tickets/{ref}/escalate", {"to": 2, "reason": "needs a shell"})
        if to == 3:
            await self.call(
                "POST", f"/tickets/{ref}/escalate", {"to": 3, "reason": "kernel bug"}, self.bob
            )
        return ref

    async def call(
        self,
        method: str,
        path: str,
        body: object | None = None,
        token: str | None = None,
        expect: int | None = 200,
    ) -> Json:
        """Call as lena (or ``token``), expecting ``expect``; the JSON object answered."""
        status, data = await self.api.call(
            method, path, body, token=token or self.lena, expect=expect
        )
        assert isinstance(data, dict), (status, data)
        return data

    async def show(self, ref: str, token: str | None = None) -> Json:
        return await self.call("GET", f"/tickets/{ref}", token=token or self.una)

    async def listed(self, query: str = "", token: str | None = None) -> list[Json]:
        """The ids answered by GET /tickets?query."""
        _, data = await self.api.call(
            "GET", f"/tickets{query}", token=token or self.una, expect=200
        )
        return rows(data)

    async def refused(
        self,
        method: str,
        path: str,
        body: object | None,
        token: str,
        status: int,
        code: str,
    ) -> str:
        """Call, expect an error answer with ``status`` and ``code``; return its message."""
        got, data = await self.api.call(method, path, body, token=token)
        assert isinstance(data, dict), (got, data)
        assert (got, data["error"]["code"]) == (status, code), (got, data)
        return str(data["error"]["message"])


async def add_agent(
    services: Services,
    name: str,
    customer: str,
    *,
    online: bool = True,
    revoked: bool = False,
    consent: str = "unattended",
) -> str:
    """Add an enrolled agent row and return its id."""
    agent_id = "ag-" + secrets.token_hex(8)
    now = dt.datetime.now(dt.UTC)
    async with services.db() as db, db.begin():
        cid = (await db.execute(select(Customer.id).where(Customer.name == customer))).scalar_one()
        db.add(
            Agent(
                id=agent_id,
                name=name,
                customer_id=cid,
                labels={},
                facts={"hostname": name, "os": "Debian GNU/Linux"},
                consent=consent,
                public_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA test",
                key_fingerprint="SHA256:" + agent_id,
                enrolled_with="tok000000000",
                enrolled_at=now,
                online=online,
                revoked_at=now if revoked else None,
            )
        )
    return agent_id


async def set_online(services: Services, agent_id: str, online: bool) -> None:
    async with services.db() as db, db.begin():
        await db.execute(update(Agent).where(Agent.id == agent_id).values(online=online))


async def make_world(api: Api) -> World:
    """Customers, staff and agents written straight to the database: one transaction instead
    of a dozen audited API calls per test (the API's own tests cover adding them)."""
    services: Services = api.client.app[SERVICES]
    now = dt.datetime.now(dt.UTC)
    people = {
        "lena": ("level1", ["acme"]),
        "bob": ("level2", ["acme"]),
        "carl": ("level2", ["acme"]),
        "tess": ("level3", ["acme"]),
        "gina": ("level2", ["globex"]),
        "una": ("level2", []),
    }
    tokens: dict[str, str] = {}
    async with services.db() as db, db.begin():
        for customer in ("acme", "globex"):
            await staff_store.add_customer(db, customer, "", now)
        for name, (role, customers) in people.items():
            user = await staff_store.add_user(
                db,
                name=name,
                role=role,
                display_name="",
                password=None,
                ssh_keys=[],
                customers=customers,
                now=now,
            )
            new = await staff_store.mint_token(
                db, user, scopes=None, ttl_seconds=3600, label="test", now=now, max_tokens=5
            )
            tokens[name] = new.plaintext
    world = World(
        api,
        lena=tokens["lena"],
        bob=tokens["bob"],
        carl=tokens["carl"],
        tess=tokens["tess"],
        gina=tokens["gina"],
        una=tokens["una"],
    )
    world.agents["web01"] = await add_agent(services, "web01", "acme")
    world.agents["db01"] = await add_agent(services, "db01", "acme", online=False)
    world.agents["old01"] = await add_agent(services, "old01", "acme", revoked=True)
    world.agents["gx01"] = await add_agent(services, "gx01", "globex")
    return world


async def audit_events(api: Api, action: str | None = None) -> list[Json]:
    """The audit events (of ``action``), newest first."""
    query = "" if action is None else f"&action={action}"
    _, data = await api.call("GET", f"/audit?limit=1000{query}", expect=200)
    return rows(data)


def session_row(
    session_id: str, ticket: int, customer: str, owner: str, *, state: str = "live"
) -> RemoteSession:
    """A session row as the broker writes it, for tests of who may see and touch it."""
    now = dt.datetime.now(dt.UTC)
    return RemoteSession(
        id=session_id,
        ticket_id=ticket,
        customer=customer,
        agent_id="ag-" + "0" * 16,
        agent_name="web01",
        owner=owner,
        owner_level=2,
        kind="shell",
        via="ssh",
        state=state,
        created_at=now,
        started_at=now,
        ended_at=None if state == "live" else now,
    )
