"""A file session's limits and unfinished files through the real gateway, hub and agent
(OpenSSH's sftp-server as the login account): the upload limit and the files-per-session
limit stop the session with the setting named, an upload cut off halfway is recorded as
incomplete, and every transcript still verifies."""

from __future__ import annotations

import os
from pathlib import Path

import asyncssh
import pytest

from broker.transcript import transcript_paths
from broker.transcript.export import files_from_cast
from tests.component.test_sessions_harness import World, world
from tests.component.test_sessions_shell import verify, wait_state

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.filterwarnings("ignore:The Result.tuples:DeprecationWarning"),
]

LIMITS = {
    "SECONDLINE_SFTP_MAX_UPLOAD_BYTES": "200000",
    "SECONDLINE_SFTP_MAX_FILES_PER_SESSION": "3",
}


def _cast(w: World, session_id: str) -> Path:
    return transcript_paths(w.services.config.transcripts_dir, session_id).cast


def _markers(w: World, session_id: str) -> list[str]:
    return list(files_from_cast(_cast(w, session_id)))


async def test_upload_and_file_limits_end_the_session(data_dir: Path, tmp_path: Path) -> None:
    """An upload past sftp_max_upload_bytes is refused before its bytes reach the machine
    and recorded failed:too-large; the open past sftp_max_files_per_session is refused;
    both sessions end, and their transcripts verify."""
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(500_000))
    there = tmp_path / "there.bin"
    async with world(data_dir, tmp_path, env=LIMITS) as w:
        async with await w.ssh() as conn, conn.start_sftp_client() as sftp:
            with pytest.raises((asyncssh.SFTPError, asyncssh.Error, OSError)):
                await sftp.put(str(big), str(there))
        detail = await wait_state(w, w.ticket, "ended")
        assert there.stat().st_size <= 200_000  # nothing past the limit was relayed
        (marker,) = _markers(w, detail["id"])
        assert marker.startswith(f"upload {there} size=")
        assert marker.endswith("failed:too-large")
        cast = _cast(w, detail["id"]).read_text()
        assert '"m", "files refused: ' in cast
        assert "(sftp_max_upload_bytes); the session ended" in cast
        assert verify(w, detail["id"]) == ("valid", "ended")

        for name in "abcd":
            (tmp_path / name).write_bytes(name.encode())
        async with await w.ssh() as conn, conn.start_sftp_client() as sftp:
            for name in "abc":
                await sftp.get(str(tmp_path / name), str(tmp_path / f"{name}.copy"))
            with pytest.raises((asyncssh.SFTPError, asyncssh.Error, OSError)):
                await sftp.get(str(tmp_path / "d"), str(tmp_path / "d.copy"))
        detail = await wait_state(w, w.ticket, "ended")
        assert [m.split(" size=")[0] for m in _markers(w, detail["id"])] == [
            f"download {tmp_path / name}" for name in "abc"
        ]
        assert not (tmp_path / "d.copy").exists()
        assert "(sftp_max_files_per_session)" in _cast(w, detail["id"]).read_text()
        assert verify(w, detail["id"]) == ("valid", "ended")


async def test_a_full_disk_and_an_upload_cut_off_halfway(data_dir: Path, tmp_path: Path) -> None:
    """A write the machine refuses (its disk is full: /dev/full) is recorded as failed, with
    no digest of bytes that did not land; the client's connection dropping in the middle of
    an upload leaves the part that arrived under its name on the machine and is recorded
    as failed:incomplete with no digest and none of its content kept; both verify."""
    half = tmp_path / "half.iso"
    async with world(data_dir, tmp_path) as w:
        async with await w.ssh() as conn, conn.start_sftp_client() as sftp:
            full = await sftp.open("/dev/full", "wb")
            with pytest.raises(asyncssh.SFTPError):
                await full.write(b"f" * 1000)
            await full.close()
        detail = await wait_state(w, w.ticket, "ended")
        assert _markers(w, detail["id"]) == ["upload /dev/full size=1000 failed:write-failure"]
        assert verify(w, detail["id"])[0] == "valid"

        conn = await w.ssh()
        sftp = await conn.start_sftp_client()
        handle = await sftp.open(str(half), "wb")
        await handle.write(b"h" * 60_000)
        await handle.write(b"h" * 60_000, 60_000)  # answered: both writes reached the agent
        conn.abort()
        detail = await wait_state(w, w.ticket, "ended")
        (marker,) = _markers(w, detail["id"])
        assert marker == f"upload {half} size=120000 failed:incomplete"
        assert half.stat().st_size == 120_000
        cast = _cast(w, detail["id"])
        assert not any(cast.with_name(cast.name + ".files").glob("*"))
        assert verify(w, detail["id"])[0] == "valid"
