"""`secondline init` and `serve` as an admin meets them: the PostgreSQL URL forms people
write, an init that is all or nothing, a data dir whose files are the owner's only, and a
`serve` that prints neither Alembic's chatter nor a traceback for a port in use."""

from __future__ import annotations

import datetime as dt
import os
import secrets
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.keys import make_tls_certificate
from tests.support.broker import free_port, free_ports, secondline, start_broker
from tests.support.database import create_database, drop_database, plain_dsn, run_sync

pytestmark = pytest.mark.e2e


@pytest.fixture
def pg_database() -> Iterator[tuple[str, str]]:
    """(DSN of the server, name of a fresh empty database on it)."""
    dsn = os.environ.get("SECONDLINE_TEST_PG", "")
    if not dsn:
        if os.environ.get("CI") == "true":
            pytest.fail("CI must test PostgreSQL: set SECONDLINE_TEST_PG (see .ci/run)")
        pytest.skip("PostgreSQL: set SECONDLINE_TEST_PG to a DSN to run this test")
    name = f"sl_init_{secrets.token_hex(6)}"
    run_sync(create_database(dsn, name))
    try:
        yield dsn, name
    finally:
        run_sync(drop_database(dsn, name))


def _init(data_dir: Path, *args: str) -> tuple[int, str]:
    https_port, ssh_port = free_ports(2)
    ports = ("--https-port", str(https_port), "--ssh-port", str(ssh_port))
    result = secondline("init", "--listen-host", "127.0.0.1", *ports, *args, data_dir=data_dir)
    return result.code, result.err


@pytest.mark.postgres
@pytest.mark.parametrize("scheme", ["postgresql://", "postgres://", "postgresql+asyncpg://"])
async def test_init_takes_the_postgresql_url_forms_people_write(
    scheme: str, pg_database: tuple[str, str], tmp_path: Path
) -> None:
    """`init --database-url` takes postgresql://, postgres:// and postgresql+asyncpg://
    (psycopg is not installed: asyncpg serves all three) and `serve` then runs on it."""
    dsn, name = pg_database
    rest = plain_dsn(dsn).removeprefix("postgresql://").rsplit("/", 1)[0]
    data_dir = tmp_path / "data"
    code, err = _init(data_dir, "--database-url", f"{scheme}{rest}/{name}")
    assert (code, err) == (0, "")
    broker = await start_broker(data_dir)
    try:
        listed = secondline("user", "list", "--json", data_dir=data_dir)
        assert listed.code == 0, listed.err
        users = listed.json()
        assert isinstance(users, list)
        assert [u["name"] for u in users] == ["admin"]
    finally:
        await broker.stop()


def test_failed_init_leaves_nothing_and_says_what_to_do(tmp_path: Path) -> None:
    """A database that cannot be reached, a URL no driver of ours takes, a certificate
    that cannot be read: one line that says what to do, no traceback, no half-made data dir
    (not even the parents init made); the next init into the same place then succeeds."""
    data_dir = tmp_path / "new" / "data"
    unreachable = f"postgresql://nobody@127.0.0.1:{free_port()}/secondline"
    code, err = _init(data_dir, "--database-url", unreachable)
    assert code == 1
    assert err.startswith("secondline: cannot use the database (")
    assert "run init again" in err
    assert err.count("\n") == 1
    assert "Traceback" not in err
    assert not (tmp_path / "new").exists()
    code, err = _init(data_dir, "--database-url", "mysql://root@db/secondline")
    assert code == 1
    assert "is not a database URL this broker can use; write postgresql://" in err
    assert not (tmp_path / "new").exists()
    missing = tmp_path / "missing.pem"
    code, err = _init(data_dir, "--tls-cert", str(missing), "--tls-key", str(missing))
    assert code == 1
    assert f"cannot use --tls-cert {missing}" in err
    assert not (tmp_path / "new").exists()
    # An empty directory made by the admin stays, and stays empty.
    data_dir.mkdir(parents=True)
    assert _init(data_dir, "--database-url", unreachable)[0] == 1
    assert list(data_dir.iterdir()) == []
    assert [p.name for p in data_dir.parent.iterdir()] == ["data"]
    cert_pem, key_pem = make_tls_certificate("https://127.0.0.1", dt.datetime.now(dt.UTC))
    (tmp_path / "tls.crt").write_bytes(cert_pem)
    (tmp_path / "tls.key").write_bytes(key_pem)
    pair = ("--tls-cert", str(tmp_path / "tls.crt"), "--tls-key", str(tmp_path / "tls.key"))
    assert _init(data_dir, *pair) == (0, "")
    assert (data_dir / "secondline.toml").is_file()


async def test_data_dir_is_private_and_serve_is_quiet(tmp_path: Path) -> None:
    """After init and a serve that wrote to it, every file in the data dir (the SQLite
    database and its -wal/-shm files too) is 0600 and every dir 0700; serve's output has
    no Alembic INFO lines."""
    data_dir = tmp_path / "data"
    assert _init(data_dir)[0] == 0
    broker = await start_broker(data_dir)
    try:
        assert secondline("customer", "add", "acme", data_dir=data_dir).code == 0
        files = [p for p in data_dir.rglob("*") if p.is_file()]
        assert {p.name for p in files} >= {"secondline.db", "secondline.db-wal"}
    finally:
        await broker.stop()
    for path in [data_dir, *data_dir.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))
    output = b"".join(broker.output).decode()
    assert "alembic" not in output
    assert "Traceback" not in output


def _environ(pid: int) -> list[bytes]:
    return Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")


async def test_serve_runs_on_the_system_allocator_unless_told_otherwise(tmp_path: Path) -> None:
    """`serve` starts itself again, same process, with PYTHONMALLOC=malloc and one glibc
    arena (broker.allocator: glibc gives idle tunnels' fragmented memory back, pymalloc
    does not); an allocator chosen in the environment is kept, and nothing else set."""
    data_dir = tmp_path / "data"
    assert _init(data_dir)[0] == 0
    for given, expected in ((None, b"malloc"), ("pymalloc", b"pymalloc")):
        env = {} if given is None else {"PYTHONMALLOC": given}
        broker = await start_broker(data_dir, env=env)
        try:
            environ = _environ(broker.process.pid)
            assert environ.count(b"PYTHONMALLOC=" + expected) == 1
            assert (b"MALLOC_ARENA_MAX=1" in environ) == (given is None)
        finally:
            await broker.stop()


def test_serve_on_a_port_in_use_says_so_in_one_line(tmp_path: Path) -> None:
    """A port another program holds: one line naming the ports and the settings to
    change, exit status 1, no traceback."""
    data_dir = tmp_path / "data"
    assert _init(data_dir)[0] == 0
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = secondline("serve", "--https-port", port, data_dir=data_dir)
    assert result.code == 1
    assert "Traceback" not in result.err
    assert f"cannot listen on 127.0.0.1 port {port} (HTTPS)" in result.err
    assert "https_port, ssh_port in secondline.toml" in result.err


def test_serve_on_a_database_without_tables_says_so(tmp_path: Path) -> None:
    """A data dir whose SQLite file was removed (or a database_url pointing at an empty
    database): one line saying the database holds no Secondline tables, no traceback."""
    data_dir = tmp_path / "data"
    assert _init(data_dir)[0] == 0
    (data_dir / "secondline.db").unlink()
    result = secondline("serve", data_dir=data_dir)
    assert result.code == 1
    assert "Traceback" not in result.err
    assert result.err.strip().endswith("make a new data dir with `secondline init`"), result.err
    assert "the database holds no Secondline tables" in result.err
