"""`make demo` (python -m broker.demo): from an empty directory to a console sign-in that
works with the printed password and TOTP code, then a clean stop on Ctrl-C."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from pathlib import Path

import pytest

from broker.demo import ConsoleBrowser
from tests.support.broker import cli_env, free_ports
from tests.support.console import build_front_end
from tests.support.processes import communicate

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def front_end() -> None:
    build_front_end()


@pytest.mark.usefixtures("front_end")
async def test_demo_runs_and_its_login_works(tmp_path: Path) -> None:
    """The demo sets everything up, prints a working sign-in, and stops on SIGINT."""
    data_dir = tmp_path / "demo-data"
    https_port, ssh_port = free_ports(2)
    demo = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "broker.demo", "--data-dir", str(data_dir),
        "--https-port", str(https_port), "--ssh-port", str(ssh_port),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env=cli_env(data_dir),
    )  # fmt: skip
    assert demo.stdout is not None
    out: list[str] = []
    try:
        async with asyncio.timeout(120):
            while True:
                line = (await demo.stdout.readline()).decode()
                assert line, "".join(out)
                out.append(line)
                if "Press Ctrl-C to stop." in line:
                    break
        text = "".join(out)
        assert f"https://localhost:{https_port}/console/" in text
        assert "escalated to level 2" in text
        signins = dict(re.findall(r"user:\s+(\S+).*\n\s+password:\s+(\S+)", text))
        assert set(signins) == {"erika", "lena"}, text
        codes = dict(re.findall(r"user:\s+(\S+).*\n.*\n\s+TOTP code:\s+(\d{6})", text))
        assert set(codes) == {"erika", "lena"}, text
        # The end user's approval is printed as the installed command, not `python -m`.
        assert re.search(r"secondline-agent approve --state-dir \S+ SESSION", text), text
        assert "-m agent" not in text
        # Level 1 signs in with what the demo printed (its queue: the ticket went up a level).
        queue = _sign_in(https_port, data_dir, "lena", signins["lena"], codes["lena"])
        assert "Nothing in the queue" in queue
        # `--code` never hands out the code the set-up spent: it signs level 2 in.
        fresh = await _demo_code(data_dir, "erika")
        queue = _sign_in(https_port, data_dir, "erika", signins["erika"], fresh)
        assert "Drucker im Büro 2 druckt nicht" in queue
    finally:
        if demo.returncode is None:
            demo.send_signal(signal.SIGINT)
        rest, _ = await communicate(demo, 60)
    assert demo.returncode == 0, "".join(out) + rest.decode()
    assert "stopping the demo" in rest.decode()


def _sign_in(https_port: int, data_dir: Path, user: str, password: str, code: str) -> str:
    """Sign in to the console as a person does; the queue page it leads to."""
    browser = ConsoleBrowser(f"https://localhost:{https_port}", data_dir / "keys" / "tls.crt")
    status, _, page = browser.request("GET", "/console/login")
    token = re.search(r'name="_csrf" value="([^"]+)"', page)
    assert status == 200
    assert token is not None
    fields = {"_csrf": token.group(1), "user": user, "password": password}
    status, location, _ = browser.request(
        "POST", "/console/login", {**fields, "code": code, "next": "/console/"}
    )
    assert (status, location) == (303, "/console/"), user
    status, _, queue = browser.request("GET", "/console/")
    assert status == 200
    return queue


async def _demo_code(data_dir: Path, user: str) -> str:
    """What `python -m broker.demo --code --user USER` prints."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "broker.demo", "--data-dir", str(data_dir), "--code",
        "--user", user, stdout=asyncio.subprocess.PIPE, env=cli_env(data_dir),
    )  # fmt: skip
    out, _ = await communicate(proc, 60)
    assert proc.returncode == 0
    code = out.decode().strip()
    assert re.fullmatch(r"\d{6}", code), code
    return code
