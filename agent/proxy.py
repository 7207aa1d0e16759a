"""Which HTTP proxy the agent's connections to the broker go through, with its Basic
credentials.

``proxy_url`` in agent.toml wins: when set, every connection to the broker (enrollment,
help requests, the tunnel) goes through it. Otherwise ``HTTPS_PROXY`` (or ``https_proxy``)
is used unless ``NO_PROXY`` names the broker's host, as curl and Python's urllib do.
Credentials come from the URL's user part (``http://user:password@proxy:3128``,
percent-encoded where needed) and are sent as ``Proxy-Authorization: Basic``; only
``http://`` proxies are supported (the broker connection inside is TLS all the same).

Pure: the caller passes the environment.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote, unquote, urlsplit

from agent.errors import ConfigError

DEFAULT_PORT: Final = 3128
URL_MAX: Final = 2048


@dataclass(frozen=True, slots=True)
class Proxy:
    """An HTTP proxy; ``repr`` never shows the password."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None

    def __repr__(self) -> str:
        who = f"{self.username}:***@" if self.username is not None else ""
        return f"Proxy(http://{who}{self.host}:{self.port})"

    @property
    def authorization(self) -> str | None:
        """The ``Proxy-Authorization`` header value, when there are credentials."""
        if self.username is None:
            return None
        pair = f"{self.username}:{self.password or ''}".encode()
        return "Basic " + base64.b64encode(pair).decode("ascii")

    @property
    def url(self) -> str:
        """The URL with its credentials, as the websockets client takes it."""
        user = ""
        if self.username is not None:
            user = f"{quote(self.username, safe='')}:{quote(self.password or '', safe='')}@"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{user}{host}:{self.port}"


def parse_proxy_url(text: str, source: str) -> Proxy:
    """``http://[user:password@]host[:port]``; ``source`` names where it came from."""
    if len(text) > URL_MAX or any(ord(c) < 0x21 or c == "\x7f" for c in text):
        raise ConfigError(f"{source}: the proxy URL holds spaces or control characters")
    candidate = text if "://" in text else f"http://{text}"
    try:
        parts = urlsplit(candidate)
        port = parts.port
    except ValueError:
        raise ConfigError(
            f"{source}: the proxy URL is not valid; write it as http://host:3128"
        ) from None
    if parts.scheme != "http" or not parts.hostname:
        raise ConfigError(
            f"{source}: the proxy must be an http:// URL such as http://proxy.example:3128 "
            "(the connection to the broker inside it is TLS)"
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(f"{source}: the proxy URL must not have a path; write http://host:3128")
    username = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    return Proxy(parts.hostname, port or DEFAULT_PORT, username, password)


def select_proxy(proxy_url: str | None, host: str, environ: Mapping[str, str]) -> Proxy | None:
    """The proxy for a connection to ``host``: agent.toml's, else the environment's."""
    if proxy_url is not None:
        return parse_proxy_url(proxy_url, "agent.toml: proxy_url")
    env = {k.lower(): v for k, v in environ.items() if k.lower().endswith("_proxy")}
    given = env.get("https_proxy")
    if not given:
        return None
    no_proxy = env.get("no_proxy", "")
    if no_proxy and _bypassed(host, no_proxy):
        return None
    return parse_proxy_url(given, "HTTPS_PROXY")


def _bypassed(host: str, no_proxy: str) -> bool:
    """NO_PROXY as curl reads it: "*", or names whose suffix (domain) matches the host,
    with an optional leading dot and an optional port."""
    host = host.lower().strip("[]")
    for entry in no_proxy.lower().split(","):
        name = entry.strip()
        if name == "*":
            return True
        if name.startswith("[") and "]" in name:
            name = name[1 : name.index("]")]
        elif name.count(":") == 1:
            name = name.partition(":")[0]
        name = name.lstrip(".")
        if name and (host == name or host.endswith("." + name)):
            return True
    return False
