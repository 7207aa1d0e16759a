"""The audit log in the database: every action lands, and tampering is named."""

from __future__ import annotations

import pytest
from sqlalchemy import delete, select, update

from broker.db.models_audit import AuditEvent
from broker.services import SERVICES
from tests.support.api import Api

pytestmark = pytest.mark.postgres


async def verify(api: Api) -> dict[str, object]:
    _, data = await api.call("GET", "/audit/verify", expect=200)
    assert isinstance(data, dict)
    return data


async def fill(api: Api, n: int) -> None:
    for i in range(n):
        await api.call("POST", "/customers", {"name": f"c{i}"}, expect=201)


async def test_untouched_log_verifies(api: Api) -> None:
    """A log with init and a few actions verifies."""
    await fill(api, 3)
    report = await verify(api)
    assert report["ok"] is True
    assert report["records"] == 4


async def test_changed_row_is_named(api: Api) -> None:
    """Changing one row's actor names that row."""
    await fill(api, 4)
    services = api.client.app[SERVICES]
    async with services.db() as db, db.begin():
        await db.execute(update(AuditEvent).where(AuditEvent.seq == 3).values(actor="mallory"))
    report = await verify(api)
    assert report["ok"] is False
    assert report["first_bad_seq"] == 3


async def test_deleted_row_is_named(api: Api) -> None:
    """Deleting a row in the middle names the gap."""
    await fill(api, 4)
    services = api.client.app[SERVICES]
    async with services.db() as db, db.begin():
        await db.execute(delete(AuditEvent).where(AuditEvent.seq == 2))
    report = await verify(api)
    assert report["ok"] is False
    assert report["first_bad_seq"] == 2


async def test_reordered_rows_are_named(api: Api) -> None:
    """Swapping the contents of two rows names the first of them."""
    await fill(api, 4)
    services = api.client.app[SERVICES]
    async with services.db() as db, db.begin():
        a = (await db.execute(select(AuditEvent).where(AuditEvent.seq == 2))).scalar_one()
        b = (await db.execute(select(AuditEvent).where(AuditEvent.seq == 3))).scalar_one()
        fields = ("at", "actor", "action", "target", "details", "prev_hash", "hash")
        va = {f: getattr(a, f) for f in fields}
        vb = {f: getattr(b, f) for f in fields}
        for f in fields:
            setattr(a, f, vb[f])
            setattr(b, f, va[f])
    report = await verify(api)
    assert report["ok"] is False
    assert report["first_bad_seq"] == 2


async def test_deleted_tail_is_reported(api: Api) -> None:
    """Deleting the newest rows is reported as a cut tail."""
    await fill(api, 4)
    services = api.client.app[SERVICES]
    async with services.db() as db, db.begin():
        await db.execute(delete(AuditEvent).where(AuditEvent.seq >= 4))
    report = await verify(api)
    assert report["ok"] is False
    assert "deleted" in str(report["message"])


async def test_audit_needs_admin(api: Api) -> None:
    """Staff without the admin scope cannot read the log."""
    tok = await api.staff_token("jo", "level3")
    await api.call("GET", "/audit", token=tok, expect=403)
    await api.call("GET", "/audit?limit=0", expect=400)
