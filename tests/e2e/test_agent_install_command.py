"""The one-line install: `secondline token create --install-command` prints a command that,
run on a fresh machine (an overlay root here), downloads the package from a real broker
with curl pinned to its key, checks the SHA-256, installs it with apt-get, and enrolls; the
packaged agent then connects. A tampered package or another pin installs nothing. The
package also enrolls from debconf answers, and docs/agent.md's package commands run as
written."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import signal
import ssl
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from broker.agents.install_command import InstallValues, install_command
from tests.support.broker import BrokerProcess, secondline
from tests.support.deb_root import DebRoot
from tests.support.packages import ROOT, build_agent_deb
from tests.support.processes import communicate
from tests.support.site import Site, new_ticket, ok
from tests.support.walkthrough import substitute

pytestmark = [pytest.mark.e2e, pytest.mark.parametrize("backend", ["sqlite"], indirect=True)]

STATE = "/var/lib/secondline-agent"


@pytest.fixture
def roots(tmp_path: Path) -> Iterator[list[DebRoot]]:
    made: list[DebRoot] = []
    yield made
    for r in made:
        r.cleanup()


def _root(roots: list[DebRoot], tmp_path: Path) -> DebRoot:
    r = DebRoot(tmp_path / f"root{len(roots)}")
    roots.append(r)
    return r


def _shelve(broker: BrokerProcess) -> Path:
    shelf = broker.data_dir / "agent-packages"
    shelf.mkdir(exist_ok=True)
    deb = build_agent_deb()
    return Path(shutil.copy(deb, shelf / deb.name))


def _status(url: str) -> int:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the broker's own self-signed certificate
    try:
        with urllib.request.urlopen(url, context=context, timeout=30) as answer:  # noqa: S310
            answer.read()
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def _agents(broker: BrokerProcess) -> dict[str, dict[str, object]]:
    listed = json.loads(ok(secondline("agent", "list", "--json", data_dir=broker.data_dir)))
    return {str(a["name"]): a for a in listed}


async def test_install_command_installs_enrolls_and_sessions_run(
    site: Site, tmp_path: Path, roots: list[DebRoot]
) -> None:
    """The printed command installs and enrolls as the agent's own account; the packaged
    agent comes online and a staff member's command runs as that account; with the state
    dir root's and login_user set (what the drop-in makes of the service), it runs as
    login_user."""
    broker = site.broker
    _shelve(broker)
    command = ok(
        site.admin(
            "token", "create", "--customer", "acme", "--consent", "unattended",
            "--install-command",
        )
    )  # fmt: skip
    assert command.count("\n") == 0
    assert command.startswith("sudo sh -c ")

    root = _root(roots, tmp_path)
    result = root.run("sh", "-c", command)
    assert result.returncode == 0, result.stdout + result.stderr
    assert root.mode(f"{STATE}/state.json") == ("600", "secondline-agent", "secondline-agent")
    assert root.mode(f"{STATE}/agent_key") == ("600", "secondline-agent", "secondline-agent")
    assert root.run("test", "-e", "/etc/secondline-agent").returncode == 1  # the token is gone
    # postinst pinned the broker's release key for root's update unit (agent.update_helper).
    pinned = root.ok("cat", "/var/lib/secondline-agent-update/release_key").strip()
    assert pinned == json.loads(root.ok("cat", f"{STATE}/state.json"))["release_key"]
    assert root.mode("/var/lib/secondline-agent-update/release_key")[:2] == ("600", "root")
    hostname = root.ok("hostname").strip().lower()
    agents = _agents(broker)
    assert list(agents) == [hostname]
    assert agents[hostname]["status"] == "offline"

    # Root starts it as the service would; it runs as the account that owns the state.
    async with _running(root, broker, hostname):
        assert _agents(broker)[hostname]["status"] == "online"
        assert _agent_users(root) == ["secondline-agent"]
        ticket = new_ticket(site, hostname)
        shown = await site.ssh(ticket, "id -un; pwd")
        assert (shown.code, shown.out) == (0, "secondline-agent\n/\n"), shown

    root.ok("useradd", "--create-home", "--shell", "/bin/bash", "support")
    root.ok("chown", "-R", "root:root", STATE)  # systemd's StateDirectory= for User=root
    root.ok("sh", "-c", f"umask 077; echo 'login_user = \"support\"' > {STATE}/agent.toml")
    async with _running(root, broker, hostname):
        assert _agent_users(root) == ["root"]
        shown = await site.ssh(ticket, "id -un; pwd")
        assert (shown.code, shown.out) == (0, "support\n/home/support\n"), shown


def _agent_users(root: DebRoot) -> list[str]:
    """Who the package's agent runs as. The PID namespace is the host's: on a shared
    machine other agents show up in ps too, so only this package's command line counts."""
    listed = root.ok("ps", "-o", "user:32=,args=", "-C", "secondline-agent").splitlines()
    return [line.split()[0] for line in listed if " /usr/bin/secondline-agent run" in line]


@contextlib.asynccontextmanager
async def _running(root: DebRoot, broker: BrokerProcess, name: str) -> AsyncIterator[None]:
    """The packaged agent, started by root in ``root``, until the block ends."""
    mark = len(broker.output)
    agent = await asyncio.create_subprocess_exec(
        *root.argv("secondline-agent", "run"),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env=root.environment(),
    )
    try:
        await broker.wait_for_line(rb"agent \S+ \(%s\) online" % name.encode(), mark)
        yield
    finally:
        agent.send_signal(signal.SIGTERM)
        _, err = await communicate(agent, 30)
    assert agent.returncode == 0, err


async def test_tampered_package_or_other_key_installs_nothing(
    broker: BrokerProcess, tmp_path: Path, roots: list[DebRoot]
) -> None:
    """No package on the broker: no command and no token. A package changed after the
    command was printed fails the digest check; a broker showing another key fails the pin;
    either way nothing is installed or written."""
    ok(secondline("customer", "add", "acme", data_dir=broker.data_dir))
    args = ("token", "create", "--customer", "acme", "--install-command")
    # Without a package there is nothing to install, and no token is spent on it.
    missing = secondline(*args, data_dir=broker.data_dir)
    assert missing.code != 0
    assert "has no agent package for amd64; build one (make agent-deb)" in missing.err
    assert json.loads(ok(secondline("token", "list", "--json", data_dir=broker.data_dir))) == []
    shelved = _shelve(broker)
    command = ok(secondline(*args, data_dir=broker.data_dir))
    with shelved.open("ab") as f:
        f.write(b"\0")

    root = _root(roots, tmp_path)
    result = root.run("sh", "-c", command)
    assert result.returncode != 0
    assert "the package is not the one this command names" in result.stderr
    assert root.run("dpkg", "-s", "secondline-agent").returncode == 1
    assert root.run("test", "-e", "/etc/secondline-agent").returncode == 1

    shutil.copy(build_agent_deb(), shelved)
    package = json.loads(ok(secondline("agent", "package", "--json", data_dir=broker.data_dir)))
    # Served only under its own version; any other path is no package.
    assert _status(broker.url + package["path"]) == 200
    for path in (
        package["path"].replace(f"/{package['version']}/", "/9.9.9/"),
        f"/agent/packages/{package['version']}/..%2Fsecondline.toml",
        f"/agent/packages/{package['version']}/secondline-agent.deb",
    ):
        assert _status(broker.url + path) == 404, path
    token = json.loads(ok(secondline(*args[:-1], "--json", data_dir=broker.data_dir)))["token"]
    other_pin = install_command(
        InstallValues(
            broker_url=package["broker_url"],
            package_url=package["url"],
            tls_pin="sha256//" + "A" * 43 + "=",
            sha256=package["sha256"],
            token=token,
        )
    )
    result = root.run("sh", "-c", other_pin)
    assert result.returncode != 0
    assert "pinned public key" in result.stderr
    assert "could not download the agent" in result.stderr
    assert root.run("dpkg", "-s", "secondline-agent").returncode == 1
    assert _agents(broker) == {}


async def test_postinst_enrolls_from_debconf_answers(
    broker: BrokerProcess, tmp_path: Path, roots: list[DebRoot]
) -> None:
    """Preseeded broker URL and token enroll at install; the token does not stay in the
    debconf database."""
    ok(secondline("customer", "add", "acme", data_dir=broker.data_dir))
    token = ok(secondline("token", "create", "--customer", "acme", data_dir=broker.data_dir))
    root = _root(roots, tmp_path)
    root.ok(
        "debconf-set-selections",
        input_text=(
            f"secondline-agent secondline-agent/broker_url string {broker.url}\n"
            f"secondline-agent secondline-agent/token password {token}\n"
        ),
    )
    root.put(build_agent_deb(), "/tmp/secondline-agent.deb")
    root.ok("dpkg", "-i", "/tmp/secondline-agent.deb")
    assert root.mode(f"{STATE}/state.json") == ("600", "secondline-agent", "secondline-agent")
    assert len(_agents(broker)) == 1
    kept = root.ok("debconf-show", "secondline-agent")
    assert token not in kept


PACKAGE_BLOCK = re.compile(
    r"^<!-- package walkthrough(?::\s*([^>]*?))?\s*-->\n```sh\n(.*?)^```", re.M | re.S
)


def _package_blocks(broker: BrokerProcess, deb: Path) -> list[tuple[str, str]]:
    """docs/agent.md's package blocks (label, text) as they run in the throwaway root: the
    broker's host and port, the package's place, and no systemctl (no systemd runs there)."""
    doc = (ROOT / "docs" / "agent.md").read_text(encoding="utf-8")
    assert f"./{deb.name}" in doc  # the page names the package this checkout builds
    table = [
        ("support.example.com", "127.0.0.1"),
        ("8443", str(broker.https_port)),
        (f"./{deb.name}", f"/tmp/{deb.name}"),
        ("sudo systemctl daemon-reload && sudo systemctl restart secondline-agent", "true"),
        ("sudo systemctl restart secondline-agent", "true"),
    ]
    return [
        ((m.group(1) or "").strip(), substitute(m.group(2), table))
        for m in PACKAGE_BLOCK.finditer(doc)
    ]


async def test_agent_doc_package_blocks_run_as_written(
    broker: BrokerProcess, tmp_path: Path, roots: list[DebRoot]
) -> None:
    """docs/agent.md's package blocks run in throwaway roots: install by hand and enroll,
    then the drop-in for sessions as another account; and, in a second root, enrollment
    from debconf answers."""
    # Two customers: both roots have the host's name, which is the agent's name by default.
    for customer in ("acme", "globex"):
        ok(secondline("customer", "add", customer, data_dir=broker.data_dir))
    deb = build_agent_deb()
    blocks = _package_blocks(broker, deb)
    assert [label for label, _ in blocks] == ["", "debconf", ""]
    by_hand, debconf = _root(roots, tmp_path), _root(roots, tmp_path)
    for label, text in blocks:
        root = debconf if label == "debconf" else by_hand
        root.put(deb, f"/tmp/{deb.name}")
        customer = "globex" if root is debconf else "acme"
        args = ("token", "create", "--customer", customer)
        token = ok(secondline(*args, data_dir=broker.data_dir))
        result = root.run("bash", "-e", "-o", "pipefail", "-c", text, env={"TOKEN": token})
        assert result.returncode == 0, (label, text, result.stdout, result.stderr)
    for root in (by_hand, debconf):
        assert root.mode(f"{STATE}/state.json") == ("600", "secondline-agent", "secondline-agent")
    listed = json.loads(ok(secondline("agent", "list", "--json", data_dir=broker.data_dir)))
    assert sorted(a["customer"] for a in listed) == ["acme", "globex"]
    drop_in = "/etc/systemd/system/secondline-agent.service.d/sessions-as-login-user.conf"
    assert by_hand.run("test", "-L", drop_in).returncode == 0
    assert by_hand.ok("cat", f"{STATE}/agent.toml") == 'login_user = "support"\n'
