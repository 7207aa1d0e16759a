"""The agent behind an HTTP proxy: a real tinyproxy with Basic authentication carries the
enrollment (HTTPS_PROXY), the tunnel (proxy_url in agent.toml) and a session through it;
NO_PROXY goes around it; a wrong password is refused with the proxy's answer; the
one-line install and the package's enrollment use it too."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.broker import CliResult, cli_env
from tests.support.deb_root import DebRoot
from tests.support.packages import build_agent_deb
from tests.support.processes import communicate
from tests.support.site import WAIT, Site, new_ticket, ok
from tests.support.tinyproxy import Tinyproxy

pytestmark = [pytest.mark.e2e, pytest.mark.parametrize("backend", ["sqlite"], indirect=True)]


@pytest.fixture
async def proxy(tmp_path: Path) -> AsyncIterator[Tinyproxy]:
    p = Tinyproxy(tmp_path / "tinyproxy")
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


def _agent(state: Path, *args: str, **env: str) -> CliResult:
    proc = subprocess.run(
        [sys.executable, "-m", "agent", *args, "--state-dir", str(state)],
        capture_output=True,
        text=True,
        env=cli_env(state, **env),
        timeout=60,
        check=False,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def _marker_through(proxy: Tinyproxy) -> None:
    subprocess.run(
        ["curl", "-s", "-x", proxy.url(), "https://127.0.0.1:1/"], timeout=60, check=False
    )


async def test_enrollment_tunnel_and_session_go_through_the_proxy(
    site: Site, proxy: Tinyproxy
) -> None:
    """HTTPS_PROXY with credentials carries enrollment; agent.toml's proxy_url carries the
    tunnel, and a staff member's command runs on the machine through it."""
    target = f"127.0.0.1:{site.broker.https_port}"
    token = ok(site.admin("token", "create", "--customer", "acme", "--consent", "unattended"))
    state = site.tmp / "agent-proxied"
    ok(_agent(state, "enroll", site.broker.url, token, "--name", "web01",
              HTTPS_PROXY=proxy.url()))  # fmt: skip
    await proxy.wait_for(f"CONNECT {target} ")
    assert proxy.connects == [target]

    config = state / "agent.toml"
    config.write_text(f'proxy_url = "{proxy.url()}"\n')
    config.chmod(0o600)
    mark = len(site.broker.output)
    agent = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent", "run", "--state-dir", str(state),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env=cli_env(state),
    )  # fmt: skip
    try:
        await site.broker.wait_for_line(rb"agent ag-[a-z0-9]{16} \(web01\) online", mark)
        await proxy.wait_for_count(f"CONNECT {target} ", 2)
        assert proxy.connects == [target, target]
        ticket = new_ticket(site, "web01")
        result = await site.ssh(ticket, "echo through-the-proxy")
        assert (result.code, result.out) == (0, "through-the-proxy\n"), result
    finally:
        agent.send_signal(signal.SIGTERM)
        await communicate(agent, WAIT)


async def test_no_proxy_goes_around_and_a_wrong_password_is_refused(
    site: Site, proxy: Tinyproxy
) -> None:
    """A wrong proxy password stops enrollment with the proxy's answer (the token is not
    spent); NO_PROXY naming the broker's host enrolls directly."""
    token = ok(site.admin("token", "create", "--customer", "acme"))
    state = site.tmp / "agent-direct"
    refused = _agent(state, "enroll", site.broker.url, token,
                     HTTPS_PROXY=proxy.url(password="wrong"))  # fmt: skip
    assert refused.code == 1
    assert "the proxy refused: 401" in refused.err or "the proxy refused: 407" in refused.err
    assert refused.err.count("\n") == 1
    await proxy.wait_for("CONNECT ")

    ok(_agent(state, "enroll", site.broker.url, token,
              HTTPS_PROXY=proxy.url(), NO_PROXY="localhost,127.0.0.1"))  # fmt: skip
    # Had enrollment used the proxy, its CONNECT line would be in the log before the answer
    # came back; a marker request's line, read after it, shows that nothing came between.
    _marker_through(proxy)
    await proxy.wait_for("CONNECT 127.0.0.1:1 ")
    target = f"127.0.0.1:{site.broker.https_port}"
    assert proxy.connects == [target, "127.0.0.1:1"]  # the refused enrollment, the marker


async def test_one_line_install_behind_the_proxy(
    site: Site, proxy: Tinyproxy, tmp_path: Path
) -> None:
    """With HTTPS_PROXY in /etc/default/secondline-agent, the install command downloads the
    package and the package enrolls through the proxy."""
    shelf = site.data_dir / "agent-packages"
    shelf.mkdir()
    shutil.copy(build_agent_deb(), shelf)
    command = ok(site.admin("token", "create", "--customer", "acme", "--install-command"))
    root = DebRoot(tmp_path / "root")
    try:
        settings = tmp_path / "default"
        settings.write_text(f"HTTPS_PROXY={proxy.url()}\n")
        root.put(settings, "/etc/default/secondline-agent")
        result = root.run("sh", "-c", command)
        assert result.returncode == 0, result.stdout + result.stderr
        assert root.run("test", "-e", "/var/lib/secondline-agent/state.json").returncode == 0
        target = f"127.0.0.1:{site.broker.https_port}"
        await proxy.wait_for_count(f"CONNECT {target} ", 2)
        assert proxy.connects == [target, target]  # the download, the enrollment
    finally:
        root.cleanup()
