"""Sessions end to end: a real `secondline serve`, a really enrolled `secondline-agent run`,
and the real OpenSSH client (`/usr/bin/ssh -F /dev/null`, its own key, a known_hosts file
holding the gateway's key, StrictHostKeyChecking=yes, BatchMode=yes)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.broker import start_broker
from tests.support.site import (
    WAIT,
    Site,
    agent_cli,
    asciinema_cat,
    assert_noted_once,
    keygen,
    new_ticket,
    notes_of,
    ok,
    read_stderr_until,
    run_agent,
    session_ids,
    sessions_of,
    spawn_ssh,
    start_agent,
    stop_agent,
    wait_note,
)

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]


async def test_ssh_command_shell_note_export_and_verify(site: Site) -> None:
    """`ssh … 'echo hello; exit 3'` prints hello and exits 3; an interactive session runs two
    commands; the note arrives with both and both attachments; the exported .cast plays in
    asciinema and verifies, and fails to verify after one byte changes; a password typed at
    `read -s` is in neither transcript nor note."""
    await start_agent(site, "web01", "unattended")
    site.ticket = new_ticket(site, "web01")
    result = await site.ssh(site.ticket, "echo hello; exit 3")
    assert (result.code, result.out) == (3, "hello\n"), result.err

    term = await site.interactive(site.ticket)
    term.type('w=word; read -s -p "Pass$w: " pw; echo "got ${#pw} chars"\n')
    await term.expect(b"Password: ")
    term.type("s3cret-Hunter2\n")
    await term.expect(b"got 14 chars")
    term.type("echo first-$((20+22))\n")
    await term.expect(b"first-42")
    term.type("ls /nonexistent-dir-xyz\n")
    await term.expect(b"No such file")
    term.type("exit\n")
    mark = len(site.broker.output)
    code, _ = await term.finish()
    assert code == 2
    shell_session = str(sessions_of(site, site.ticket)[0]["id"])  # newest first
    note = await wait_note(site, site.ticket, shell_session, mark)
    text = str(note["text"])
    assert "[exit 0" in text
    assert "echo first-$((20+22))" in text
    assert "[exit 2" in text
    assert "ls /nonexistent-dir-xyz" in text
    attachments = note["attachments"]
    assert isinstance(attachments, list)
    assert sorted(attachments) == sorted([f"{shell_session}.cast", f"{shell_session}.txt"])
    assert "Hunter2" not in text

    cast = site.tmp / "export.cast"
    ok(site.admin("transcript", "export", shell_session, "--format", "cast", "-o", str(cast)))
    assert b"first-42" in asciinema_cat(cast)
    assert "Hunter2" not in cast.read_text()
    rendered = site.tmp / "export.txt"
    ok(site.admin("transcript", "export", shell_session, "--format", "txt", "-o", str(rendered)))
    assert "Hunter2" not in rendered.read_text()
    assert "input hidden (echo off)" in rendered.read_text()
    verified = site.admin("transcript", "verify", str(cast))
    assert verified.code == 0, verified
    assert verified.out.startswith("valid")
    assert ok(site.admin("transcript", "verify", shell_session)).startswith("valid")
    bundle = site.tmp / "export.json"
    ok(site.admin("transcript", "export", shell_session, "--format", "json", "-o", str(bundle)))
    assert site.admin("transcript", "verify", str(bundle)).code == 0

    data = bytearray(cast.read_bytes())
    spot = data.index(b"first-42")
    data[spot] = ord("F")
    cast.write_bytes(bytes(data))
    broken = site.admin("transcript", "verify", str(cast))
    assert broken.code == 1
    assert broken.out.startswith("INVALID, first bad event"), broken.out


async def test_attended_consent_approve_deny_timeout(site: Site) -> None:
    """On an attended agent nothing runs before the end user approves; a denial and no
    answer in time are refused with the reason shown to the staff member."""
    state = await start_agent(site, "web01", "attended")
    site.ticket = new_ticket(site, "web01")
    for answer in ("approve", "deny"):
        proc = await spawn_ssh(site, site.ticket, f"echo ran-after-{answer}")
        told = await read_stderr_until(proc, b"waiting for the end user's approval on web01")
        sid = session_ids(told.decode())[0]
        waiting = json.loads(ok(agent_cli(state, "sessions", "--json")))
        assert sid in json.dumps(waiting)
        assert sessions_of(site, site.ticket)[0]["state"] == "waiting_consent"
        ok(agent_cli(state, answer, sid))
        assert proc.stdout is not None
        assert proc.stderr is not None
        async with asyncio.timeout(WAIT):
            out = await proc.stdout.read()
            err = told + await proc.stderr.read()
            code = await proc.wait()
        if answer == "approve":
            assert (code, out) == (0, b"ran-after-approve\n")
        else:
            assert code == 255
            assert out == b""
            assert b"the end user denied the session" in err
    await stop_agent(site)
    config = state / "agent.toml"
    config.write_text("consent_timeout_seconds = 1\n")
    config.chmod(0o600)
    await run_agent(site, state, "web01")
    result = await site.ssh(site.ticket, "echo never")
    assert result.code == 255
    assert result.out == ""
    assert "did not answer in time" in result.err
    states = [s["state"] for s in sessions_of(site, site.ticket)]
    assert states == ["refused", "refused", "ended"]


async def test_bad_input_through_openssh(site: Site) -> None:
    """Hostile user names, unknown tickets, keys of nobody or of a disabled account, tickets
    the rules refuse, forwarding and subsystems: refused, with a reason, exit non-zero."""
    await start_agent(site, "web01", "unattended")
    site.ticket = new_ticket(site, "web01")
    for user in ("../../etc/passwd", "T-1%2e%2e", "T-1 2", "T-1042+../web01"):
        result = await site.ssh(user, "true")
        assert result.code == 255, user
        assert "invalid SSH user name" in result.err, result.err
    too_long = await site.ssh("A" * 4096, "true")
    assert too_long.code == 255
    assert "Username too long" in too_long.err  # asyncssh's refusal, before the gateway's
    unknown = await site.ssh("T-999999", "true")
    assert unknown.code == 255
    assert "there is no ticket T-999999" in unknown.err
    stranger = keygen(site.tmp / "stranger")
    assert "Permission denied" in (await site.ssh(site.ticket, "true", key=stranger)).err
    carol_key = keygen(site.tmp / "carol")
    ok(
        site.admin(
            "user", "add", "carol", "--role", "level2", "--customer", "acme",
            "--ssh-key", f"{carol_key}.pub",
        )
    )  # fmt: skip
    theirs = await site.ssh(site.ticket, "true", key=carol_key)
    assert theirs.code == 255
    assert "is assigned to bob" in theirs.err
    ok(site.admin("user", "disable", "carol"))
    assert "Permission denied" in (await site.ssh(site.ticket, "true", key=carol_key)).err
    options = ("-N", "-o", "ExitOnForwardFailure=yes", "-R", "0:127.0.0.1:22")
    forward = await site.ssh(site.ticket, options=options)
    assert forward.code != 0
    assert "forwarding failed" in forward.err
    # sftp is served (tests/e2e/test_sessions_files.py); any other subsystem is refused.
    subsystem = await site.ssh(site.ticket, "netconf", options=("-s",))
    assert subsystem.code != 0
    assert "subsystem request failed" in subsystem.err
    refused = json.loads(ok(site.admin("audit", "list", "--json")))
    actions = {e["action"] for e in refused}
    assert {"ssh.auth_failed", "session.refused", "ssh.refused"} <= actions


async def test_agent_drop_then_broker_killed(site: Site, tmp_path: Path) -> None:
    """An agent that dies mid-session ends it as "agent disconnected", sealed and noted
    once; a broker killed mid-session marks it interrupted on restart, sealed but
    verifiable, and noted once."""
    state = await start_agent(site, "web01", "unattended")
    site.ticket = new_ticket(site, "web01")
    term = await site.interactive(site.ticket)
    term.type("echo alive-$((6*7))\n")
    await term.expect(b"alive-42")
    mark = len(site.broker.output)
    assert site.agent is not None
    site.agent.send_signal(signal.SIGKILL)
    code, err = await term.finish()
    assert code == 255
    assert "the agent disconnected" in err
    sid = str(sessions_of(site, site.ticket)[0]["id"])
    await wait_note(site, site.ticket, sid, mark)
    assert ok(site.admin("transcript", "verify", sid)).startswith("valid")

    await run_agent(site, state, "web01")
    await assert_noted_once(site, site.ticket, sid)
    term = await site.interactive(site.ticket)
    term.type("echo before-crash-$((1+2))\n")
    await term.expect(b"before-crash-3")
    crashed = str(sessions_of(site, site.ticket)[0]["id"])
    assert crashed != sid
    await site.broker.stop(signal.SIGKILL)
    code, _ = await term.finish()
    assert code == 255
    again = await start_broker(site.data_dir)
    try:
        shown = json.loads(ok(site.admin("session", "show", crashed, "--json")))
        assert shown["state"] == "interrupted"
        verdict = site.admin("transcript", "verify", crashed)
        assert verdict.code == 0, verdict
        assert verdict.out.startswith("valid, but cut short (interrupted)")
        await again.wait_for_line(b"session " + crashed.encode() + b": note delivered")
        site.broker = again
        await stop_agent(site)  # no waiting for its backoff: a fresh start is online at once
        await run_agent(site, state, "web01")
        await assert_noted_once(site, site.ticket, crashed)
        assert len(notes_of(site, site.ticket, sid)) == 1
    finally:
        await again.stop()


async def test_sigterm_drains_live_sessions(site: Site) -> None:
    """SIGTERM tells the staff member, seals the transcript and sends the note before exit;
    after a restart the note is still there once."""
    state = await start_agent(site, "web01", "unattended")
    site.ticket = new_ticket(site, "web01")
    term = await site.interactive(site.ticket)
    term.type("echo working-$((5+5))\n")
    await term.expect(b"working-10")
    sid = str(sessions_of(site, site.ticket)[0]["id"])
    assert await site.broker.stop(signal.SIGTERM) == 0
    code, err = await term.finish()
    assert code == 255
    assert "the broker is shutting down" in err
    output = b"".join(site.broker.output)
    assert b"session " + sid.encode() + b": note delivered" in output
    verdict = site.admin("transcript", "verify", sid)
    assert verdict.code == 0
    assert verdict.out.startswith("valid:")
    site.broker = await start_broker(site.data_dir)
    try:
        await stop_agent(site)  # no waiting for its backoff: a fresh start is online at once
        await run_agent(site, state, "web01")
        await assert_noted_once(site, site.ticket, sid)
    finally:
        await site.broker.stop()


@pytest.fixture
def tiny_transcripts(data_dir: Path) -> Iterator[Path]:
    """The data dir's transcript directory on a 64 KiB tmpfs, unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    root = data_dir / "transcripts"
    root.mkdir(mode=0o700, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(root)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode(errors='replace')}")
    try:
        yield root
    finally:
        subprocess.run(["umount", "-l", str(root)], check=True)


def make_room(tmpfs: Path) -> None:
    """Grow the tiny tmpfs to 16 MiB, as an admin freeing space would."""
    subprocess.run(["mount", "-o", "remount,size=16m", str(tmpfs)], check=True, timeout=WAIT)


async def test_full_disk_while_recording(tiny_transcripts: Path, site: Site) -> None:
    """A full transcript disk ends the session with a clear message; the partial transcript
    verifies and says it was cut short, and so does the note, once; once there is room
    again, sessions are recorded again."""
    await start_agent(site, "web01", "unattended")
    site.ticket = new_ticket(site, "web01")
    mark = len(site.broker.output)
    result = await site.ssh(
        site.ticket, "echo start-line; head -c 3000000 /dev/zero | tr '\\0' z; sleep 30"
    )
    assert result.code == 255
    assert "the broker's disk is full" in result.err
    sid = str(sessions_of(site, site.ticket)[0]["id"])
    verdict = site.admin("transcript", "verify", sid)
    assert verdict.code == 0, verdict
    assert verdict.out.startswith("valid, but cut short (disk full)")
    assert "start-line" in (tiny_transcripts / f"{sid}.cast").read_text()
    note = await wait_note(site, site.ticket, sid, mark)
    assert "cut short" in str(note["text"])
    # An admin makes room; the next session (assert_noted_once's) is recorded in full.
    make_room(tiny_transcripts)
    await assert_noted_once(site, site.ticket, sid)
