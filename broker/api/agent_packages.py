"""The agent package the broker serves, as the install command needs it: version, URL,
SHA-256 and the pin of the broker's TLS key (``GET /api/v1/agent-package``)."""

from __future__ import annotations

import asyncio

from pydantic import BaseModel

from broker.agents.packages import PACKAGE_SHELF, newest, spki_pin
from broker.api.routing import ApiContext, ApiRouter, QueryParam
from broker.errors import InputError, NotFoundError

router = ApiRouter(tag="agents")

_ARCH = QueryParam("arch", description="the Debian architecture (default amd64)")


class AgentPackageOut(BaseModel):
    version: str
    arch: str
    file: str
    path: str
    url: str
    sha256: str
    size: int
    broker_url: str
    tls_pin: str
    tls_fingerprint: str


@router.route(
    "GET",
    "/agent-package",
    summary="The newest agent package for an architecture, with what installing it checks",
    scope="admin",
    response=AgentPackageOut,
    query=[_ARCH],
)
async def agent_package(ctx: ApiContext) -> AgentPackageOut:
    arch = ctx.query("arch") or "amd64"
    if not arch.isalnum() or not arch.islower() or len(arch) > 16:
        raise InputError("arch must be a Debian architecture such as amd64 or arm64")
    shelf = ctx.request.app[PACKAGE_SHELF]
    name = newest(await asyncio.to_thread(shelf.names), arch)
    if name is None:
        raise NotFoundError(
            f"the broker has no agent package for {arch}; build one (make agent-deb) and "
            f"copy it into {shelf.directory}"
        )
    found = await asyncio.to_thread(shelf.file, name)
    config = ctx.services.config
    keys = ctx.services.keys
    broker_url = config.public_url.rstrip("/")
    return AgentPackageOut(
        version=name.version,
        arch=name.arch,
        file=name.file,
        path=name.path,
        url=broker_url + name.path,
        sha256=found.sha256,
        size=found.size,
        broker_url=broker_url,
        tls_pin=spki_pin(keys.tls_cert_pem),
        tls_fingerprint=keys.tls_fingerprint,
    )
