"""A small synchronous client of the REST API, with credentials resolved as PRODUCT.md says:
global options, then SECONDLINE_* variables, then `secondline login`'s stored
credentials, then the broker's data dir."""

from __future__ import annotations

import json
import os
import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from broker.config import load_config
from broker.errors import BrokerError, ConfigError

CREDENTIALS_FILE: Final = "credentials.json"


class CliError(Exception):
    """A failure the CLI reports as one sentence on stderr with a non-zero exit."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def config_home(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME", "~")).expanduser() / ".config")
    return Path(base) / "secondline"


def stored_credentials(env: Mapping[str, str]) -> dict[str, str]:
    path = config_home(env) / CREDENTIALS_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise CliError(f"{path} cannot be read ({exc}); run `secondline login` again") from None
    return {k: str(v) for k, v in raw.items() if isinstance(v, str)}


def store_credentials(env: Mapping[str, str], url: str, token: str, ca_cert: str | None) -> Path:
    home = config_home(env)
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = home / CREDENTIALS_FILE
    data = {"url": url, "token": token}
    if ca_cert:
        data["ca_cert"] = str(Path(ca_cert).resolve())
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh)
    os.replace(tmp, path)
    return path


@dataclass(frozen=True)
class Connection:
    url: str
    token: str | None
    ca_cert: str | None


def resolve_connection(
    *,
    url: str | None,
    token: str | None,
    ca_cert: str | None,
    data_dir: str | None,
    env: Mapping[str, str],
) -> Connection:
    stored = stored_credentials(env)
    data_dir = data_dir or env.get("SECONDLINE_DATA_DIR")
    local_url = local_token = local_ca = None
    if data_dir:
        try:
            config = load_config(Path(data_dir), env)
        except ConfigError as exc:
            raise CliError(exc.message) from None
        host = config.listen_host
        if host in ("0.0.0.0", "::", ""):  # noqa: S104 - reaching a wildcard listener locally
            host = "127.0.0.1"
        local_url = f"https://{host}:{config.https_port}"
        token_file = Path(data_dir) / "admin.token"
        if token_file.exists():
            local_token = token_file.read_text(encoding="utf-8").strip()
        local_ca = str(config.tls_cert_path)
    final_url = url or env.get("SECONDLINE_URL") or stored.get("url") or local_url
    if not final_url:
        raise CliError(
            "no broker given: use --url, SECONDLINE_URL, `secondline login`, or --data-dir on "
            "the broker host"
        )
    return Connection(
        url=final_url.rstrip("/"),
        token=token or env.get("SECONDLINE_TOKEN") or stored.get("token") or local_token,
        ca_cert=ca_cert or env.get("SECONDLINE_CA_CERT") or stored.get("ca_cert") or local_ca,
    )


class ApiClient:
    def __init__(self, conn: Connection, timeout: float = 30.0) -> None:
        self.conn = conn
        self.timeout = timeout
        try:
            self._ssl = (
                ssl.create_default_context(cafile=conn.ca_cert)
                if conn.ca_cert
                else ssl.create_default_context()
            )
        except (OSError, ssl.SSLError) as exc:
            raise CliError(
                f"cannot use the broker's certificate {conn.ca_cert} "
                f"({getattr(exc, 'strerror', None) or exc}); give the right file with "
                "--ca-cert, or the data dir of an initialised broker with --data-dir"
            ) from None

    def request(
        self, method: str, path: str, body: object | None = None, *, auth: bool = True
    ) -> object:
        payload = self._send(method, "/api/v1" + path, body, auth=auth)
        return json.loads(payload) if payload else None

    def download(self, path: str) -> bytes:
        """The bytes of a ``/files/…`` download (a transcript's kept file, an attachment)."""
        return self._send("GET", path, None, auth=True)

    def _send(self, method: str, path: str, body: object | None, *, auth: bool) -> bytes:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.conn.url + path, data=data, method=method)  # noqa: S310 - https only
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if auth:
            if not self.conn.token:
                raise CliError(
                    "no API token: run `secondline login`, set SECONDLINE_TOKEN, or use "
                    "--data-dir on the broker host"
                )
            req.add_header("Authorization", f"Bearer {self.conn.token}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self._ssl) as resp:  # noqa: S310
                payload: bytes = resp.read()
        except urllib.error.HTTPError as exc:
            raise CliError(_error_message(exc)) from None
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, ssl.SSLCertVerificationError):
                raise CliError(
                    f"the broker's certificate is not trusted ({reason.verify_message}); "
                    "pass its certificate with --ca-cert"
                ) from None
            raise CliError(
                f"cannot reach the broker at {self.conn.url} ({reason}); "
                "is `secondline serve` running?"
            ) from None
        except (TimeoutError, ConnectionError) as exc:
            raise CliError(f"cannot reach the broker at {self.conn.url} ({exc})") from None
        return payload


def _error_message(exc: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(exc.read())
        return str(body["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return f"the broker answered {exc.code} {exc.reason}"


def broker_error_to_cli(exc: BrokerError) -> CliError:
    return CliError(exc.message)
