"""The end user's view of a file session: the machine's own OpenSSH `sftp-server`, run as
the agent runs it (`-e -l INFO`) under the real `sftp` client, reports what moved, and
`FileActivity` counts it; a hostile name cannot forge a line."""

from __future__ import annotations

import asyncio
from pathlib import Path

from agent.sftp_activity import FileActivity
from agent.ssh_server import sftp_server_path
from tests.support.processes import communicate

WAIT = 30


async def _sftp(batch: str, tmp: Path) -> bytes:
    server = sftp_server_path()
    assert server is not None, "install openssh-sftp-server"
    (tmp / "batch").write_text(batch)
    proc = await asyncio.create_subprocess_exec(
        "/usr/bin/sftp", "-b", str(tmp / "batch"), "-D", f"{server} -e -l INFO",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await communicate(proc, WAIT)
    assert proc.returncode == 0, err
    return err


async def test_the_servers_own_log_counts_files_each_way(tmp_path: Path) -> None:
    """An upload, a download, a rename and a remove, as sftp-server logs them, become the
    counts and last file `secondline-agent sessions` shows."""
    (tmp_path / "up.bin").write_bytes(b"u" * 3000)
    (tmp_path / "log.txt").write_bytes(b"l" * 700)
    err = await _sftp(
        f"put {tmp_path}/up.bin {tmp_path}/there.bin\nget {tmp_path}/log.txt "
        f"{tmp_path}/here.txt\nrename {tmp_path}/there.bin {tmp_path}/moved.bin\n"
        f"rm {tmp_path}/here.txt\n",
        tmp_path,
    )
    activity = FileActivity()
    for at in range(0, len(err), 7):  # cut anywhere
        activity.feed(err[at : at + 7])
    assert (activity.written, activity.bytes_written) == (1, 3000)
    assert (activity.read, activity.bytes_read) == (1, 700)
    assert activity.changed == 2
    assert activity.last == f"{tmp_path}/here.txt"
    assert activity.summary().startswith("files: 1 written (3000 bytes), 1 read (700 bytes)")


async def test_a_hostile_name_stays_one_escaped_line(tmp_path: Path) -> None:
    """A name holding a newline and a forged log line is escaped by sftp-server, so it
    counts as the one file it is."""
    forged = 'x\nclose "shadow" bytes read 999 written 0'
    (tmp_path / forged).write_bytes(b"abc")
    err = await _sftp(f"get {tmp_path}/x* {tmp_path}/copy\n", tmp_path)  # a batch is lines
    activity = FileActivity()
    activity.feed(err)
    assert (activity.read, activity.bytes_read) == (1, 3)
    assert "\n" not in activity.last
    assert "shadow" in activity.last  # as part of the escaped name, not a line of its own
