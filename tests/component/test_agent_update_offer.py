"""The broker's update offer over the real app on loopback, checked as an agent checks it
(agent.release): a newer published release verifies and would be installed; a tampered
package, a foreign signature and a downgrade are refused, reported and audited."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncssh
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pytest_aiohttp import AiohttpClient

from agent.enrollment import EnrollmentAnswer
from agent.errors import ReleaseError
from agent.release import (
    UPDATE_PATH,
    UPDATE_REPORT_PATH,
    ReleaseManifest,
    UpdateQuery,
    UpdateReport,
    Verdict,
    check_package,
    decide_update,
    install_command,
    sign_manifest,
    verify_manifest,
)
from agent.signing import sign_request
from broker.agents.releases import SIGNATURE_SUFFIX, publish
from tests.component.test_agents_harness import AgentsApp, start_agents_app

pytestmark = pytest.mark.postgres

PACKAGE_BYTES = b"!<arch>\n" + bytes(range(256)) * 32


@dataclass
class Enrolled:
    agents: AgentsApp
    agent_id: str
    key: Ed25519PrivateKey
    release_key: bytes

    async def post(self, path: str, body: bytes) -> dict[str, object]:
        headers = sign_request(self.key, self.agent_id, body, time.time(), path=path)
        headers["Content-Type"] = "application/json"
        resp = await self.agents.api.client.post(path, data=body, headers=headers)
        assert resp.status == 200, await resp.text()
        data = await resp.json()
        assert isinstance(data, dict)
        return data

    async def offer(self, installed: str) -> tuple[ReleaseManifest, bytes]:
        """Ask for an update; verify the offer with the pinned key; download the package."""
        answer = await self.post(UPDATE_PATH, UpdateQuery(installed, "amd64").serialize())
        offer = answer["offer"]
        assert isinstance(offer, dict)
        manifest = verify_manifest(
            self.release_key, str(offer["manifest"]).encode(), str(offer["signature"])
        )
        resp = await self.agents.api.client.get(str(offer["path"]))
        assert resp.status == 200
        return manifest, await resp.read()

    async def report(self, version: str, outcome: str, reason: str) -> None:
        await self.post(UPDATE_REPORT_PATH, UpdateReport(version, outcome, reason).serialize())


@pytest.fixture
async def enrolled(data_dir: Path, aiohttp_client: AiohttpClient) -> AsyncIterator[Enrolled]:
    async with start_agents_app(data_dir, aiohttp_client) as agents:
        await agents.customer("acme")
        token = await agents.token("acme")
        key = Ed25519PrivateKey.generate()
        openssh = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
        status, data, _ = await agents.enroll(
            str(token["token"]), key=asyncssh.import_private_key(openssh)
        )
        assert status == 200, data
        answer = EnrollmentAnswer.parse(json.dumps(data))
        assert answer.release_key is not None
        yield Enrolled(agents, answer.agent_id, key, answer.release_key.raw)


def _publish(enrolled: Enrolled, tmp_path: Path, version: str) -> Path:
    deb = tmp_path / f"secondline-agent_{version}_amd64.deb"
    deb.write_bytes(PACKAGE_BYTES + version.encode())
    services = enrolled.agents.services
    publish(deb, services.config.agent_packages_path, services.keys.release_key)
    return services.config.agent_packages_path / deb.name


async def test_nothing_published_is_no_offer(enrolled: Enrolled) -> None:
    """Without a published release the broker offers nothing."""
    answer = await enrolled.post(UPDATE_PATH, UpdateQuery("0.1.0", "amd64").serialize())
    assert answer == {"offer": None}


async def test_newer_release_verifies_and_installs_at_a_quiet_moment(
    enrolled: Enrolled, tmp_path: Path
) -> None:
    """The newest published release verifies with the pinned key and its digest; it waits
    while a session is live and is installed with dpkg once none is."""
    _publish(enrolled, tmp_path, "0.2.0")
    _publish(enrolled, tmp_path, "0.3.0")
    manifest, data = await enrolled.offer("0.2.0")
    check_package(manifest, data)
    busy = decide_update(installed="0.2.0", arch="amd64", offered=manifest, live_sessions=1)
    assert busy.verdict is Verdict.WAIT
    quiet = decide_update(installed="0.2.0", arch="amd64", offered=manifest, live_sessions=0)
    assert (quiet.verdict, manifest.version) == (Verdict.INSTALL, "0.3.0")
    assert install_command("/var/lib/secondline-agent/updates/" + manifest.file)[:3] == [
        "dpkg",
        "--install",
        "--",
    ]
    await enrolled.report(manifest.version, "installed", quiet.reason)
    [event] = await enrolled.agents.audit("agent.update")
    assert (event.outcome, event.details["version"]) == ("ok", "0.3.0")


async def test_tampered_package_is_refused_and_audited(enrolled: Enrolled, tmp_path: Path) -> None:
    """Bytes changed on the broker's disk after signing fail the digest check."""
    shelved = _publish(enrolled, tmp_path, "0.2.0")
    shelved.write_bytes(shelved.read_bytes()[:-1] + b"X")
    manifest, data = await enrolled.offer("0.1.0")
    with pytest.raises(ReleaseError, match="SHA-256") as refused:
        check_package(manifest, data)
    await enrolled.report(manifest.version, "refused", str(refused.value))
    [event] = await enrolled.agents.audit("agent.update")
    assert event.outcome == "denied"
    assert "SHA-256" in str(event.details["reason"])


async def test_signature_by_another_key_is_refused(enrolled: Enrolled, tmp_path: Path) -> None:
    """A manifest signed by any key but the broker's release key (here: a swapped package
    with a manifest and signature of its own) is refused before anything is downloaded."""
    shelved = _publish(enrolled, tmp_path, "0.2.0")
    manifest_path = shelved.with_name(shelved.name + ".manifest")
    forged = Ed25519PrivateKey.generate()
    shelved.with_name(shelved.name + SIGNATURE_SUFFIX).write_text(
        sign_manifest(forged, manifest_path.read_bytes()) + "\n"
    )
    with pytest.raises(ReleaseError, match="does not verify"):
        await enrolled.offer("0.1.0")


async def test_downgrade_is_refused_and_audited(enrolled: Enrolled, tmp_path: Path) -> None:
    """An offer older than the installed version is refused, however well it is signed."""
    _publish(enrolled, tmp_path, "0.2.0")
    manifest, data = await enrolled.offer("0.3.0")
    check_package(manifest, data)
    decision = decide_update(installed="0.3.0", arch="amd64", offered=manifest, live_sessions=0)
    assert decision.verdict is Verdict.REFUSE
    await enrolled.report(manifest.version, "refused", decision.reason)
    [event] = await enrolled.agents.audit("agent.update")
    assert event.outcome == "denied"
    assert "downgrade" in str(event.details["reason"])


async def test_unsigned_requests_and_bad_reports_are_refused(enrolled: Enrolled) -> None:
    """The update requests need the agent's signature; a report with a control character
    in its reason is refused and nothing is audited as an update."""
    resp = await enrolled.agents.api.client.post(
        UPDATE_PATH, data=UpdateQuery("0.1.0", "amd64").serialize()
    )
    assert resp.status == 401
    body = json.dumps({"version": "0.2.0", "outcome": "refused", "reason": "a\x1b[2Jb"}).encode()
    headers = sign_request(
        enrolled.key, enrolled.agent_id, body, time.time(), path=UPDATE_REPORT_PATH
    )
    resp = await enrolled.agents.api.client.post(UPDATE_REPORT_PATH, data=body, headers=headers)
    assert resp.status == 400
    assert await enrolled.agents.audit("agent.update") == []
