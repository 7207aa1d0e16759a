"""The agent's network cut mid-session, for real: a `secondline serve`, an agent enrolled and
running through a loopback proxy (tests/support/blackhole_proxy.py), and the OpenSSH
client. The proxy stops forwarding without closing anything, so only keepalives can tell
either side that the other is gone. Both sides run with short tunnel keepalives (the
broker's `tunnel_keepalive_*` settings, the agent's `agent.toml`), so "longer than the
keepalive timeout" is seconds, not a minute."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import TypeVar

import pytest

from agent.errors import ConfigError as AgentConfigError
from agent.state import parse_config
from broker.config import load_config
from broker.errors import ConfigError
from tests.support.blackhole_proxy import BlackholeProxy
from tests.support.broker import BrokerProcess, start_broker
from tests.support.site import (  # the same real broker, agent and ssh set-up
    WAIT,
    Site,
    agent_cli,
    assert_noted_once,
    new_ticket,
    ok,
    run_agent,
    sessions_of,
    wait_note,
)

#: Both sides: a keepalive after 2 s of silence, the tunnel dead after two unanswered ones,
#: so a cut is noticed 6 s after the last byte (the default is 45 s).
KEEPALIVE_S = 2
KEEPALIVE_COUNT = 2
ONLINE = rb"agent ag-[a-z0-9]{16} \(web01\) online"
OFFLINE = rb"agent ag-[a-z0-9]{16} offline"
#: Shell integration's "input starts" mark, printed after each prompt.
PROMPT_READY = b"\x1b]133;B\x07"

_T = TypeVar("_T")

# Only the two network tests are marked postgres and e2e: they run a real broker per
# database backend. The pure checks of the keepalive settings at the end need neither.


async def bounded(work: Coroutine[object, object, _T]) -> _T:
    """``work``, failing the test if it takes longer than the usual bound."""
    async with asyncio.timeout(WAIT):
        return await work


def proxy_url(proxy: BlackholeProxy) -> str:
    return f"https://127.0.0.1:{proxy.port}"


@pytest.fixture
async def proxy(data_dir: Path) -> AsyncIterator[BlackholeProxy]:
    """The cuttable network between agents and the broker's HTTPS port."""
    https_port = load_config(data_dir, env={}).https_port
    async with BlackholeProxy("127.0.0.1", https_port) as proxy:
        yield proxy


@pytest.fixture
async def broker(data_dir: Path, proxy: BlackholeProxy) -> AsyncIterator[BrokerProcess]:
    """`secondline serve` with short tunnel keepalives, whose public URL (the one enrollment
    gives agents for their tunnel) is the proxy's. Replaces the shared fixture here, so the
    ``site`` fixture (tests/e2e/conftest.py) runs on this broker."""
    config = data_dir / "secondline.toml"
    text = re.sub(
        r"^public_url = .*$",
        f"public_url = {json.dumps(proxy_url(proxy))}",
        config.read_text(),
        count=1,
        flags=re.MULTILINE,
    )
    text += (
        f"tunnel_keepalive_interval_seconds = {KEEPALIVE_S}\n"
        f"tunnel_keepalive_count_max = {KEEPALIVE_COUNT}\n"
    )
    config.write_text(text)
    process = await start_broker(data_dir)
    try:
        yield process
    finally:
        await process.stop()


async def enroll_behind_proxy(site: Site, proxy: BlackholeProxy, name: str) -> Path:
    """Enroll an unattended agent through the proxy, give it short keepalives, run it."""
    token = ok(site.admin("token", "create", "--customer", "acme", "--consent", "unattended"))
    state = site.tmp / f"agent-{name}"
    ok(agent_cli(state, "enroll", proxy_url(proxy), token, "--name", name))
    enrolled = json.loads((state / "state.json").read_text())
    assert enrolled["tunnel_url"] == f"wss://127.0.0.1:{proxy.port}/agent/v1/tunnel"
    config = state / "agent.toml"
    config.write_text(
        f"keepalive_interval_seconds = {KEEPALIVE_S}\nkeepalive_count_max = {KEEPALIVE_COUNT}\n"
    )
    config.chmod(0o600)
    await run_agent(site, state, name)
    return state


@pytest.mark.postgres
@pytest.mark.e2e
async def test_a_cut_shorter_than_the_keepalive_timeout_loses_nothing(
    site: Site, proxy: BlackholeProxy
) -> None:
    """A cut that outlives a keepalive interval but not the timeout holds the session: the
    line typed during it runs after the restore, over the same tunnel, and the session ends
    normally, its transcript valid and its note on the ticket once."""
    await enroll_behind_proxy(site, proxy, "web01")
    site.ticket = new_ticket(site, "web01")
    term = await site.interactive(site.ticket)
    term.type("echo before-$((2*3))\n")
    # The shell's next prompt is out: nothing of the session is in flight at the cut.
    await term.expect_in_order(b"before-6", PROMPT_READY)
    dialled = proxy.accepted
    cut_at = len(site.broker.output)
    proxy.cut()
    term.type("echo during-cut-$((6*7))\n")
    await bounded(proxy.wait_held("down"))  # the typed line waits at the cut...
    await bounded(proxy.wait_held("up"))  # ...and so does a ping or keepalive of the agent
    proxy.restore()
    await term.expect(b"during-cut-42")
    term.type("echo after-$((3*3))\n")
    await term.expect(b"after-9")
    assert proxy.accepted == dialled, "the agent dialled again: the tunnel did not survive"
    assert not any(re.search(OFFLINE, line) for line in site.broker.output[cut_at:])
    term.type("exit\n")
    mark = len(site.broker.output)
    code, err = await term.finish()
    assert code == 0, err
    sid = str(sessions_of(site, site.ticket)[0]["id"])
    note = await wait_note(site, site.ticket, sid, mark)
    assert "echo during-cut-$((6*7))" in str(note["text"])
    verdict = site.admin("transcript", "verify", sid)
    assert verdict.code == 0, verdict
    assert verdict.out.startswith("valid:")
    await assert_noted_once(site, site.ticket, sid)


@pytest.mark.postgres
@pytest.mark.e2e
async def test_a_cut_longer_than_the_keepalive_timeout_ends_the_session_then_heals(
    site: Site, proxy: BlackholeProxy
) -> None:
    """A cut past the keepalive timeout ends the session as "the agent disconnected", with
    a transcript that verifies and one note; the agent notices too and dials again into
    the cut, and once the network is back it is online by itself and sessions work."""
    await enroll_behind_proxy(site, proxy, "web01")
    site.ticket = new_ticket(site, "web01")
    term = await site.interactive(site.ticket)
    term.type("echo alive-$((6*7))\n")
    await term.expect(b"alive-42")
    sid = str(sessions_of(site, site.ticket)[0]["id"])
    dialled = proxy.accepted
    mark = len(site.broker.output)
    proxy.cut()
    term.type("echo never-$((1+1))\n")
    code, err = await term.finish()
    assert code == 255
    assert "the agent disconnected" in err
    assert b"never-2" not in term.out
    await site.broker.wait_for_line(OFFLINE, mark)
    assert proxy.is_cut
    await bounded(proxy.wait_accepted(dialled + 1))  # the agent redials into the cut
    back = len(site.broker.output)
    proxy.restore()
    await site.broker.wait_for_line(ONLINE, back)
    await wait_note(site, site.ticket, sid, mark)
    verdict = site.admin("transcript", "verify", sid)
    assert verdict.code == 0, verdict
    assert verdict.out.startswith("valid")  # complete, or "valid, but cut short (...)"
    result = await site.ssh(site.ticket, "echo back-$((4*5))")
    assert (result.code, result.out) == (0, "back-20\n"), result.err
    await assert_noted_once(site, site.ticket, sid)


@pytest.mark.parametrize(
    ("text", "interval", "count"),
    [
        ("", 15.0, 2),
        ("keepalive_interval_seconds = 2\nkeepalive_count_max = 5\n", 2.0, 5),
        ("keepalive_interval_seconds = 1.5\n", 1.5, 2),
        ("keepalive_interval_seconds = 3600\nkeepalive_count_max = 100\n", 3600.0, 100),
    ],
)
def test_agent_keepalive_settings_are_read(text: str, interval: float, count: int) -> None:
    """agent.toml's keepalive pair is read, with the protocol's 15 s x 2 as default."""
    config = parse_config(text)
    assert (config.keepalive_interval_seconds, config.keepalive_count_max) == (interval, count)
    assert config.ping_timeout_seconds == interval * count


@pytest.mark.parametrize(
    "text",
    [
        "keepalive_interval_seconds = 0\n",
        "keepalive_interval_seconds = 0.5\n",
        "keepalive_interval_seconds = 3601\n",
        "keepalive_interval_seconds = true\n",
        "keepalive_interval_seconds = '2'\n",
        "keepalive_interval_seconds = nan\n",
        "keepalive_count_max = 0\n",
        "keepalive_count_max = 101\n",
        "keepalive_count_max = 2.0\n",
        "keepalive_count_max = false\n",
    ],
)
def test_bad_agent_keepalive_settings_are_refused(text: str) -> None:
    """Out-of-range or mistyped keepalive values are a ConfigError naming the key."""
    key = text.split(" ", 1)[0]
    with pytest.raises(AgentConfigError, match=key):
        parse_config(text)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("TUNNEL_KEEPALIVE_INTERVAL_SECONDS", "0"),
        ("TUNNEL_KEEPALIVE_INTERVAL_SECONDS", "3601"),
        ("TUNNEL_KEEPALIVE_COUNT_MAX", "0"),
        ("TUNNEL_KEEPALIVE_COUNT_MAX", "101"),
    ],
)
def test_bad_broker_keepalive_settings_are_refused(tmp_path: Path, name: str, value: str) -> None:
    """The broker refuses keepalive settings that would switch keepalives off or make a
    dead tunnel hold its sessions for hours."""
    with pytest.raises(ConfigError, match=name.lower()):
        load_config(tmp_path, env={f"SECONDLINE_{name}": value})
    good = load_config(tmp_path, env={f"SECONDLINE_{name}": "1"})
    assert getattr(good, name.lower()) == 1
    assert load_config(tmp_path, env={}).tunnel_keepalive_interval_seconds == 15
