"""README.md and docs/agent.md run as written: their walkthrough blocks (marked
``<!-- walkthrough -->``, see CONTRIBUTING.md) run in order with bash against a real
`secondline serve`, a really enrolled `secondline-agent run` and the real OpenSSH client.
An edit that breaks a command, or a command that prints a traceback, fails this test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.broker import cli_env, free_ports, secondline, start_broker
from tests.support.site import ok
from tests.support.walkthrough import Walkthrough, WalkthroughFailed, blocks, steps, substitute

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def substitutions(tmp: Path, https_port: int, ssh_port: int) -> list[tuple[str, str]]:
    """The one place where the test's machine replaces the README's: host, ports, paths.

    Applied in this order to every walkthrough block before bash sees it."""
    return [
        ("/var/lib/secondline", str(tmp / "broker-data")),  # the broker's data dir
        ("broker.example.com", "127.0.0.1"),  # the broker's host name
        ("8443", str(https_port)),  # HTTPS: console, API, agent tunnel
        ("2222", str(ssh_port)),  # the SSH gateway
        # The agent's state dir (the README's default is /var/lib/secondline-agent as root).
        ("secondline-agent ", f"secondline-agent --state-dir {tmp / 'agent-state'} "),
        # alice's OpenSSH settings (~/.ssh/config would be read from the passwd home dir).
        ("ssh -p", f"ssh -F {tmp / 'home' / '.ssh' / 'config'} -p"),
    ]


def machine(tmp: Path, https_port: int, ssh_port: int) -> tuple[Path, dict[str, str]]:
    """The walkthrough's working dir and environment: what people bring (alice's key pair,
    lena's password file), a home with alice's OpenSSH settings, the project's commands on
    PATH, and the broker listening on loopback on the test's ports."""
    work, ssh_dir = tmp / "work", tmp / "home" / ".ssh"
    work.mkdir()
    ssh_dir.mkdir(parents=True, mode=0o700)
    key = ssh_dir / "id_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "alice@laptop", "-f", str(key)],
        check=True,
    )
    (work / "alice.pub").write_bytes(key.with_suffix(".pub").read_bytes())
    (work / "lena.pw").write_text("lena's first password 4711\n")
    (ssh_dir / "config").write_text(
        f"IdentityFile {key}\nIdentitiesOnly yes\nBatchMode yes\n"
        f"UserKnownHostsFile {ssh_dir / 'known_hosts'}\nStrictHostKeyChecking yes\n"
    )
    env = cli_env(tmp / "home")
    env["HOME"] = str(tmp / "home")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    # The broker's own settings for this machine: loopback only, the free ports.
    env["SECONDLINE_LISTEN_HOST"] = "127.0.0.1"
    env["SECONDLINE_HTTPS_PORT"] = str(https_port)
    env["SECONDLINE_SSH_PORT"] = str(ssh_port)
    return work, env


async def test_readme_walkthrough_runs_as_written(tmp_path: Path) -> None:
    """Every walkthrough block of README.md runs in order and succeeds: init, serve,
    customers and staff, an enrolled agent, a ticket escalated by level 1 and assigned,
    alice's OpenSSH sessions, the transcript export and verification, the audit check."""
    https_port, ssh_port = free_ports(2)
    table = substitutions(tmp_path, https_port, ssh_port)
    work, env = machine(tmp_path, https_port, ssh_port)
    found = blocks((ROOT / "README.md").read_text(encoding="utf-8"), "README.md")
    assert [b.label for b in found] == [
        "", "on the customer machine", "", "alice's machine", ""
    ]  # fmt: skip
    async with Walkthrough(work, env) as walk:
        for block in found:
            for step in steps(block, table):
                await walk.run(step)
        # What the walkthrough promises: sessions on the ticket, noted, and a verified cast.
        sessions = _sessions(env, tmp_path / "broker-data")
        assert len(sessions) == 3
        assert {s["state"] for s in sessions} == {"ended"}
        assert (work / "session.cast").is_file()
    assert walk.tracebacks() == []


def agent_doc_substitutions(tmp: Path, https_port: int) -> list[tuple[str, str]]:
    """docs/agent.md's host, port and paths, and its sudo: the test runs the agent as its
    own user, in a state dir of its own."""
    return [
        ("sudo ", ""),  # the agent runs as the test's user
        ("support.example.com", "127.0.0.1"),  # the broker's host name
        ("8443", str(https_port)),  # the broker's HTTPS port
        ("secondline-agent ", f"secondline-agent --state-dir {tmp / 'agent-state'} "),
    ]


async def test_agent_doc_walkthrough_runs_as_written(tmp_path: Path) -> None:
    """docs/agent.md's blocks, with a token the admin made in $TOKEN: enroll, run, the end
    user's status, sessions and help; the help request becomes a ticket whose machine facts
    have no empty line."""
    data_dir = tmp_path / "data"
    port, ssh_port = (str(p) for p in free_ports(2))
    ok(
        secondline(
            "init", "--listen-host", "127.0.0.1", "--https-port", port,
            "--ssh-port", ssh_port, "--public-url", f"https://127.0.0.1:{port}",
            data_dir=data_dir,
        )
    )  # fmt: skip
    broker = await start_broker(data_dir)
    try:
        ok(secondline("customer", "add", "acme", data_dir=data_dir))
        env = cli_env(tmp_path / "home")
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        env["TOKEN"] = ok(secondline("token", "create", "--customer", "acme", data_dir=data_dir))
        table = agent_doc_substitutions(tmp_path, broker.https_port)
        found = blocks((ROOT / "docs" / "agent.md").read_text(encoding="utf-8"), "agent.md")
        assert len(found) == 3
        async with Walkthrough(tmp_path, env) as walk:
            for block in found:
                for step in steps(block, table):
                    await walk.run(step)
        assert walk.tracebacks() == []
        tickets = json.loads(ok(secondline("ticket", "list", "--json", data_dir=data_dir)))
        assert [t["title"] for t in tickets] == [
            "Help request from web01: the printer queue is stuck since this morning"
        ]
        shown = json.loads(
            ok(secondline("ticket", "show", tickets[0]["id"], "--json", data_dir=data_dir))
        )
        machine = str(shown["description"]).split("--- machine web01 ---\n", 1)[1]
        for line in machine.splitlines():
            key, _, value = line.partition(": ")
            assert key, machine
            assert value.strip(), machine
    finally:
        await broker.stop()


def _sessions(env: dict[str, str], data_dir: Path) -> list[dict[str, object]]:
    """Every session on the broker, as the admin's `session list --json` gives them."""
    proc = subprocess.run(
        [sys.executable, "-m", "broker.cli.main", "--data-dir", str(data_dir), "session",
         "list", "--json"],
        capture_output=True, text=True, env=env, timeout=60, check=True,
    )  # fmt: skip
    sessions = json.loads(proc.stdout)
    assert isinstance(sessions, list)
    return sessions


async def test_walkthrough_stops_at_a_failing_command(tmp_path: Path) -> None:
    """A walkthrough command that fails, or one that prints a traceback, fails the test,
    naming the block; variables carry over from block to block."""
    markdown = (
        "<!-- walkthrough -->\n```sh\nX=$(echo set-in-block-1)\n```\n"
        '<!-- walkthrough: elsewhere -->\n```sh\ntest "$X" = set-in-block-1\n'
        "false  # a command that fails\necho never\n```\n"
    )
    found = blocks(markdown, "doc.md")
    assert [b.label for b in found] == ["", "elsewhere"]
    async with Walkthrough(tmp_path, cli_env(tmp_path)) as walk:
        await walk.run(steps(found[0], [])[0])
        with pytest.raises(WalkthroughFailed, match=r"doc.md, walkthrough block 2: a command"):
            await walk.run(steps(found[1], [])[0])
    traceback = blocks(
        "<!-- walkthrough -->\n```sh\npython3 -c 'import sys; sys.exit(\"x\" + 1)' || true\n```\n",
        "doc.md",
    )
    async with Walkthrough(tmp_path, cli_env(tmp_path)) as walk:
        with pytest.raises(WalkthroughFailed, match="a traceback"):
            await walk.run(steps(traceback[0], [])[0])


def test_substitution_table_changes_only_what_it_names() -> None:
    """Ports match whole numbers only; host and paths are replaced wherever they appear."""
    table = [("/var/lib/secondline", "/tmp/d"), ("8443", "50001"), ("broker.example.com", "h")]
    text = "init --data-dir /var/lib/secondline https://broker.example.com:8443 84430 18443"
    assert substitute(text, table) == "init --data-dir /tmp/d https://h:50001 84430 18443"
