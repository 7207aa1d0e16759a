"""`secondline agent publish FILE` on the broker host: the package, its manifest and the
manifest's signature by the release key land in the packages dir, and the broker serves
all three at the package's versioned path."""

from __future__ import annotations

import ssl
from pathlib import Path

import aiohttp
import pytest
from cryptography.hazmat.primitives import serialization

from agent.release import check_package, verify_manifest
from broker.keys import RELEASE_KEY, load_ed25519
from tests.support.broker import init_dir, secondline, start_broker
from tests.support.database import make_backend
from tests.support.site import ok

PACKAGE_BYTES = b"!<arch>\n" + bytes(range(256)) * 64


def _release_public_raw(data_dir: Path) -> bytes:
    key = load_ed25519(data_dir / "keys" / RELEASE_KEY)
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


async def _get(url: str, tls_cert: Path) -> bytes:
    """The body of a 200 answer, trusting the broker's own certificate only."""
    context = ssl.create_default_context(cafile=str(tls_cert))
    async with aiohttp.ClientSession() as http, http.get(url, ssl=context) as answer:
        assert answer.status == 200, url
        return await answer.read()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """An initialised data dir; publishing touches no database, so SQLite is enough."""
    return init_dir(tmp_path / "data", make_backend("sqlite", tmp_path, ""))


async def test_published_release_verifies_with_the_release_key(
    data_dir: Path, tmp_path: Path
) -> None:
    """A data dir made before release keys gets one on first publish; what the broker then
    serves verifies with it, and the package's bytes are the manifest's."""
    (data_dir / "keys" / RELEASE_KEY).unlink()
    deb = tmp_path / "secondline-agent_0.2.0_amd64.deb"
    deb.write_bytes(PACKAGE_BYTES)

    out = ok(secondline("agent", "publish", str(deb), data_dir=data_dir))
    assert "0.2.0" in out
    shelf = data_dir / "agent-packages"
    assert sorted(p.name for p in shelf.iterdir()) == [
        deb.name,
        deb.name + ".manifest",
        deb.name + ".manifest.sig",
    ]
    assert (data_dir / "keys" / RELEASE_KEY).stat().st_mode & 0o777 == 0o600

    broker = await start_broker(data_dir)
    try:
        base = f"https://127.0.0.1:{broker.https_port}/agent/packages/0.2.0/{deb.name}"
        cert = data_dir / "keys" / "tls.crt"
        body = await _get(base + ".manifest", cert)
        signature = (await _get(base + ".manifest.sig", cert)).decode()
        manifest = verify_manifest(_release_public_raw(data_dir), body, signature)
        assert (manifest.version, manifest.arch) == ("0.2.0", "amd64")
        check_package(manifest, await _get(base, cert))
    finally:
        await broker.stop()


def test_publish_refuses_a_file_that_is_no_agent_package(data_dir: Path, tmp_path: Path) -> None:
    """A file not named as `make agent-deb` names packages is refused in one line, and
    nothing is written to the packages dir."""
    other = tmp_path / "secondline-agent_1.0_amd64.deb; rm -rf"
    other.write_bytes(b"x")
    result = secondline("agent", "publish", str(other), data_dir=data_dir)
    assert result.code != 0
    assert "not an agent package name" in result.err
    assert "Traceback" not in result.err
    assert not (data_dir / "agent-packages").exists()
