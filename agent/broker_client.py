"""The agent's HTTPS calls to the broker outside the tunnel: enrollment and help requests.

Blocking (stdlib ``http.client``), because only the CLI uses them. The broker's
certificate is pinned: after the TLS handshake and *before a byte of the request is
sent*, the SHA-256 of the certificate the broker presented must equal the pinned
fingerprint (the token's at enrollment, ``broker.pem``'s afterwards). A proxy
(agent.proxy: agent.toml's ``proxy_url``, else ``HTTPS_PROXY`` unless ``NO_PROXY``) is
used through HTTP CONNECT with its Basic credentials, as for the tunnel.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.enrollment import EnrollmentAnswer, EnrollmentRequest, ErrorBody, check_url
from agent.errors import (
    BrokerRefusedError,
    BrokerUnreachableError,
    CertificateMismatchError,
    MessageError,
)
from agent.protocol import ENROLL_PATH, HELP_PATH, cert_fingerprint
from agent.proxy import select_proxy
from agent.signing import HelpAnswer, HelpRequest, sign_request
from agent.version import VERSION

TIMEOUT_SECONDS: Final = 30.0
ANSWER_MAX: Final = 64 * 1024
USER_AGENT: Final = f"secondline-agent/{VERSION}"


@dataclass(frozen=True, slots=True)
class HTTPAnswer:
    """Status and body of an answer."""

    status: int
    body: bytes


def post_pinned(
    base_url: str,
    path: str,
    body: bytes,
    *,
    fingerprint: str,
    headers: dict[str, str] | None = None,
    timeout: float = TIMEOUT_SECONDS,
    proxy_url: str | None = None,
) -> HTTPAnswer:
    """``POST`` JSON to ``base_url + path`` once the broker's certificate matched."""
    conn = _connect_pinned(base_url, fingerprint, timeout, proxy_url)
    try:
        response = _send(
            conn,
            "POST",
            urlsplit(base_url).path.rstrip("/") + path,
            body,
            {"Content-Type": "application/json", "Accept": "application/json", **(headers or {})},
        )
        try:
            data = response.read(ANSWER_MAX + 1)
        except (OSError, http.client.HTTPException) as exc:
            raise BrokerUnreachableError(
                f"the connection to the broker failed ({_reason(exc)}); try again"
            ) from None
        if len(data) > ANSWER_MAX:
            raise BrokerUnreachableError("the broker's answer is too large; is the URL right?")
        return HTTPAnswer(response.status, data)
    finally:
        conn.close()


@dataclass(frozen=True, slots=True)
class Download:
    """What :func:`download_pinned` wrote: its HTTP status, size and SHA-256."""

    status: int
    size: int
    sha256: str


def download_pinned(
    base_url: str,
    path: str,
    dest: Path,
    *,
    fingerprint: str,
    max_bytes: int,
    timeout: float = TIMEOUT_SECONDS,
    proxy_url: str | None = None,
) -> Download:
    """``GET`` ``base_url + path`` into ``dest`` (0600), streamed and hashed, at most
    ``max_bytes``; on a status other than 200 nothing is written."""
    conn = _connect_pinned(base_url, fingerprint, timeout, proxy_url)
    try:
        response = _send(conn, "GET", urlsplit(base_url).path.rstrip("/") + path, None, {})
        if response.status != 200:
            return Download(response.status, 0, "")
        digest = hashlib.sha256()
        size = 0
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as out:
            try:
                while block := response.read(1 << 16):
                    size += len(block)
                    if size > max_bytes:
                        raise BrokerUnreachableError(
                            f"the broker sent more than {max_bytes} bytes for {path}; "
                            "nothing was installed"
                        )
                    digest.update(block)
                    out.write(block)
            except (OSError, http.client.HTTPException) as exc:
                raise BrokerUnreachableError(
                    f"the download of {path} failed ({_reason(exc)}); it is tried again later"
                ) from None
        return Download(200, size, digest.hexdigest())
    finally:
        conn.close()


def _connect_pinned(
    base_url: str, fingerprint: str, timeout: float, proxy_url: str | None
) -> http.client.HTTPSConnection:
    """A connection to the broker whose certificate is the pinned one (nothing sent yet)."""
    check_url(base_url, "the broker URL", "https")
    parts = urlsplit(base_url)
    host = parts.hostname or ""
    port = parts.port or 443
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # Trust comes from the pinned fingerprint, checked below before anything is sent.
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    proxy = select_proxy(proxy_url, host, os.environ)
    if proxy is None:
        conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
    else:
        conn = http.client.HTTPSConnection(proxy.host, proxy.port, timeout=timeout, context=context)
        auth = proxy.authorization
        conn.set_tunnel(host, port, headers={"Proxy-Authorization": auth} if auth else None)
    try:
        conn.connect()
    except (OSError, http.client.HTTPException) as exc:
        conn.close()
        raise BrokerUnreachableError(
            f"cannot reach the broker at {base_url} ({_reason(exc)}); "
            "check the URL and the network, then try again"
        ) from None
    sock = conn.sock
    der = sock.getpeercert(binary_form=True) if isinstance(sock, ssl.SSLSocket) else None
    if der is None or cert_fingerprint(der) != fingerprint:
        conn.close()
        raise CertificateMismatchError(
            "the broker's certificate does not match the token; nothing was sent. "
            "Check the broker URL, or ask the helpdesk for a new token"
        )
    return conn


def _send(
    conn: http.client.HTTPSConnection,
    method: str,
    target: str,
    body: bytes | None,
    headers: dict[str, str],
) -> http.client.HTTPResponse:
    try:
        conn.request(method, target, body=body, headers={"User-Agent": USER_AGENT, **headers})
        return conn.getresponse()
    except (OSError, http.client.HTTPException) as exc:
        raise BrokerUnreachableError(
            f"the connection to the broker failed ({_reason(exc)}); try again"
        ) from None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if isinstance(exc, OSError) and str(exc).startswith("Tunnel connection failed"):
        # http.client's words for the proxy's refusal, e.g. "407 Proxy Authentication Required"
        return "the proxy refused: " + str(exc).removeprefix("Tunnel connection failed: ")
    return type(exc).__name__


def _refusal(answer: HTTPAnswer) -> BrokerRefusedError:
    try:
        error = ErrorBody.parse(answer.body)
    except MessageError:
        return BrokerRefusedError(
            answer.status,
            "http_error",
            f"the broker answered HTTP {answer.status} without an explanation; try again later "
            "or contact the helpdesk",
        )
    return BrokerRefusedError(answer.status, error.code, f"the broker refused: {error.message}")


def enroll(
    base_url: str, request: EnrollmentRequest, *, proxy_url: str | None = None
) -> EnrollmentAnswer:
    """Enroll with the broker; the answer's certificate must be the token's."""
    answer = post_pinned(
        base_url,
        ENROLL_PATH,
        request.serialize(),
        fingerprint=request.token.fingerprint,
        proxy_url=proxy_url,
    )
    if answer.status != 200:
        raise _refusal(answer)
    try:
        result = EnrollmentAnswer.parse(answer.body)
    except MessageError as exc:
        raise MessageError(
            f"the broker's enrollment answer is invalid ({exc}); contact the helpdesk"
        ) from None
    if result.tls_cert_fingerprint != request.token.fingerprint:
        raise CertificateMismatchError(
            "the broker's answer names a certificate other than the token's; "
            "ask the helpdesk for a new token"
        )
    return result


def request_help(
    base_url: str,
    agent_id: str,
    key: Ed25519PrivateKey,
    fingerprint: str,
    help_request: HelpRequest,
    now: float | None = None,
    *,
    proxy_url: str | None = None,
) -> HelpAnswer:
    """Open a ticket for the end user's request; return its id."""
    body = help_request.serialize()
    headers = sign_request(key, agent_id, body, time.time() if now is None else now)
    answer = post_pinned(
        base_url, HELP_PATH, body, fingerprint=fingerprint, headers=headers, proxy_url=proxy_url
    )
    if answer.status != 200:
        raise _refusal(answer)
    try:
        return HelpAnswer.parse(answer.body)
    except MessageError as exc:
        raise MessageError(
            f"the broker's answer is invalid ({exc}); contact the helpdesk"
        ) from None
