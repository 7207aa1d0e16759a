"""What keeps agent tunnels from taking the broker's last descriptors: the tunnel budget
(pure), the soft limit raised at start, the local user name pinned, and asyncio's accept
loop leaving its batch after a resource error (tried in a child process whose descriptors
really run out)."""

from __future__ import annotations

import os
import pwd
import resource
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.agents.descriptors import (
    RESERVE_MIN,
    UNLIMITED,
    install_accept_fix,
    pin_local_username,
    raise_soft_limit,
    tunnel_budget,
)

ROOT = Path(__file__).resolve().parents[2]
USER_VARIABLES = ("LOGNAME", "USER", "LNAME", "USERNAME")


@pytest.mark.parametrize(
    ("soft", "budget"),
    [
        (resource.RLIM_INFINITY, UNLIMITED),
        (0, 0),
        (RESERVE_MIN, 0),
        (300, 300 - RESERVE_MIN),
        (1024, 1024 - RESERVE_MIN),
        (2048, 2048 - RESERVE_MIN),
        (65536, 65536 - 65536 // 8),
    ],
)
def test_the_budget_keeps_a_reserve_for_everything_else(soft: int, budget: int) -> None:
    """At least 256 descriptors, and at least an eighth of the limit, stay out of reach."""
    assert tunnel_budget(soft) == budget


@pytest.fixture
def soft_limit() -> Iterator[tuple[int, int]]:
    """The descriptor limits, put back afterwards."""
    limits = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        yield limits
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, limits)


def test_the_soft_limit_is_raised_to_the_hard_one(soft_limit: tuple[int, int]) -> None:
    """A soft limit below the hard one is raised; one at the hard limit stays."""
    _, hard = soft_limit
    if hard == resource.RLIM_INFINITY or hard < 2:
        pytest.skip("needs a finite hard descriptor limit")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard - 1, hard))
    assert raise_soft_limit() == hard
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
    assert raise_soft_limit() == hard


def test_the_local_user_name_is_looked_up_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a user variable LOGNAME is set from the passwd entry; one that is set stays;
    a uid without an entry gets a stand-in (asyncssh never uses it for our connections)."""
    for name in USER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    pin_local_username()
    assert os.environ["LOGNAME"] == pwd.getpwuid(os.getuid()).pw_name
    monkeypatch.delenv("LOGNAME")
    monkeypatch.setenv("USER", "someone")
    pin_local_username()
    assert "LOGNAME" not in os.environ
    monkeypatch.delenv("USER")
    monkeypatch.setattr(os, "getuid", lambda: 2**31 - 7)
    pin_local_username()
    assert os.environ["LOGNAME"] == "secondline"


# A server whose process has no descriptor left: connections wait in the backlog, the
# loop tries to accept them, and the test counts what the loop reports in one batch.
_EXHAUSTED_ACCEPT = textwrap.dedent(
    """
    import asyncio, os, resource, socket, sys
    from broker.agents.descriptors import install_accept_fix

    async def main() -> None:
        if sys.argv[1] == "fixed":
            assert install_accept_fix()
        loop = asyncio.get_running_loop()
        reports = []
        reported = asyncio.Event()

        def handler(_loop, context):
            reports.append(context["message"])
            reported.set()

        loop.set_exception_handler(handler)
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0, backlog=50)
        port = server.sockets[0].getsockname()[1]
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(5)]
        hoard = []
        resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 8,
                                                    resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
        while True:
            try:
                hoard.append(os.open(os.devnull, os.O_RDONLY))
            except OSError:
                break
        async with asyncio.timeout(20):
            await reported.wait()
        print(len(reports), reports[0])
        for fd in hoard:
            os.close(fd)
        for client in clients:
            client.close()
        server.close()

    asyncio.run(main())
    """
)


def _accept_reports(variant: str) -> tuple[int, str]:
    proc = subprocess.run(
        [sys.executable, "-c", _EXHAUSTED_ACCEPT, variant],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    count, _, message = proc.stdout.strip().partition(" ")
    return int(count), message


@pytest.mark.skipif(sys.version_info[:2] != (3, 11), reason="the fix is for Python 3.11")
def test_an_exhausted_accept_batch_reports_once_and_waits() -> None:
    """With no descriptor left, one accept batch reports the failure once and schedules one
    retry (Python 3.11's own loop goes on: one report and one retry per connection tried)."""
    assert install_accept_fix()
    assert install_accept_fix()  # idempotent
    fixed, message = _accept_reports("fixed")
    assert (fixed, message) == (1, "socket.accept() out of system resource")
    unfixed, _ = _accept_reports("asyncio")
    assert unfixed > 1
