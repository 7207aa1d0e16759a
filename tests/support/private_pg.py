"""A private PostgreSQL cluster for fault tests that stop the database for real.

The machine's shared PostgreSQL serves every other test running at the same time, so it is
never stopped; a test that needs "the database went away" gets its own cluster instead:
the machine's own binaries (``/usr/lib/postgresql/<version>/bin``), a data dir in a fresh
temporary directory, trust authentication, listening on 127.0.0.1 at a free port only, its
unix socket in the same directory, and no fsync (nothing here must survive a power cut).

PostgreSQL refuses to run as root, so a test running as root runs the cluster as the
``postgres`` OS user (``runuser -u postgres --``), which owns the directory.

Missing binaries fail the test in CI (``CI=true``) and skip it with that reason elsewhere.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest

from tests.support.broker import free_port
from tests.support.database import Backend, create_database
from tests.support.processes import communicate

PG_ROOT: Final = Path("/usr/lib/postgresql")
OS_USER: Final = "postgres"
TIMEOUT: Final = 60.0  # failure bound for one pg_ctl or initdb run
SETTINGS: Final = (
    "listen_addresses = '127.0.0.1'",
    # No fsync: the operating system keeps what a stopped server wrote. synchronous_commit
    # stays on: "off" would lose acknowledged commits at an immediate stop, which a real
    # database does not do.
    "fsync = off",
    "full_page_writes = off",
    "shared_buffers = 16MB",
    "max_connections = 50",
    "logging_collector = off",
)


class PgCommandFailed(AssertionError):
    """initdb or pg_ctl failed; the message carries its output."""


def find_bin_dir(root: Path = PG_ROOT) -> Path | None:
    """The newest ``<root>/<version>/bin`` holding initdb and pg_ctl, or None."""
    found: list[tuple[int, Path]] = []
    if root.is_dir():
        for child in root.iterdir():
            bin_dir = child / "bin"
            if child.name.isdigit() and all(
                (bin_dir / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres")
            ):
                found.append((int(child.name), bin_dir))
    return max(found)[1] if found else None


def bin_dir_or_fail() -> Path:
    """The binaries' directory; a clear failure in CI when they are missing, else a skip."""
    bin_dir = find_bin_dir()
    if bin_dir is not None:
        return bin_dir
    message = (
        f"no PostgreSQL server binaries under {PG_ROOT}/<version>/bin (initdb, pg_ctl, "
        "postgres): install the postgresql package to run the stopped-database fault tests"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@dataclass
class PrivatePostgres:
    """One private cluster; :meth:`create` it, then :meth:`stop` and :meth:`start` at will."""

    bin_dir: Path
    root: Path  # owned by the cluster's OS user: data/, its socket and its log
    port: int
    run_as: str | None  # OS user to run the binaries as, None for the current one
    running: bool = False

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "postgres.log"

    @property
    def admin_dsn(self) -> str:
        """Where to connect for CREATE DATABASE (plain libpq form, as asyncpg takes it)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        """The SQLAlchemy URL of ``database`` in this cluster."""
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def plain_dsn(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    async def backend(self, database: str = "secondline") -> Backend:
        """A new database in this cluster, as the tests' Backend (no shared template: a
        data dir on it is initialised for real)."""
        await create_database(self.admin_dsn, database)
        return Backend("postgresql", self.url(database), database, self.admin_dsn)

    @classmethod
    async def create(cls) -> PrivatePostgres:
        """initdb into a fresh directory and start the cluster."""
        bin_dir = bin_dir_or_fail()
        run_as: str | None = None
        root = Path(tempfile.mkdtemp(prefix="secondline-pg-"))
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam(OS_USER)
            except KeyError:
                shutil.rmtree(root)
                pytest.fail(f"running as root needs the {OS_USER!r} OS user to run PostgreSQL")
            os.chown(root, user.pw_uid, user.pw_gid)
            run_as = OS_USER
        cluster = cls(bin_dir, root, free_port(), run_as)
        try:
            await cluster._run(
                "initdb", "-D", str(cluster.data), "-U", "postgres", "--auth=trust",
                "--encoding=UTF8", "--no-sync", "--no-instructions",
            )  # fmt: skip
            lines = [*SETTINGS, f"port = {cluster.port}", f"unix_socket_directories = '{root}'"]
            # The configuration file belongs to the cluster's user; appending keeps that.
            with (cluster.data / "postgresql.conf").open("a") as conf:
                conf.write("\n# secondline test cluster\n" + "\n".join(lines) + "\n")
            await cluster.start()
        except BaseException:
            await cluster.destroy()
            raise
        return cluster

    async def start(self) -> None:
        """Start the cluster and return once it accepts connections."""
        await self._run(
            "pg_ctl", "start", "-D", str(self.data), "-l", str(self.log), "-w",
            "-t", str(int(TIMEOUT)),
        )  # fmt: skip
        self.running = True

    async def stop(self, mode: str = "immediate") -> None:
        """Stop the cluster for real (``immediate``: no shutdown checkpoint, every client
        connection is cut at once, as when the database host goes away)."""
        await self._run("pg_ctl", "stop", "-D", str(self.data), "-m", mode, "-w")
        self.running = False

    async def destroy(self) -> None:
        """Stop the cluster if it runs and remove everything it wrote."""
        try:
            if self.running or (self.data / "postmaster.pid").exists():
                await self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    async def _run(self, tool: str, *args: str) -> None:
        argv: Sequence[str] = [str(self.bin_dir / tool), *args]
        if self.run_as is not None:
            argv = ["runuser", "-u", self.run_as, "--", *argv]
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=self.root,
        )
        try:
            out, _ = await communicate(proc, TIMEOUT)
        except TimeoutError:
            raise PgCommandFailed(
                f"{tool} {' '.join(args)} did not finish in {TIMEOUT:.0f} s"
            ) from None
        if proc.returncode != 0:
            raise PgCommandFailed(
                f"{tool} {' '.join(args)} failed ({proc.returncode}): "
                f"{out.decode(errors='replace')}\n--- server log ---\n{self.log_tail()}"
            )


@pytest.fixture
async def private_pg() -> AsyncIterator[PrivatePostgres]:
    """A running private cluster, stopped and removed after the test."""
    cluster = await PrivatePostgres.create()
    try:
        yield cluster
    finally:
        await cluster.destroy()
