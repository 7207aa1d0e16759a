"""The admin walkthrough of the README against a real `secondline serve` over HTTPS."""

from __future__ import annotations

import json
import sqlite3
import stat
from pathlib import Path

import asyncssh
import pytest

from tests.support.broker import BrokerProcess, cli_env, secondline
from tests.support.database import Backend


def test_init_twice_refuses_and_changes_nothing(data_dir: Path) -> None:
    """A second init names the problem, exits non-zero and leaves every file as it was."""
    before = {
        p: p.read_bytes()
        for p in data_dir.rglob("*")
        if p.is_file() and "secondline.db" not in p.name
    }
    result = secondline("init", data_dir=data_dir)
    assert result.code != 0
    assert "initialised already" in result.err
    after = {
        p: p.read_bytes()
        for p in data_dir.rglob("*")
        if p.is_file() and "secondline.db" not in p.name
    }
    assert before == after


def test_init_files_are_private(data_dir: Path) -> None:
    """Keys and the admin token are readable by their owner only."""
    for path in [data_dir / "admin.token", *(data_dir / "keys").iterdir()]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700


def test_init_refuses_unwritable_dir(tmp_path: Path) -> None:
    """init into a path that cannot be created says so and exits non-zero."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = secondline("--data-dir", str(blocker / "sub"), "init")
    assert result.code != 0
    assert "cannot write" in result.err


def test_serve_refuses_bad_config(tmp_path: Path) -> None:
    """serve with an unknown config key names it and exits non-zero."""
    (tmp_path / "secondline.toml").write_text('public_url = "https://x"\nbogus = 1\n')
    result = secondline("serve", data_dir=tmp_path)
    assert result.code != 0
    assert "bogus" in result.err


@pytest.mark.postgres
async def test_admin_walkthrough(broker: BrokerProcess, tmp_path: Path, backend: Backend) -> None:
    """init, serve, add a customer and a level-2 user with a key, list them, verify audit."""
    d = broker.data_dir
    key = asyncssh.generate_private_key("ssh-ed25519")
    pub = tmp_path / "alice.pub"
    pub.write_bytes(key.export_public_key())
    assert secondline("customer", "add", "acme", data_dir=d).code == 0
    added = secondline(
        "user",
        "add",
        "alice",
        "--role",
        "level2",
        "--ssh-key",
        str(pub),
        "--customer",
        "acme",
        data_dir=d,
    )
    assert added.code == 0, added.err
    listed = secondline("user", "list", "--json", data_dir=d)
    assert listed.code == 0, listed.err
    users = listed.json()
    assert isinstance(users, list)
    alice = next(u for u in users if u["name"] == "alice")
    assert alice["role"] == "level2"
    assert alice["customers"] == ["acme"]
    assert alice["ssh_keys"][0]["fingerprint"] == key.get_fingerprint("sha256")
    table = secondline("user", "list", data_dir=d)
    header, *rows = table.out.splitlines()
    assert header.split()[:4] == ["NAME", "ROLE", "SOURCE", "DISABLED"]
    assert next(r for r in rows if r.startswith("alice")).split()[:3] == [
        "alice",
        "level2",
        "local",
    ]
    again = secondline("user", "add", "alice", "--role", "level2", data_dir=d)
    assert again.code != 0
    assert "exists already" in again.err
    bad = secondline("user", "add", "Alice!", "--role", "level2", data_dir=d)
    assert bad.code != 0
    assert "invalid user name" in bad.err
    verified = secondline("audit", "verify", data_dir=d)
    assert verified.code == 0
    assert "intact" in verified.out
    if backend.kind == "sqlite":
        with sqlite3.connect(d / "secondline.db") as db:
            db.execute("UPDATE audit_events SET actor = 'mallory' WHERE seq = 2")
        tampered = secondline("audit", "verify", "--json", data_dir=d)
        assert tampered.code == 1
        assert json.loads(tampered.out)["first_bad_seq"] == 2


async def test_token_and_login_resolution(broker: BrokerProcess, tmp_path: Path) -> None:
    """A staff token given by variable, and the one `secondline login` stores, reach the API."""
    d = broker.data_dir
    assert (
        secondline(
            "user",
            "add",
            "bob",
            "--role",
            "level1",
            "--password-stdin",
            data_dir=d,
            stdin="a long enough password\n",
        ).code
        == 0
    )
    minted = secondline("user", "token", "bob", "--ttl", "1h", data_dir=d)
    assert minted.code == 0
    assert minted.out.startswith("slt_")
    ca = str(d / "keys" / "tls.crt")
    env = cli_env(
        tmp_path / "x",
        SECONDLINE_URL=broker.url,
        SECONDLINE_TOKEN=minted.out.strip(),
        SECONDLINE_CA_CERT=ca,
    )
    me = secondline("customer", "list", "--json", env=env)
    assert me.code == 0, me.err
    denied = secondline("user", "add", "zed", "--role", "admin", env=env)
    assert denied.code != 0
    assert "scope" in denied.err
    home_env = cli_env(tmp_path / "y")
    login = secondline(
        "--url",
        broker.url,
        "--ca-cert",
        ca,
        "login",
        "bob",
        "--password-stdin",
        env=home_env,
        stdin="a long enough password\n",
    )
    assert login.code == 0, login.err
    creds = Path(home_env["HOME"]) / ".config" / "secondline" / "credentials.json"
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    assert secondline("customer", "list", env=home_env).code == 0
    wrong = secondline(
        "--url",
        broker.url,
        "--ca-cert",
        ca,
        "login",
        "bob",
        "--password-stdin",
        env=home_env,
        stdin="wrong password!!\n",
    )
    assert wrong.code != 0
    assert "wrong" in wrong.err
    untrusted = secondline(
        "--url",
        broker.url,
        "--token",
        minted.out.strip(),
        "customer",
        "list",
        env=cli_env(tmp_path / "z"),
    )
    assert untrusted.code != 0
    assert "certificate" in untrusted.err


async def test_sigterm_stops_cleanly(broker: BrokerProcess) -> None:
    """SIGTERM ends the broker with exit 0 and a final line."""
    assert await broker.stop() == 0
    assert any(b"secondline: stopped" in line for line in broker.output)


def test_data_dir_after_the_command(tmp_path: Path) -> None:
    """`secondline init --data-dir DIR` and `serve --data-dir DIR`, as PRODUCT.md writes them."""
    data = tmp_path / "d"
    result = secondline("init", "--data-dir", str(data), "--public-url", "https://127.0.0.1:1")
    assert result.code == 0, result.err
    assert (data / "admin.token").exists()
    again = secondline("serve", "--data-dir", str(tmp_path / "missing"))
    assert again.code != 0
    assert "not initialised" in again.err
