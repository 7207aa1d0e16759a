"""Signed agent requests about self-update (docs/protocol.md, "Signed releases").

``POST /agent/v1/update`` answers the newest *published* release for the agent's
architecture (a package with its manifest and signature beside it): the manifest's text,
its signature and the package's path. The broker does not judge versions; the agent
checks signature, digest and version itself (agent.release) and may refuse.
``POST /agent/v1/update/report`` records what the agent did (installed, refused, rolled
back) as an ``agent.update`` audit event.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from aiohttp import web

from agent.errors import MessageError
from agent.release import UpdateQuery, UpdateReport
from broker.agents.packages import PACKAGE_SHELF, PackageName
from broker.agents.releases import MANIFEST_SUFFIX, SIGNATURE_SUFFIX
from broker.agents.signed_requests import verify_agent_request
from broker.errors import InputError
from broker.services import SERVICES

_MANIFEST_MAX = 4096


def newest_published(directory: Path, names: list[PackageName], arch: str) -> PackageName | None:
    """The highest version for ``arch`` whose manifest and signature are present."""
    published = [
        n
        for n in names
        if n.arch == arch
        and (directory / (n.file + MANIFEST_SUFFIX)).is_file()
        and (directory / (n.file + SIGNATURE_SUFFIX)).is_file()
    ]
    return max(published, key=lambda n: n.version_key) if published else None


def _offer(directory: Path, name: PackageName | None) -> dict[str, object]:
    if name is None:
        return {"offer": None}
    manifest = (directory / (name.file + MANIFEST_SUFFIX)).read_bytes()[:_MANIFEST_MAX]
    signature = (directory / (name.file + SIGNATURE_SUFFIX)).read_bytes()[:_MANIFEST_MAX]
    return {
        "offer": {
            "path": name.path,
            "manifest": manifest.decode("utf-8", "replace"),
            "signature": signature.decode("ascii", "replace").strip(),
        }
    }


async def update_handler(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    await verify_agent_request(request, services)
    try:
        query = UpdateQuery.parse(await request.read())
    except MessageError as exc:
        raise InputError(str(exc), code="bad_update_query") from None
    shelf = request.app[PACKAGE_SHELF]

    def find() -> dict[str, object]:
        names = shelf.names()
        return _offer(shelf.directory, newest_published(shelf.directory, names, query.arch))

    return web.json_response(await asyncio.to_thread(find), dumps=json.dumps)


async def update_report_handler(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    agent = await verify_agent_request(request, services)
    try:
        report = UpdateReport.parse(await request.read())
    except MessageError as exc:
        raise InputError(str(exc), code="bad_update_report") from None
    await services.audit.record(
        actor=f"agent:{agent.id}",
        action="agent.update",
        target=agent.name,
        outcome="ok" if report.outcome == "installed" else "denied",
        source=request.remote or "",
        details={"version": report.version, "outcome": report.outcome, "reason": report.reason},
    )
    return web.json_response({"recorded": True})
