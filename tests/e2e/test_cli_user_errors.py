"""Both command-line tools against a real broker, as a person gets them wrong: every bad
invocation ends in one line on stderr and a non-zero status, never a Python traceback;
output into a pipe that closed early ends quietly; and the staff commands of issue 13
(SSH keys listed, added and removed in words; the role named when it is the reason)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.broker import BrokerProcess, CliResult, cli_env, free_port, secondline
from tests.support.site import agent_cli, keygen, ok

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]

NO_SESSION = "s-" + "A" * 22


def _one_clean_line(result: CliResult, what: object) -> None:
    assert result.code != 0, what
    assert "Traceback" not in result.err, (what, result.err)
    if result.code != 2:  # argparse's usage errors print the usage first
        assert result.err.startswith("secondline"), (what, result.err)
        assert result.err.count("\n") == 1, (what, result.err)


async def test_bad_invocations_never_print_a_traceback(
    broker: BrokerProcess, tmp_path: Path
) -> None:
    """A set of wrong invocations of each command of `secondline` and `secondline-agent`:
    one line each, non-zero, no traceback."""
    d = broker.data_dir
    not_a_key = tmp_path / "not-a-key.pub"
    not_a_key.write_text("hello\n")
    ok(secondline("user", "add", "carol", "--role", "level2", data_dir=d))
    carol = ok(secondline("user", "token", "carol", data_dir=d))
    unreachable = ("--url", f"https://127.0.0.1:{free_port()}", "--token", "slt_x")
    with_data_dir = [
        ("user", "add", "x", "--role", "level2", "--ssh-key", str(tmp_path / "missing.pub")),
        ("user", "add", "Bad Name!", "--role", "level2"),
        ("user", "show", "nobody"),
        ("user", "key", "add", "carol", str(not_a_key)),
        ("user", "key", "add", "carol", str(tmp_path)),
        ("user", "key", "remove", "carol", "SHA256:nothing"),
        ("user", "key", "remove", "carol", str(not_a_key)),
        ("user", "key", "list", "nobody"),
        ("user", "token", "carol", "--ttl", "forever"),
        ("login", "carol", "--password-stdin"),
        ("customer", "show", "nobody"),
        ("token", "create", "--customer", "nobody"),
        ("agent", "show", "nothing"),
        ("ticket", "show", "T-999999"),
        ("ticket", "show", "../etc"),
        ("ticket", "escalate", "T-1", "--to", "2", "--reason", "x"),
        ("kb", "show", "KB-999"),
        ("kb", "publish", "KB-1"),
        ("session", "show", "nope"),
        ("session", "kill", NO_SESSION, "--reason", "bad\x1b[2Jreason"),
        ("session", "kill", NO_SESSION),
        ("transcript", "export", NO_SESSION, "-o", str(tmp_path / "no" / "dir.cast")),
        ("transcript", "verify", str(tmp_path / "missing.cast")),
        ("audit", "list", "--limit", "many"),
        ("init",),
        ("init", "--database-url", "mysql://root@db/x"),
        ("init", "--public-url", "http://plain"),
        ("serve", "--https-port", "x"),
        ("--token", carol, "user", "add", "zed", "--role", "admin"),
    ]
    for args in with_data_dir:
        _one_clean_line(secondline(*args, data_dir=d, stdin=""), args)
    elsewhere: list[tuple[str, ...]] = [
        (*unreachable, "user", "list"),
        ("--data-dir", str(tmp_path / "nothing"), "serve"),
        ("--data-dir", str(tmp_path / "nothing"), "known-hosts"),
        ("--data-dir", str(not_a_key), "init"),
        ("--data-dir", str(tmp_path / "nothing"), "user", "list"),
        ("--url", broker.url, "customer", "list"),  # no token, no trust in the certificate
        ("session", "list"),  # no broker given at all
    ]
    for args in elsewhere:
        _one_clean_line(secondline(*args, env=cli_env(tmp_path / "elsewhere")), args)

    state = tmp_path / "agent-state"
    agent_cases: list[tuple[str, ...]] = [
        ("status",),
        ("sessions", "--json"),
        ("approve", "s-bad"),
        ("end", NO_SESSION),
        ("help", "the printer is stuck"),
        ("run",),
        ("enroll", broker.url, "garbage"),
        ("enroll", "ftp://x", "sle1.x"),
    ]
    for args in agent_cases:
        result = agent_cli(state, *args)
        assert result.code != 0, args
        assert "Traceback" not in result.err, (args, result.err)
        assert result.err.startswith("secondline-agent: "), (args, result.err)
    as_file = agent_cli(not_a_key, "status")
    assert as_file.code != 0
    assert "Traceback" not in as_file.err, as_file.err


async def test_output_into_a_closed_pipe_ends_quietly(
    broker: BrokerProcess, tmp_path: Path
) -> None:
    """`secondline session list | head` when head has left, and the same for the agent's
    `status`: no BrokenPipeError traceback, the status a process killed by SIGPIPE has."""
    d = broker.data_dir
    ok(secondline("customer", "add", "acme", data_dir=d))
    token = ok(secondline("token", "create", "--customer", "acme", data_dir=d))
    state = tmp_path / "agent-state"
    ok(agent_cli(state, "enroll", broker.url, token, "--name", "web01"))
    for argv in (
        [sys.executable, "-m", "broker.cli.main", "--data-dir", str(d), "session", "list"],
        [sys.executable, "-m", "agent", "status", "--state-dir", str(state)],
    ):
        code, err = _into_closed_pipe(argv, cli_env(d))
        assert "Traceback" not in err, err
        assert "BrokenPipeError" not in err, err
        assert code == 141, (argv, err)


def _into_closed_pipe(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run ``argv`` with its stdout a pipe whose reader left before the first byte."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run(
            argv, stdout=write_end, stderr=subprocess.PIPE, text=True, env=env, timeout=60,
            check=False,
        )  # fmt: skip
    finally:
        os.close(write_end)
    return proc.returncode, proc.stderr


def _fingerprint(pub: str) -> str:
    """What `ssh-keygen -l` says the key's fingerprint is."""
    listed = subprocess.run(["ssh-keygen", "-l", "-f", pub], capture_output=True, text=True)
    return listed.stdout.split()[1]


async def test_ssh_keys_in_words_and_the_role_named(broker: BrokerProcess, tmp_path: Path) -> None:
    """`user key add` says what it added (no Python dict), `user key list` lists, `user key
    remove` takes a fingerprint or the .pub file and is audited; an admin publishing an
    article is told that admins do not do that, not that a token lacks a scope."""
    d = broker.data_dir
    first, second = keygen(tmp_path / "k1"), keygen(tmp_path / "k2")
    ok(secondline("user", "add", "alice", "--role", "level2", data_dir=d))
    added = ok(secondline("user", "key", "add", "alice", f"{first}.pub", data_dir=d))
    fingerprint = _fingerprint(f"{first}.pub")
    assert added == f"Added SSH key {fingerprint} to alice; 1 key registered now."
    ok(secondline("user", "key", "add", "alice", f"{second}.pub", data_dir=d))
    listed = ok(secondline("user", "key", "list", "alice", data_dir=d))
    assert listed.splitlines()[0].split() == ["FINGERPRINT", "COMMENT", "CREATED_AT"]
    assert fingerprint in listed
    assert "{" not in ok(secondline("user", "show", "alice", data_dir=d))
    removed = ok(secondline("user", "key", "remove", "alice", fingerprint, data_dir=d))
    assert removed == f"Removed SSH key {fingerprint} of alice; 1 key registered now."
    ok(secondline("user", "key", "remove", "alice", f"{second}.pub", data_dir=d))
    keys = json.loads(ok(secondline("user", "key", "list", "alice", "--json", data_dir=d)))
    assert keys == []
    again = secondline("user", "key", "remove", "alice", fingerprint, data_dir=d)
    assert again.code == 1
    assert "alice has no SSH key" in again.err
    audit = json.loads(ok(secondline("audit", "list", "--json", data_dir=d)))
    removals = [e for e in audit if e["action"] == "user.key_remove"]
    assert [e["details"]["fingerprint"] for e in removals][-1] == fingerprint

    publish = secondline("kb", "publish", "KB-1", data_dir=d)
    assert publish.code == 1
    assert "admins manage the broker but do not work tickets" in publish.err
    assert "scope, which your token does not carry" not in publish.err
