"""Running the real broker: `secondline init` into a data dir, `secondline serve` as a
process, and the `secondline` CLI as a process, the way an admin would."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from broker.bootstrap import init_data_dir
from broker.config import write_config
from tests.support.database import (
    Backend,
    create_database,
    drop_database,
    recreate_from_template,
    run_sync,
)
from tests.support.processes import stop_process

READY = re.compile(rb"secondline: serving https://[^:]+:(\d+)")
START_BOUND = 90.0  # seconds until a broker says it serves: a failure bound, never a pause


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` different free loopback ports. The sockets stay bound until all are picked:
    a port closed first may be handed out again at once, and a broker given the same port
    for HTTPS and SSH cannot start (seen when tests ran in parallel workers)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            s = stack.enter_context(socket.socket())
            s.bind(("127.0.0.1", 0))
            ports.append(int(s.getsockname()[1]))
        return ports


_TEMPLATES: dict[str, tuple[Path, str]] = {}  # backend kind -> (data dir, database)


def _fresh_settings(backend: Backend, settings: dict[str, object]) -> dict[str, object]:
    https_port, ssh_port = free_ports(2)
    return {
        "listen_host": "127.0.0.1",
        "https_port": https_port,
        "ssh_port": ssh_port,
        # The product default asks staff for an authenticator code on SSH (per-shift); the
        # tests of other features sign in with keys alone, and the second factor's own tests
        # (tests/e2e/test_ssh_second_factor.py) set the policy they test.
        "ssh_second_factor": "off",
        **backend.settings(),
        **settings,
    }


def _template(backend: Backend) -> tuple[Path, str]:
    """Initialise one data dir (and database) per backend per test run, to copy from."""
    if backend.kind not in _TEMPLATES:
        root = Path(tempfile.mkdtemp(prefix=f"secondline-template-{backend.kind}-"))
        database = ""
        template_backend = backend
        if backend.kind == "postgresql":
            database = f"sl_tmpl_{secrets.token_hex(6)}"
            run_sync(create_database(backend.dsn, database))
            url = backend.url.rsplit("/", 1)[0] + "/" + database
            template_backend = Backend("postgresql", url, database, backend.dsn)
        settings = _fresh_settings(template_backend, {})
        init_data_dir(
            root / "data", f"https://127.0.0.1:{settings['https_port']}", settings=settings
        )
        _TEMPLATES[backend.kind] = (root / "data", database)
    return _TEMPLATES[backend.kind]


def init_dir(path: Path, backend: Backend, **settings: object) -> Path:
    """An initialised data dir on ``backend``, as `secondline init` leaves it.

    Without extra settings it is a copy of a per-run template (same keys, same first admin
    token, own ports and own database); with settings it is a real `init`."""
    merged = _fresh_settings(backend, settings)
    public_url = f"https://127.0.0.1:{merged['https_port']}"
    if settings:
        init_data_dir(path, public_url, settings=merged)
        return path
    template_dir, template_db = _template(backend)
    if backend.kind == "postgresql":
        run_sync(recreate_from_template(backend, template_db))
    shutil.copytree(template_dir, path, symlinks=False)
    write_config(path, public_url, merged)
    return path


def drop_templates() -> None:
    for kind, (data, database) in list(_TEMPLATES.items()):
        shutil.rmtree(data.parent, ignore_errors=True)
        if database:
            dsn = os.environ.get("SECONDLINE_TEST_PG", "")
            run_sync(drop_database(dsn, database))
        del _TEMPLATES[kind]


def cli_env(data_dir: Path | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SECONDLINE_")}
    # Each data dir (or test path) gets its own HOME, so stored logins never leak between them.
    env["HOME"] = f"{data_dir or '/nonexistent'}.home"
    env.pop("XDG_CONFIG_HOME", None)
    env.update(extra)
    return env


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    def json(self) -> object:
        return json.loads(self.out)


def secondline(
    *args: str,
    data_dir: Path | None = None,
    stdin: str | None = None,
    env: dict[str, str] | None = None,
) -> CliResult:
    """Run the `secondline` CLI as a process (with --data-dir first when given)."""
    argv = [sys.executable, "-m", "broker.cli.main"]
    if data_dir is not None:
        argv += ["--data-dir", str(data_dir)]
    proc = subprocess.run(
        [*argv, *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env or cli_env(data_dir),
        timeout=60,
        check=False,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


@dataclass
class BrokerProcess:
    data_dir: Path
    process: asyncio.subprocess.Process
    https_port: int = 0
    output: list[bytes] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _reader: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    def start_reading(self) -> None:
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        # Keep draining output so the pipe never fills and blocks the broker.
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            self.output.append(line)
            self._changed.set()
        self._changed.set()

    async def stop(self, sig: int = signal.SIGTERM) -> int:
        """Send ``sig`` and wait for the exit; a broker that outlasts the bound is killed
        and waited for, and the TimeoutError goes on."""
        try:
            return await stop_process(self.process, sig)
        finally:
            if self._reader is not None:
                await self._reader

    async def wait_for_line(self, pattern: bytes, start: int = 0, bound: float = 30.0) -> bytes:
        """Wait until a line of the broker's output matches; fail if it exits first or after
        ``bound`` seconds (a failure bound, never a pause)."""
        async with asyncio.timeout(bound):
            index = start
            while True:
                while index < len(self.output):
                    line = self.output[index]
                    index += 1
                    if re.search(pattern, line):
                        return line
                if self._reader is not None and self._reader.done():
                    raise AssertionError(b"broker exited: " + b"".join(self.output[-30:]))
                self._changed.clear()
                await self._changed.wait()


async def start_broker(
    data_dir: Path, *extra_args: str, env: dict[str, str] | None = None
) -> BrokerProcess:
    """Start `secondline serve` on ``data_dir``. The suite runs on several workers, and a
    port found free when the data dir was made can be taken by another worker's server
    before the broker binds it: then the data dir gets two other free ports, up to twice."""
    for attempt in range(3):
        try:
            return await _start_broker(data_dir, *extra_args, env=env)
        except AssertionError as exc:
            if attempt == 2 or "address already in use" not in str(exc):
                raise
            if not _move_ports(data_dir):
                raise
    raise AssertionError("unreachable: the last attempt returns or raises")


def _move_ports(data_dir: Path) -> bool:
    """Give the data dir's config two new free ports (public_url follows the HTTPS one);
    False when it names no ports of its own."""
    config = data_dir / "secondline.toml"
    text = config.read_text()
    https = re.search(r"^https_port = (\d+)$", text, re.MULTILINE)
    ssh = re.search(r"^ssh_port = (\d+)$", text, re.MULTILINE)
    if https is None or ssh is None:
        return False
    new_https, new_ssh = free_ports(2)
    text = text.replace(f"https_port = {https[1]}\n", f"https_port = {new_https}\n")
    text = text.replace(f"ssh_port = {ssh[1]}\n", f"ssh_port = {new_ssh}\n")
    text = text.replace(f'127.0.0.1:{https[1]}"', f'127.0.0.1:{new_https}"')
    config.write_text(text)
    return True


async def start_in_process(
    data_dir: Path, build: Callable[[], web.Application]
) -> TestClient[web.Request, web.Application]:
    """A test client of ``build()``, a broker app run inside the test's process; the caller
    closes it. The app's SSH gateway binds the config's ``ssh_port``, found free when the
    data dir was made; another xdist worker's server can take it first (seen in a full run:
    "address already in use"). Then what had started is cleaned up and closed, the data dir
    gets two new free ports and the app is built again, up to twice."""
    for attempt in range(3):
        app = build()
        client: TestClient[web.Request, web.Application] = TestClient(TestServer(app))
        try:
            await client.start_server()
            return client
        except OSError as exc:
            await app.cleanup()  # the features started before the failing one
            await client.close()
            if exc.errno != errno.EADDRINUSE or attempt == 2 or not _move_ports(data_dir):
                raise
    raise AssertionError("unreachable: the last attempt returns or raises")


async def _start_broker(
    data_dir: Path, *extra_args: str, env: dict[str, str] | None = None
) -> BrokerProcess:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "broker.cli.main",
        "--data-dir",
        str(data_dir),
        "serve",
        *extra_args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=cli_env(data_dir, **(env or {})),
    )
    broker = BrokerProcess(data_dir, proc)
    broker.start_reading()
    try:
        # A start is the heaviest moment of a broker (imports, migrations check, keys); two
        # cluster nodes starting beside a herd of agents on a loaded 2-core runner took over
        # 30 s once (a set-up timeout, not a fault): the bound for it is wider.
        line = await broker.wait_for_line(READY.pattern, bound=START_BOUND)
    except BaseException:
        # A broker that never got ready is no fixture's to stop: left running, it outlives
        # the test and holds its ports and database.
        await broker.stop(signal.SIGKILL)
        raise
    match = READY.search(line)
    assert match is not None
    broker.https_port = int(match.group(1))
    return broker
