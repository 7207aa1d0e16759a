"""Unit tests of the agent's proxy choice: agent.toml's proxy_url, else HTTPS_PROXY unless
NO_PROXY; Basic credentials; refusals that name the setting."""

from __future__ import annotations

import pytest

from agent.errors import ConfigError
from agent.proxy import Proxy, parse_proxy_url, select_proxy
from agent.state import parse_config


def test_proxy_urls_with_and_without_credentials() -> None:
    """Host, port (3128 by default), percent-decoded credentials and the Basic header."""
    p = parse_proxy_url("http://agent:p%40ss%3Aw@proxy.example:8080", "x")
    assert p == Proxy("proxy.example", 8080, "agent", "p@ss:w")
    assert p.authorization == "Basic YWdlbnQ6cEBzczp3"  # base64 of agent:p@ss:w
    assert p.url == "http://agent:p%40ss%3Aw@proxy.example:8080"
    assert "p@ss" not in repr(p)
    bare = parse_proxy_url("proxy.example", "x")
    assert (bare, bare.authorization) == (Proxy("proxy.example", 3128), None)


@pytest.mark.parametrize(
    "bad",
    [
        "https://proxy:3128",
        "socks5://proxy:1080",
        "http://proxy:3128/path",
        "http://proxy:99999",
        "http://",
        "http://pro xy:3128",
        "http://proxy:3128\n",
        "http://" + "a" * 3000,
    ],
)
def test_bad_proxy_urls_are_refused_naming_the_setting(bad: str) -> None:
    """Not an http:// host[:port] URL: one sentence naming where it was set."""
    with pytest.raises(ConfigError, match=r"^HTTPS_PROXY: "):
        parse_proxy_url(bad, "HTTPS_PROXY")


def test_agent_toml_wins_and_no_proxy_goes_around_the_environment() -> None:
    """proxy_url is used whatever the environment says; HTTPS_PROXY (either case) unless
    NO_PROXY matches the host, its domain, or is *."""
    env = {"https_proxy": "http://env-proxy:3128"}
    assert select_proxy("http://conf:1", "b.example", {**env, "NO_PROXY": "*"}) == Proxy("conf", 1)
    assert select_proxy(None, "b.example", env) == Proxy("env-proxy", 3128)
    assert select_proxy(None, "b.example", {"HTTPS_PROXY": "env-proxy"}) == Proxy("env-proxy", 3128)
    assert select_proxy(None, "b.example", {}) is None
    for no_proxy in ("*", "b.example", ".example", "example", "x, b.example:8443", "B.EXAMPLE"):
        assert select_proxy(None, "b.example", {**env, "no_proxy": no_proxy}) is None, no_proxy
    for no_proxy in ("a.example", "b.example.org", "xample", ""):
        assert select_proxy(None, "b.example", {**env, "no_proxy": no_proxy}) is not None


def test_agent_toml_checks_proxy_url() -> None:
    """proxy_url is read from agent.toml and checked when the file is read."""
    assert parse_config('proxy_url = "http://u:p@proxy:3128"\n').proxy_url == (
        "http://u:p@proxy:3128"
    )
    with pytest.raises(ConfigError, match="proxy_url"):
        parse_config('proxy_url = "ftp://proxy"\n')
    with pytest.raises(ConfigError, match="proxy_url"):
        parse_config("proxy_url = 3128\n")
