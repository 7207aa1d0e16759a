"""The terminal page's file transfers (``/files/sessions/{id}/upload|download``) through the
real app, hub and stand-in agent (OpenSSH's sftp-server as the login account): a round
trip recorded as a file session of its own, and the refusals (bad path, too large each
way, a level-1 observer, a caller not in the session), each audited."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from broker.transcript import transcript_paths
from broker.transcript.export import files_from_cast
from tests.component.test_sessions_console import connect, mint
from tests.component.test_sessions_harness import World, world
from tests.component.test_sessions_shell import verify

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.filterwarnings("ignore:The Result.tuples:DeprecationWarning"),
]

LIMITS = {
    "SECONDLINE_SFTP_MAX_UPLOAD_BYTES": "100000",
    "SECONDLINE_SFTP_MAX_DOWNLOAD_BYTES": "100000",
}


async def transfer(
    w: World, token: str, sid: str, way: str, path: str, body: bytes | None = None
) -> tuple[int, Any, bytes]:
    resp = await w.client.post(
        f"/files/sessions/{sid}/{way}",
        params={"path": path},
        data=body if body is not None else b"",
        headers={"Authorization": f"Bearer {token}", "Origin": w.services.config.public_url},
    )
    raw = await resp.read()
    data = await resp.json() if resp.content_type == "application/json" else None
    return resp.status, data, raw


async def file_sessions(w: World) -> list[dict[str, Any]]:
    _, rows = await w.call("GET", f"/sessions?ticket={w.ticket}", expect=200)
    return [r for r in rows if r["kind"] == "sftp"]


async def test_round_trip_and_refusals(data_dir: Path, tmp_path: Path) -> None:
    """An upload and its download are byte-identical and recorded with their SHA-256 in a
    file session of the same ticket; a control character in the path, an upload or a
    download past its limit, a level-1 observer and a caller not in the session are
    refused with a sentence, nothing written, and audited."""
    payload = os.urandom(70_000)
    sha = hashlib.sha256(payload).hexdigest()
    there = tmp_path / "fixed.conf"
    async with world(data_dir, tmp_path, env=LIMITS) as w:
        _, carol = await w.add_staff("carol", "level1")
        owner = await connect(w, w.staff_token, await mint(w, w.staff_token))
        await owner.read_until(lambda b: b.has_state("running"))
        sid = next(c["session"] for c in owner.controls if c.get("state") == "running")

        status, data, _ = await transfer(w, w.staff_token, sid, "upload", str(there), payload)
        assert status == 200, data
        assert data["sha256"] == sha
        assert data["size"] == len(payload)
        assert there.read_bytes() == payload
        status, data, raw = await transfer(w, w.staff_token, sid, "download", str(there))
        assert status == 200
        assert raw == payload
        up, down = sorted(await file_sessions(w), key=lambda r: r["created_at"])
        assert up["id"] != sid
        assert up["via"] == "web"
        markers = [
            *files_from_cast(cast(w, up["id"])),
            *files_from_cast(cast(w, down["id"])),
        ]
        assert markers[0].startswith(f"upload {there} size=70000 sha256={sha}")
        assert markers[1].startswith(f"download {there} size=70000 sha256={sha}")
        await w.wait_for(lambda: ended(w, 2), "both file sessions ended")
        assert verify(w, up["id"])[0] == "valid"

        big = os.urandom(150_000)
        (tmp_path / "big.log").write_bytes(big)
        refused = [
            (w.staff_token, "upload", str(tmp_path / "a\x1b[2Jb"), b"x", 400, "bad_path"),
            (w.staff_token, "upload", "x" * 1025, b"x", 400, "bad_path"),
            (w.staff_token, "upload", str(tmp_path / "new.bin"), big, 413, "file_too_large"),
            (w.staff_token, "download", str(tmp_path / "big.log"), None, 413, "file_too_large"),
        ]
        for token, way, path, body, code, error in refused:
            status, data, _ = await transfer(w, token, sid, way, path, body)
            assert (status, data["error"]["code"]) == (code, error), data
            assert "; " in data["error"]["message"]  # what happened; what to do
        assert not (tmp_path / "new.bin").exists()

        watcher = await connect(w, carol, await mint(w, carol, mode="observe", session=sid))
        await watcher.read_until(lambda b: b.has_state("running"))
        status, data, _ = await transfer(w, carol, sid, "upload", str(tmp_path / "c"), b"c")
        assert (status, data["error"]["code"]) == (403, "level_too_low"), data
        assert not (tmp_path / "c").exists()
        _, dave = await w.add_staff("dave", "level2")
        status, data, _ = await transfer(w, dave, sid, "download", str(there))
        assert status == 404, data

        _, events = await w.call("GET", "/audit?limit=200", expect=200)
        actions = [(e["action"], e["actor"], e["outcome"]) for e in events]
        assert actions.count(("console.file_refused", "bob", "denied")) == 4
        assert ("session.refused", "carol", "denied") in actions
        assert ("console.file_refused", "dave", "denied") in actions
        # The too-large download opened a file session that ended with nothing read.
        await w.wait_for(lambda: ended(w, 3), "the refused download's session ended")
        assert len(await file_sessions(w)) == 3


def cast(w: World, session_id: str) -> Path:
    return transcript_paths(w.services.config.transcripts_dir, session_id).cast


async def ended(w: World, count: int) -> bool:
    rows = await file_sessions(w)
    return len(rows) == count and all(r["state"] == "ended" for r in rows)
