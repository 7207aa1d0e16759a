"""The OpenID provider over HTTP: discovery, its signing keys, and the code exchange.

Every call is bounded by ``oidc_timeout_seconds``. The discovery document must name the
configured issuer exactly; its endpoints must be https (http only for a provider on this
machine). The signing keys are fetched again when a token names a key we do not hold
(the provider rotated), at most once a minute.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import time
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import quote, urlencode, urlsplit

import aiohttp
from authlib.common.security import generate_token
from authlib.oauth2.rfc7636 import create_s256_code_challenge

from broker.config import BrokerConfig
from broker.directory.rules import DirectorySettings, parse_customer_groups, parse_roles
from broker.errors import ConfigError

DISCOVERY: Final = "/.well-known/openid-configuration"
MAX_BODY: Final = 256 * 1024
KEYS_REFRESH_SECONDS: Final = 60.0


class ProviderError(Exception):
    """The provider could not be used; ``message`` says what happened and what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class OidcSettings:
    issuer: str
    client_id: str
    client_secret: str = field(repr=False)
    name: str
    rules: DirectorySettings  # the group → role and customer mappings, as for a directory
    groups_claim: str
    mfa_values: frozenset[str]
    ca_file: str | None
    timeout: float

    @classmethod
    def of(cls, config: BrokerConfig) -> OidcSettings | None:
        if not config.oidc_issuer:
            return None
        try:
            with open(config.oidc_client_secret_file, encoding="utf-8") as f:
                secret = f.read(4096).strip()
        except OSError as exc:
            raise ConfigError(
                f"oidc_client_secret_file {config.oidc_client_secret_file}: cannot be read "
                f"({exc.strerror})"
            ) from None
        if not secret:
            raise ConfigError("oidc_client_secret_file is empty: put the client secret in it")
        try:
            rules = DirectorySettings(
                base_dn="",
                roles=parse_roles(config.oidc_roles),
                customer_groups=parse_customer_groups(config.oidc_customer_groups),
            )
        except ValueError as exc:
            raise ConfigError(f"oidc_roles / oidc_customer_groups: {exc}") from None
        return cls(
            issuer=config.oidc_issuer.rstrip("/"),
            client_id=config.oidc_client_id,
            client_secret=secret,
            name=config.oidc_name[:32] or "single sign-on",
            rules=rules,
            groups_claim=config.oidc_groups_claim,
            mfa_values=frozenset(v.strip() for v in config.oidc_mfa_amr.split(",") if v.strip()),
            ca_file=config.oidc_ca_file or None,
            timeout=config.oidc_timeout_seconds,
        )


@dataclass(frozen=True)
class Pending:
    """One browser's sign-in under way: kept in its cookie until the provider sends it back."""

    state: str
    nonce: str
    verifier: str
    next: str


def _allowed_url(url: str) -> bool:
    parts = urlsplit(url)
    loopback = parts.hostname in ("127.0.0.1", "::1", "localhost")
    return parts.scheme == "https" or (parts.scheme == "http" and loopback)


class Provider:
    def __init__(self, settings: OidcSettings) -> None:
        self.settings = settings
        self._meta: dict[str, object] | None = None
        self._keys: dict[str, object] | None = None
        self._keys_at = -1e18
        self._lock = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            context = ssl.create_default_context(cafile=self.settings.ca_file)
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.settings.timeout),
                connector=aiohttp.TCPConnector(ssl=context),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _json(self, method: str, url: str, **kw: object) -> dict[str, object]:
        if not _allowed_url(url):
            raise ProviderError(f"the provider named a non-https address ({url[:100]})")
        try:
            async with self._http().request(method, url, allow_redirects=False, **kw) as resp:  # type: ignore[arg-type]
                body = await resp.content.read(MAX_BODY + 1)
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise ProviderError(
                f"the sign-in provider cannot be reached ({type(exc).__name__}); try again "
                "in a few minutes, or sign in with your password"
            ) from None
        if len(body) > MAX_BODY:
            raise ProviderError("the sign-in provider sent an answer that is too large")
        try:
            data = json.loads(body)
        except ValueError:
            raise ProviderError(f"the sign-in provider answered HTTP {status}, not JSON") from None
        if not isinstance(data, dict):
            raise ProviderError("the sign-in provider sent an unexpected answer")
        if status != 200:
            error = str(data.get("error", ""))[:60]
            raise ProviderError(f"the sign-in provider refused ({status} {error})")
        return data

    async def metadata(self) -> dict[str, object]:
        async with self._lock:
            if self._meta is None:
                meta = await self._json("GET", self.settings.issuer + DISCOVERY)
                if str(meta.get("issuer", "")).rstrip("/") != self.settings.issuer:
                    raise ProviderError(
                        "the provider's discovery document names another issuer; check oidc_issuer"
                    )
                for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
                    if not isinstance(meta.get(key), str) or not _allowed_url(str(meta[key])):
                        raise ProviderError(f"the provider's discovery document lacks {key}")
                self._meta = meta
            return self._meta

    async def keys(self, *, refresh: bool = False) -> dict[str, object]:
        meta = await self.metadata()
        async with self._lock:
            stale = time.monotonic() - self._keys_at > KEYS_REFRESH_SECONDS
            if self._keys is None or (refresh and stale):
                self._keys = await self._json("GET", str(meta["jwks_uri"]))
                self._keys_at = time.monotonic()
            return self._keys

    async def start(self, redirect_uri: str, next_target: str) -> tuple[str, Pending]:
        """The provider's authorization URL (code flow, PKCE S256) and what to remember."""
        meta = await self.metadata()
        pending = Pending(generate_token(43), generate_token(43), generate_token(64), next_target)
        query = urlencode(
            {
                "response_type": "code",
                "client_id": self.settings.client_id,
                "redirect_uri": redirect_uri,
                "scope": "openid profile email",
                "state": pending.state,
                "nonce": pending.nonce,
                "code_challenge": create_s256_code_challenge(pending.verifier),
                "code_challenge_method": "S256",
            }
        )
        endpoint = str(meta["authorization_endpoint"])
        return f"{endpoint}{'&' if '?' in endpoint else '?'}{query}", pending

    def _basic(self) -> str:
        # client_secret_basic (RFC 6749 2.3.1): both parts form-encoded before base64.
        client, secret = self.settings.client_id, self.settings.client_secret
        pair = f"{quote(client, safe='')}:{quote(secret, safe='')}"
        return "Basic " + base64.b64encode(pair.encode()).decode()

    async def exchange(self, code: str, verifier: str, redirect_uri: str) -> str:
        """Trade the code for the ID token (client_secret_basic, with the PKCE verifier)."""
        meta = await self.metadata()
        data = await self._json(
            "POST",
            str(meta["token_endpoint"]),
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": redirect_uri,
                "code_verifier": verifier,
            },
            headers={"Authorization": self._basic()},
        )
        token = data.get("id_token")
        if not isinstance(token, str):
            raise ProviderError("the sign-in provider sent no ID token")
        return token
