"""The broker's configuration: one frozen dataclass, read from DIR/secondline.toml and
``SECONDLINE_*`` variables. Unknown file keys are an error that names the key."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from broker.db.urls import normalize_database_url
from broker.errors import ConfigError

CONFIG_FILE: Final = "secondline.toml"
ENV_PREFIX: Final = "SECONDLINE_"


@dataclass(frozen=True, kw_only=True)
class BrokerConfig:
    data_dir: Path
    public_url: str = "https://localhost:8443"
    listen_host: str = "0.0.0.0"  # noqa: S104 - agents on customer networks must reach the broker
    https_port: int = 8443
    ssh_port: int = 2222
    # The SSH gateway (broker.ssh_gateway.gateway): a connection that has not signed in after
    # ssh_login_timeout_seconds is closed; at most ssh_max_preauth such connections in all
    # and ssh_max_preauth_per_source from one address; ssh_max_channels sessions on one.
    ssh_login_timeout_seconds: int = 20
    ssh_max_preauth: int = 256
    ssh_max_preauth_per_source: int = 16
    ssh_max_channels: int = 10
    # Clients without strict key exchange (Terrapin, CVE-2023-48795) are refused unless this
    # is true; each one let in is then audited (ssh.legacy_kex).
    ssh_allow_legacy_kex: bool = False
    # The SSH second factor (docs/identity.md): after the key, the gateway asks for the staff
    # member's authenticator code on every connection (every-session), once per shift
    # (per-shift: a good code opens a code-less window of ssh_shift_hours for that key), or
    # never (off). ssh_second_factor_roles overrides it per role: "admin=every-session, ...".
    ssh_second_factor: str = "per-shift"
    ssh_second_factor_roles: str = ""
    ssh_shift_hours: int = 8
    database_url: str = ""
    database_schema: str = ""  # PostgreSQL only: the schema to use (search_path)
    tls_cert: str = ""
    tls_key: str = ""
    # Agent packages (secondline-agent_VERSION_ARCH.deb) served at /agent/packages/VERSION/
    # for the install command of `token create --install-command`; "" = DATA_DIR/agent-packages.
    agent_packages_dir: str = ""
    log_level: str = "info"
    max_body_bytes: int = 1024 * 1024
    max_attachment_bytes: int = 10 * 1024 * 1024
    session_idle_timeout_seconds: int = 30 * 60
    session_max_seconds: int = 8 * 60 * 60
    # Above what one broker process sustains (about 200/s at 5 ms of CPU each): the bound of
    # 256 handshakes in flight protects the loop, and this rate only spreads a herd larger
    # than that, so it must not be what caps a node that still has CPU to spare.
    tunnel_handshakes_per_second: int = 400
    # Agent tunnels: an SSH keepalive after this many seconds without a byte from the agent;
    # the tunnel (and its sessions) ends after tunnel_keepalive_count_max unanswered ones.
    tunnel_keepalive_interval_seconds: int = 15
    tunnel_keepalive_count_max: int = 2
    token_default_ttl_seconds: int = 8 * 60 * 60
    web_session_idle_seconds: int = 30 * 60
    web_session_max_seconds: int = 12 * 60 * 60
    max_sessions_per_staff: int = 10
    # File sessions (sftp, scp; docs/sessions.md): the largest file one session may upload
    # or download (bytes, 0 = no limit), the files one session may open, and the content
    # kept with the transcript per file (larger files keep only their SHA-256).
    sftp_max_upload_bytes: int = 10 << 30
    sftp_max_download_bytes: int = 10 << 30
    sftp_max_files_per_session: int = 10000
    sftp_keep_file_bytes: int = 10 << 20
    # What a transfer may have in flight in an agent's tunnel (SSH window), ahead of the
    # keystrokes of other sessions on that agent: smaller shares better, larger is faster.
    sftp_window_bytes: int = 256 << 10
    max_tokens_per_user: int = 50
    # The session outbox (broker.tickets.outbox): the first retry of a note comes after
    # about ticket_retry_first_seconds, each later one after twice as long (with jitter), up
    # to ticket_retry_max_seconds; one try at the ticket system is cut off after
    # ticket_send_timeout_seconds, and a row stays claimed for twice that.
    ticket_retry_first_seconds: float = 2.0
    ticket_retry_max_seconds: float = 300.0
    ticket_send_timeout_seconds: int = 60
    # Ticket-system connectors (broker.connectors): each one's change feed is read every
    # connector_poll_seconds, so the mirror follows the external system within a minute.
    connector_poll_seconds: float = 15.0
    # OpenID Connect sign-in for the console (docs/identity.md); off while oidc_issuer is "".
    # The client secret is read from oidc_client_secret_file; oidc_roles maps values of the
    # oidc_groups_claim to roles ("helpdesk-l2=level2, ..."), oidc_customer_groups to
    # customers; the authenticator code is skipped when the ID token's amr holds one of
    # oidc_mfa_amr. oidc_ca_file: a private CA for the provider's certificate.
    oidc_issuer: str = ""
    oidc_client_id: str = ""
    oidc_client_secret_file: str = ""
    oidc_name: str = "single sign-on"
    oidc_roles: str = ""
    oidc_customer_groups: str = ""
    oidc_groups_claim: str = "groups"
    oidc_mfa_amr: str = "mfa"
    oidc_ca_file: str = ""
    oidc_timeout_seconds: float = 10.0
    # Clusters (docs/cluster.md): this node's name (`serve --node NAME`) and the NATS server
    # the nodes talk through (`nats_url` in the file's [cluster] table). Both empty on a
    # single node, which then needs no NATS at all.
    node: str = ""
    cluster_nats_url: str = ""
    # The cluster's name ([cluster] name): the nodes of one cluster hear only each other,
    # so several clusters can share a NATS server.
    cluster_name: str = "main"
    # How the other nodes reach this one for sessions across nodes ([cluster] peer_url):
    # https://HOST:PORT of this node's own HTTPS listener, not the load balancer's. Empty:
    # https://LISTEN_HOST:HTTPS_PORT, or this machine's name when it listens everywhere.
    cluster_peer_url: str = ""

    @property
    def clustered(self) -> bool:
        return bool(self.cluster_nats_url)

    def second_factor_for(self, role: str) -> str:
        """The SSH second-factor policy for staff of ``role`` (checked at load)."""
        return parse_role_policies(self.ssh_second_factor_roles).get(role, self.ssh_second_factor)

    @property
    def db_url(self) -> str:
        if self.database_url:
            return normalize_database_url(self.database_url)
        return f"sqlite+aiosqlite:///{self.data_dir / 'secondline.db'}"

    @property
    def tls_cert_path(self) -> Path:
        return Path(self.tls_cert) if self.tls_cert else self.data_dir / "keys" / "tls.crt"

    @property
    def agent_packages_path(self) -> Path:
        return (
            Path(self.agent_packages_dir)
            if self.agent_packages_dir
            else self.data_dir / "agent-packages"
        )

    @property
    def tls_key_path(self) -> Path:
        return Path(self.tls_key) if self.tls_key else self.data_dir / "keys" / "tls.key"

    @property
    def keys_dir(self) -> Path:
        return self.data_dir / "keys"

    @property
    def transcripts_dir(self) -> Path:
        return self.data_dir / "transcripts"

    @property
    def attachments_dir(self) -> Path:
        return self.data_dir / "attachments"


_FIELDS: Final = {f.name: f for f in dataclasses.fields(BrokerConfig) if f.name != "data_dir"}
# Variables the CLI reads for itself; they are not broker settings.
_CLIENT_VARS: Final = frozenset({"DATA_DIR", "URL", "TOKEN", "CA_CERT", "TEST_PG", "TEST_DB"})


_TRUE: Final = frozenset({"true", "yes", "on", "1"})
_FALSE: Final = frozenset({"false", "no", "off", "0"})


def _coerce(key: str, value: object, source: str) -> object:
    kind = _FIELDS[key].type
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise ConfigError(f"{source}: {key} must be true or false, not {value!r}")
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ConfigError(f"{source}: {key} must be a whole number")
        try:
            number = int(value)
        except ValueError:
            raise ConfigError(f"{source}: {key} must be a whole number, not {value!r}") from None
        if number < 0 or number > 10**12:
            raise ConfigError(f"{source}: {key} is out of range")
        return number
    if kind == "float":
        # A whole number is a number too (`2`, "2"); NaN and the infinities are not.
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ConfigError(f"{source}: {key} must be a number")
        try:
            real = float(value)
        except ValueError:
            raise ConfigError(f"{source}: {key} must be a number, not {value!r}") from None
        if not math.isfinite(real) or real < 0 or real > 10**12:
            raise ConfigError(f"{source}: {key} is out of range")
        return real
    if not isinstance(value, str):
        raise ConfigError(f"{source}: {key} must be a string")
    return value


def load_config(
    data_dir: Path,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
) -> BrokerConfig:
    """Read DIR/secondline.toml, then SECONDLINE_* variables, then explicit overrides."""
    env = os.environ if env is None else env
    values: dict[str, object] = {}
    path = data_dir / CONFIG_FILE
    if path.exists():
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: cannot be read ({exc}); fix the file and retry") from exc
        for key, value in _flatten_tables(raw).items():
            if key not in _FIELDS:
                known = ", ".join(sorted(_FIELDS))
                raise ConfigError(f"{path}: unknown key {key!r}; known keys are: {known}")
            values[key] = _coerce(key, value, str(path))
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX):
            continue
        key = name.removeprefix(ENV_PREFIX)
        if key in _CLIENT_VARS:
            continue
        if key.lower() not in _FIELDS:
            raise ConfigError(f"environment: unknown variable {name}; unset it or fix its name")
        values[key.lower()] = _coerce(key.lower(), value, "environment")
    for key, value in (overrides or {}).items():
        if value is not None:
            values[key] = _coerce(key, value, "command line")
    config = BrokerConfig(data_dir=data_dir, **values)  # type: ignore[arg-type]
    if not config.public_url.startswith("https://"):
        raise ConfigError("public_url must start with https://")
    # 0 would switch keepalives off: a dead agent would then hold its sessions for good.
    if not 1 <= config.tunnel_keepalive_interval_seconds <= 3600:
        raise ConfigError("tunnel_keepalive_interval_seconds must be from 1 to 3600")
    if not 1 <= config.tunnel_keepalive_count_max <= 100:
        raise ConfigError("tunnel_keepalive_count_max must be from 1 to 100")
    _check_ticket_retry(config)
    _check_ssh_gateway(config)
    _check_cluster(config)
    config.db_url  # noqa: B018 - refuses a database URL no driver of ours can use, now
    # The promise is "within 60 s"; faster than 10 ms only hammers the other side.
    if not 0.01 <= config.connector_poll_seconds <= 60:
        raise ConfigError("connector_poll_seconds must be between 0.01 and 60")
    _check_oidc(config)
    return config


def _check_oidc(config: BrokerConfig) -> None:
    """OpenID Connect: an https issuer (http only on this machine, for a local provider),
    a client, a secret file and at least one group mapped to a role."""
    if not config.oidc_issuer:
        return
    parts = urlsplit(config.oidc_issuer)
    loopback = parts.hostname in ("127.0.0.1", "::1", "localhost")
    if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
        raise ConfigError("oidc_issuer must be an https:// URL (the provider's issuer)")
    if not config.oidc_client_id or not config.oidc_client_secret_file:
        raise ConfigError("oidc_issuer needs oidc_client_id and oidc_client_secret_file too")
    if not config.oidc_roles.strip():
        raise ConfigError('oidc_roles must map a group to a role, e.g. "helpdesk-l2=level2"')
    if not 0.5 <= config.oidc_timeout_seconds <= 60:
        raise ConfigError("oidc_timeout_seconds must be between 0.5 and 60")


NODE_NAME: Final = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")


def valid_node_name(name: str) -> bool:
    """A cluster node's name: one token of a NATS subject and of a metric label."""
    return NODE_NAME.fullmatch(name) is not None


def valid_peer_url(url: str) -> bool:
    """A node's peer address: ``https://HOST:PORT`` and nothing else (no path, no user)."""
    if len(url) > 200 or any(c.isspace() or not c.isprintable() for c in url):
        return False
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    return (
        parts.scheme == "https"
        and bool(parts.hostname)
        and port is not None
        and parts.path in ("", "/")
        and not parts.query
        and not parts.fragment
        and parts.username is None
    )


def peer_url(config: BrokerConfig) -> str:
    """Where the other nodes dial this one (``[cluster] peer_url`` or its default)."""
    if config.cluster_peer_url:
        return config.cluster_peer_url.rstrip("/")
    host = config.listen_host
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 - comparing, not binding
        host = socket.getfqdn()
    if ":" in host:
        host = f"[{host}]"
    return f"https://{host}:{config.https_port}"


def own_urls(config: BrokerConfig) -> tuple[str, ...]:
    """The URLs the console is served at, whose origins its pages come from: the public URL
    and, on a cluster node, the node's own address (staff who reach a node directly, past
    the load balancer, sign in and open terminals there as they would through it)."""
    if config.clustered:
        return (config.public_url, peer_url(config))
    return (config.public_url,)


# Tables of the config file whose keys are settings named TABLE_KEY ([cluster] nats_url is
# cluster_nats_url, SECONDLINE_CLUSTER_NATS_URL in the environment).
_TABLES: Final = ("cluster",)


def _flatten_tables(raw: Mapping[str, object]) -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in raw.items():
        if key in _TABLES and isinstance(value, Mapping):
            for inner, item in value.items():
                flat[f"{key}_{inner}"] = item
        else:
            flat[key] = value
    return flat


def _check_cluster(config: BrokerConfig) -> None:
    """A cluster needs NATS and PostgreSQL (every node must see one state); `serve` also
    needs the node's name (the CLI reads the same file and has none)."""
    if config.node and not valid_node_name(config.node):
        raise ConfigError(
            f"node name {config.node!r}: use 1 to 32 lower-case letters, digits and dashes, "
            "starting with a letter or digit"
        )
    if not valid_node_name(config.cluster_name):
        raise ConfigError(
            f"cluster name {config.cluster_name!r}: use 1 to 32 lower-case letters, digits "
            "and dashes"
        )
    if not config.clustered:
        if config.node:
            raise ConfigError(
                f"--node {config.node} joins a cluster, but no NATS server is set: add "
                '[cluster] nats_url = "nats://HOST:4222" to secondline.toml (docs/cluster.md)'
            )
        return
    if config.cluster_peer_url and not valid_peer_url(config.cluster_peer_url):
        raise ConfigError(
            f"cluster.peer_url {config.cluster_peer_url!r}: use https://HOST:PORT, the "
            "address of this node's own HTTPS port as the other nodes reach it"
        )
    if not config.cluster_nats_url.startswith(("nats://", "tls://")):
        raise ConfigError("cluster.nats_url must start with nats:// or tls://")
    if not config.db_url.startswith("postgresql"):
        raise ConfigError(
            "a cluster needs PostgreSQL: every node must see the same users, agents, sessions "
            "and audit chain, and SQLite is one file on one machine; set database_url to a "
            "PostgreSQL URL, or remove [cluster] to run a single node"
        )


SECOND_FACTOR_POLICIES: Final = ("every-session", "per-shift", "off")
_POLICY_ROLES: Final = ("level1", "level2", "level3", "admin")


def parse_role_policies(text: str) -> dict[str, str]:
    """``"admin=every-session, level1=off"`` as {role: policy}; ConfigError names the bad part."""
    policies: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        role, sep, policy = (x.strip() for x in part.partition("="))
        if not sep or role not in _POLICY_ROLES or policy not in SECOND_FACTOR_POLICIES:
            raise ConfigError(
                f"ssh_second_factor_roles: {part!r} is not ROLE=POLICY; roles are "
                f"{', '.join(_POLICY_ROLES)}, policies {', '.join(SECOND_FACTOR_POLICIES)}"
            )
        policies[role] = policy
    return policies


def _check_ssh_gateway(config: BrokerConfig) -> None:
    """The SSH gateway's limits: 0 would switch a limit off (or refuse everyone), and a huge
    one is no limit at all; one source may never hold more than the overall limit."""
    if not 1 <= config.ssh_login_timeout_seconds <= 600:
        raise ConfigError("ssh_login_timeout_seconds must be from 1 to 600")
    if not 1 <= config.ssh_max_preauth <= 100_000:
        raise ConfigError("ssh_max_preauth must be from 1 to 100000")
    if not 1 <= config.ssh_max_preauth_per_source <= config.ssh_max_preauth:
        raise ConfigError(
            "ssh_max_preauth_per_source must be from 1 to ssh_max_preauth "
            f"({config.ssh_max_preauth})"
        )
    if not 1 <= config.ssh_max_channels <= 1000:
        raise ConfigError("ssh_max_channels must be from 1 to 1000")
    if config.ssh_second_factor not in SECOND_FACTOR_POLICIES:
        raise ConfigError(
            f"ssh_second_factor must be one of {', '.join(SECOND_FACTOR_POLICIES)}, "
            f"not {config.ssh_second_factor!r}"
        )
    parse_role_policies(config.ssh_second_factor_roles)
    if not 1 <= config.ssh_shift_hours <= 24:
        raise ConfigError("ssh_shift_hours must be from 1 to 24")


def _check_ticket_retry(config: BrokerConfig) -> None:
    """The outbox's schedule: retries no faster than every 10 ms (faster only hammers a
    ticket system that is down), no rarer than daily (a longer wait hides an outage)."""
    first, cap = config.ticket_retry_first_seconds, config.ticket_retry_max_seconds
    if not 0.01 <= first <= 86400:
        raise ConfigError("ticket_retry_first_seconds must be between 0.01 and 86400")
    if not first <= cap <= 86400:
        raise ConfigError(
            "ticket_retry_max_seconds must be at least ticket_retry_first_seconds "
            f"({first:g}) and at most 86400"
        )
    if not 1 <= config.ticket_send_timeout_seconds <= 3600:
        raise ConfigError("ticket_send_timeout_seconds must be between 1 and 3600")


def write_config(
    data_dir: Path, public_url: str, extra: Mapping[str, object] | None = None
) -> Path:
    """Write the initial config file with the settings init chose."""
    lines = ["# Secondline broker configuration; see docs/configuration.md", ""]
    # JSON string literals are valid TOML basic strings.
    lines.append(f"public_url = {json.dumps(public_url)}")
    for key, value in (extra or {}).items():
        if key not in _FIELDS:
            raise ConfigError(f"unknown key {key!r}")
        lines.append(f"{key} = {json.dumps(value)}")
    path = data_dir / CONFIG_FILE
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    path.chmod(0o600)
    return path
