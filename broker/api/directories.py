"""Company directories (LDAP, Active Directory): add, list, test, sync, remove (admins only).
The service account's password goes in with ``add`` and never comes out."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from broker.api.routing import ApiContext, ApiRouter
from broker.directory.feature import DIRECTORIES
from broker.directory.ldap_client import DirectoryError
from broker.directory.service import Directories
from broker.directory.store import NewDirectory
from broker.errors import UnavailableError

router = ApiRouter(tag="directories")


class DirectoryIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=32)
    url: str = Field(max_length=500)
    bind_dn: str = Field(max_length=500)
    bind_password: str = Field(max_length=4096, repr=False)
    base_dn: str = Field(max_length=500)
    roles: str = Field(max_length=2000, description="e.g. cn=helpdesk-l2=level2,...")
    customer_groups: str | None = Field(default=None, max_length=4000)
    customer_attribute: str | None = Field(default=None, max_length=64)
    user_attribute: str = Field(default="uid", max_length=64)
    user_object_class: str = Field(default="person", max_length=64)
    ssh_key_attribute: str | None = Field(default="sshPublicKey", max_length=64)
    sync_seconds: int = 300
    timeout_seconds: float = 5.0
    on_outage: str = Field(default="keep", max_length=8)
    ca_file: str | None = Field(default=None, max_length=500)


class DirectoryOut(BaseModel):
    name: str
    url: str
    bind_dn: str
    base_dn: str
    user_attribute: str
    roles: str
    customer_groups: str
    customer_attribute: str | None
    ssh_key_attribute: str | None
    sync_seconds: int
    timeout_seconds: float
    on_outage: str
    healthy: bool
    health: str
    synced_at: str | None


class DirectoryTestOut(BaseModel):
    name: str
    ok: bool
    message: str
    people: int


def _directories(ctx: ApiContext) -> Directories:
    found = ctx.request.app.get(DIRECTORIES)
    if found is None:
        raise UnavailableError("the directories are not running on this broker")
    return found


@router.route(
    "POST",
    "/directories",
    summary="Add a company directory (LDAP, Active Directory)",
    scope="admin",
    body=DirectoryIn,
    response=DirectoryOut,
    status=201,
)
async def add_directory(ctx: ApiContext) -> DirectoryOut:
    body = ctx.payload(DirectoryIn)
    directories = _directories(ctx)
    record = await directories.store.add(
        NewDirectory(**body.model_dump()), actor=ctx.principal.name, source=ctx.source
    )
    directories.wake()
    return DirectoryOut.model_validate(record.public())


@router.route(
    "GET", "/directories", summary="List the directories", scope="admin",
    response=DirectoryOut, many=True,
)  # fmt: skip
async def list_directories(ctx: ApiContext) -> list[DirectoryOut]:
    return [DirectoryOut.model_validate(r.public()) for r in await _directories(ctx).store.all()]


@router.route(
    "POST",
    "/directories/{name}/test",
    summary="Bind as the service account and read the people and groups",
    scope="admin",
    response=DirectoryTestOut,
)
async def test_directory(ctx: ApiContext) -> DirectoryTestOut:
    directories = _directories(ctx)
    record = await directories.store.get(ctx.path("name"))
    try:
        people = await directories.client(record).check()
        ok, message = True, f"bound as {record.connection.bind_dn}; {people} people found"
    except DirectoryError as exc:
        people, ok, message = 0, False, exc.message
    await ctx.services.audit.record(
        actor=ctx.principal.name,
        action="directory.test",
        target=record.name,
        outcome="ok" if ok else "failed",
        source=ctx.source,
        details={"message": message[:500]},
    )
    return DirectoryTestOut(name=record.name, ok=ok, message=message, people=people)


@router.route(
    "POST",
    "/directories/{name}/sync",
    summary="Sync a directory now and wait for it",
    scope="admin",
    response=DirectoryOut,
)
async def sync_directory(ctx: ApiContext) -> DirectoryOut:
    directories = _directories(ctx)
    record = await directories.store.get(ctx.path("name"))
    await directories.sync(record)
    await ctx.services.audit.record(
        actor=ctx.principal.name, action="directory.sync", target=record.name, source=ctx.source
    )
    return DirectoryOut.model_validate((await directories.store.get(record.name)).public())


@router.route(
    "DELETE",
    "/directories/{name}",
    summary="Remove a directory (its accounts stay, without access)",
    scope="admin",
    status=204,
)
async def remove_directory(ctx: ApiContext) -> None:
    directories = _directories(ctx)
    record = await directories.store.get(ctx.path("name"))
    await directories.store.remove(record.name, actor=ctx.principal.name, source=ctx.source)
    await directories.removed(record)
