"""The agent's state dir: layout, permissions, atomic writes, enrollment and local config.

Layout (docs/protocol.md)::

    DIR/              0700
      agent_key       0600  OpenSSH Ed25519 private key (the SSH host key toward the broker)
      broker.pem      0600  the broker's TLS certificate, pinned at enrollment
      state.json      0600  the enrollment (written last: it marks the dir as enrolled)
      agent.toml      0600  optional local config (login_user, consent_timeout_seconds, shell,
                            keepalive_interval_seconds, keepalive_count_max, proxy_url)
      sessions.jsonl  0600  local session log
      status.json     0600  written by ``run``
      control.sock    0600  control socket of the running agent

Parsing (:meth:`EnrolledState.parse`, :func:`parse_config`) is pure; the functions that
read and write files are the thin layer around it.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TypeGuard

from agent.enrollment import CONSENT_POLICIES, ConsentPolicy, EnrollmentAnswer, check_url
from agent.errors import ConfigError, MessageError, NotEnrolledError, StateError
from agent.protocol import (
    AGENT_ID_RE,
    AGENT_NAME_RE,
    CUSTOMER_RE,
    DEFAULT_CONSENT_TIMEOUT_SECONDS,
    KEEPALIVE_COUNT_MAX,
    KEEPALIVE_INTERVAL,
    LOCAL_USER_RE,
    Ed25519PublicKey,
    iso_utc,
    load_json_object,
    parse_iso_utc,
    require_match,
)
from agent.proxy import parse_proxy_url
from agent.release import ROLLBACK_AFTER_SECONDS

DIR_MODE: Final = 0o700
FILE_MODE: Final = 0o600
STATE_JSON_MAX: Final = 64 * 1024
CONFIG_MAX: Final = 64 * 1024
CONSENT_TIMEOUT_MAX: Final = 3600.0
#: Below a second a keepalive would drop healthy tunnels on a slow link; above an hour a
#: dead one would hold its sessions (and the broker's view of the agent) for too long.
KEEPALIVE_INTERVAL_MIN: Final = 1.0
KEEPALIVE_INTERVAL_MAX: Final = 3600.0
#: Bounds of the update settings: checks at most every minute; a rollback wait long enough
#: for a slow start, short enough that a broken update does not leave the machine for a day.
UPDATE_CHECK_INTERVAL: Final = 3600.0
UPDATE_CHECK_RANGE: Final = (60.0, 86400.0)
ROLLBACK_AFTER_RANGE: Final = (1.0, 3600.0)
KEEPALIVE_COUNT_MAX_LIMIT: Final = 100


@dataclass(frozen=True, slots=True)
class StatePaths:
    """Where each file of a state dir lives."""

    root: Path

    @property
    def agent_key(self) -> Path:
        return self.root / "agent_key"

    @property
    def broker_pem(self) -> Path:
        return self.root / "broker.pem"

    @property
    def state_json(self) -> Path:
        return self.root / "state.json"

    @property
    def config(self) -> Path:
        return self.root / "agent.toml"

    @property
    def sessions_log(self) -> Path:
        return self.root / "sessions.jsonl"

    @property
    def status_json(self) -> Path:
        return self.root / "status.json"

    @property
    def control_sock(self) -> Path:
        return self.root / "control.sock"

    @property
    def update_json(self) -> Path:
        return self.root / "update.json"

    @property
    def updates(self) -> Path:
        """Verified packages: the one being installed and the running one's, for a rollback."""
        return self.root / "updates"


def default_state_dir(euid: int, environ: dict[str, str] | os._Environ[str]) -> Path:
    """``/var/lib/secondline-agent`` for root, else the XDG state dir of the user."""
    if euid == 0:
        return Path("/var/lib/secondline-agent")
    xdg = environ.get("XDG_STATE_HOME", "")
    base = Path(xdg) if xdg.startswith("/") else Path(environ.get("HOME", "~")) / ".local/state"
    return base.expanduser() / "secondline-agent"


def ensure_state_dir(paths: StatePaths) -> None:
    """Create the state dir (0700) if needed and refuse one others can reach."""
    try:
        paths.root.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        info = paths.root.stat()
    except OSError as exc:
        raise StateError(
            f"cannot create the state dir {paths.root} ({exc.strerror}); "
            "run as a user who may, or pass --state-dir"
        ) from None
    check_private(paths.root, info)


def check_private(path: Path, info: os.stat_result | None = None) -> None:
    """Refuse a file or dir that is not ours or that group or others can access."""
    if info is None:
        try:
            info = path.stat()
        except OSError as exc:
            raise StateError(f"cannot read {path} ({exc.strerror})") from None
    if info.st_uid != os.geteuid():
        raise StateError(f"{path} belongs to another user; run the agent as its owner")
    if stat.S_IMODE(info.st_mode) & 0o077:
        wanted = "700" if stat.S_ISDIR(info.st_mode) else "600"
        raise StateError(
            f"{path} can be accessed by other users (mode {stat.S_IMODE(info.st_mode):o}); "
            f"run: chmod {wanted} {path}"
        )


def atomic_write(path: Path, data: bytes, mode: int = FILE_MODE) -> None:
    """Replace ``path`` with ``data`` so that readers see the old or the new file, whole."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as tmp:
            tmp.write(data)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_private(path: Path, max_bytes: int) -> bytes:
    """Read a file of the state dir after checking it is private and not too large."""
    try:
        with path.open("rb") as handle:
            check_private(path, os.fstat(handle.fileno()))
            data = handle.read(max_bytes + 1)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise StateError(f"cannot read {path} ({exc.strerror})") from None
    if len(data) > max_bytes:
        raise StateError(f"{path} is larger than {max_bytes} bytes; it is not an agent file")
    return data


@dataclass(frozen=True, slots=True, kw_only=True)
class EnrolledState:
    """``state.json``: what enrollment established."""

    broker_url: str
    tunnel_url: str
    agent_id: str
    name: str
    customer: str
    consent: ConsentPolicy
    broker_ssh_key: Ed25519PublicKey
    enrolled_at: str
    #: The broker's release key (agent.release), pinned at enrollment; None: no self-update.
    release_key: Ed25519PublicKey | None = None

    @classmethod
    def from_answer(cls, broker_url: str, answer: EnrollmentAnswer, now: float) -> EnrolledState:
        """The state recorded after a successful enrollment."""
        return cls(
            broker_url=broker_url,
            tunnel_url=answer.tunnel_url,
            agent_id=answer.agent_id,
            name=answer.name,
            customer=answer.customer,
            consent=answer.consent,
            broker_ssh_key=answer.broker_ssh_key,
            enrolled_at=iso_utc(now),
            release_key=answer.release_key,
        )

    @classmethod
    def parse(cls, data: bytes) -> EnrolledState:
        """Parse ``state.json``."""
        obj = load_json_object(data, "state.json", max_bytes=STATE_JSON_MAX)
        consent = obj.get("consent")
        if consent not in CONSENT_POLICIES:
            raise MessageError("state.json: consent is neither 'attended' nor 'unattended'")
        enrolled_at = obj.get("enrolled_at")
        if not isinstance(enrolled_at, str):
            raise MessageError("state.json: enrolled_at is missing")
        parse_iso_utc(enrolled_at, "state.json enrolled_at")
        return cls(
            broker_url=check_url(obj.get("broker_url"), "broker_url", "https"),
            tunnel_url=check_url(obj.get("tunnel_url"), "tunnel_url", "wss"),
            agent_id=require_match(AGENT_ID_RE, obj.get("agent_id"), "agent_id"),
            name=require_match(AGENT_NAME_RE, obj.get("name"), "name"),
            customer=require_match(CUSTOMER_RE, obj.get("customer"), "customer"),
            consent=consent,
            broker_ssh_key=Ed25519PublicKey.parse(obj.get("broker_ssh_key"), "broker_ssh_key"),
            enrolled_at=enrolled_at,
            release_key=(
                Ed25519PublicKey.parse(obj["release_key"], "release_key")
                if obj.get("release_key") is not None
                else None
            ),
        )

    def serialize(self) -> bytes:
        """Pretty JSON, as an admin would like to read it."""
        body = {
            "broker_url": self.broker_url,
            "tunnel_url": self.tunnel_url,
            "agent_id": self.agent_id,
            "name": self.name,
            "customer": self.customer,
            "consent": self.consent,
            "broker_ssh_key": self.broker_ssh_key.serialize(),
            "enrolled_at": self.enrolled_at,
        }
        if self.release_key is not None:
            body["release_key"] = self.release_key.serialize()
        return json.dumps(body, indent=2).encode() + b"\n"


def load_enrolled_state(paths: StatePaths) -> EnrolledState:
    """Read ``state.json``; :class:`NotEnrolledError` when there is none."""
    try:
        data = read_private(paths.state_json, STATE_JSON_MAX)
    except FileNotFoundError:
        raise NotEnrolledError(
            f"this agent is not enrolled (no {paths.state_json}); "
            "run: secondline-agent enroll BROKER_URL TOKEN"
        ) from None
    try:
        return EnrolledState.parse(data)
    except MessageError as exc:
        raise StateError(f"{paths.state_json} is damaged ({exc}); enroll the agent again") from None


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalConfig:
    """``agent.toml``: what the machine's admin may set locally."""

    #: The account shells run as; None = the account the agent runs as.
    login_user: str | None = None
    consent_timeout_seconds: float = DEFAULT_CONSENT_TIMEOUT_SECONDS
    #: A shell to use instead of the login user's own (absolute path).
    shell: str | None = None
    #: Seconds without a byte from the broker before the agent sends an SSH keepalive; also
    #: the WebSocket ping interval.
    keepalive_interval_seconds: float = KEEPALIVE_INTERVAL
    #: Unanswered keepalives after which the tunnel counts as dead: it is closed and dialled
    #: again, so a dead tunnel is noticed within interval x (count + 1) seconds.
    keepalive_count_max: int = KEEPALIVE_COUNT_MAX
    #: The HTTP proxy to the broker (``http://user:password@host:port``); None: the
    #: environment's HTTPS_PROXY / NO_PROXY.
    proxy_url: str | None = None
    #: The program that installs a verified package (its path is the one argument); None:
    #: ``dpkg --install`` when the agent runs as root, else no self-update.
    update_command: str | None = None
    #: How often a connected agent asks the broker for a newer release (also at each connect).
    update_check_interval_seconds: float = UPDATE_CHECK_INTERVAL
    #: A new version not connected this long after its install is rolled back.
    rollback_after_seconds: float = ROLLBACK_AFTER_SECONDS
    #: Consent window and session indicator on the user's desktop (agent.desktop).
    desktop_windows: bool = True

    @property
    def ping_timeout_seconds(self) -> float:
        """How long a WebSocket ping may wait for its pong (as long as the SSH keepalives
        may go unanswered)."""
        return self.keepalive_interval_seconds * self.keepalive_count_max


_CONFIG_KEYS: Final = (
    "login_user",
    "consent_timeout_seconds",
    "shell",
    "keepalive_interval_seconds",
    "keepalive_count_max",
    "proxy_url",
    "update_command",
    "update_check_interval_seconds",
    "rollback_after_seconds",
    "desktop_windows",
)


def _is_number(value: object) -> TypeGuard[int | float]:
    """TOML integers and floats; not booleans (which Python counts as integers)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def parse_config(text: str) -> LocalConfig:
    """Parse ``agent.toml``; unknown keys and bad values are errors naming the key."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"agent.toml is not valid TOML ({exc}); fix or remove it") from None
    for key in raw:
        if key not in _CONFIG_KEYS:
            raise ConfigError(
                f"agent.toml has the unknown key {key!r}; the known keys are "
                f"{', '.join(_CONFIG_KEYS[:-1])} and {_CONFIG_KEYS[-1]}"
            )
    login_user = raw.get("login_user")
    if login_user is not None and (
        not isinstance(login_user, str) or LOCAL_USER_RE.fullmatch(login_user) is None
    ):
        raise ConfigError("agent.toml: login_user must be a user name such as 'support'")
    timeout = raw.get("consent_timeout_seconds", DEFAULT_CONSENT_TIMEOUT_SECONDS)
    if not _is_number(timeout) or not 0 < timeout <= CONSENT_TIMEOUT_MAX:
        raise ConfigError(
            "agent.toml: consent_timeout_seconds must be a number of seconds "
            f"above 0 and at most {CONSENT_TIMEOUT_MAX:.0f}"
        )
    interval = raw.get("keepalive_interval_seconds", KEEPALIVE_INTERVAL)
    if not _is_number(interval) or not (
        KEEPALIVE_INTERVAL_MIN <= interval <= KEEPALIVE_INTERVAL_MAX
    ):
        raise ConfigError(
            "agent.toml: keepalive_interval_seconds must be a number of seconds from "
            f"{KEEPALIVE_INTERVAL_MIN:.0f} to {KEEPALIVE_INTERVAL_MAX:.0f}"
        )
    count = raw.get("keepalive_count_max", KEEPALIVE_COUNT_MAX)
    if (
        isinstance(count, bool)
        or not isinstance(count, int)
        or not 1 <= count <= KEEPALIVE_COUNT_MAX_LIMIT
    ):
        raise ConfigError(
            "agent.toml: keepalive_count_max must be a whole number from 1 to "
            f"{KEEPALIVE_COUNT_MAX_LIMIT}"
        )
    shell = raw.get("shell")
    if shell is not None and (
        not isinstance(shell, str) or not shell.startswith("/") or "\0" in shell
    ):
        raise ConfigError("agent.toml: shell must be an absolute path such as '/bin/bash'")
    proxy_url = raw.get("proxy_url")
    if proxy_url is not None:
        if not isinstance(proxy_url, str):
            raise ConfigError("agent.toml: proxy_url must be a URL such as 'http://proxy:3128'")
        parse_proxy_url(proxy_url, "agent.toml: proxy_url")
    update_command = raw.get("update_command")
    if update_command is not None and (
        not isinstance(update_command, str)
        or not update_command.startswith("/")
        or "\0" in update_command
    ):
        raise ConfigError(
            "agent.toml: update_command must be the absolute path of a program, such as "
            "'/usr/local/sbin/install-agent-update'"
        )
    check_every = _seconds_in(
        raw, "update_check_interval_seconds", UPDATE_CHECK_INTERVAL, UPDATE_CHECK_RANGE
    )
    rollback_after = _seconds_in(
        raw, "rollback_after_seconds", ROLLBACK_AFTER_SECONDS, ROLLBACK_AFTER_RANGE
    )
    desktop_windows = raw.get("desktop_windows", True)
    if not isinstance(desktop_windows, bool):
        raise ConfigError("agent.toml: desktop_windows must be true or false")
    return LocalConfig(
        desktop_windows=desktop_windows,
        update_command=update_command,
        update_check_interval_seconds=check_every,
        rollback_after_seconds=rollback_after,
        proxy_url=proxy_url,
        login_user=login_user,
        consent_timeout_seconds=float(timeout),
        shell=shell,
        keepalive_interval_seconds=float(interval),
        keepalive_count_max=count,
    )


def _seconds_in(
    raw: dict[str, object], key: str, default: float, bounds: tuple[float, float]
) -> float:
    value = raw.get(key, default)
    low, high = bounds
    if not _is_number(value) or not low <= value <= high:
        raise ConfigError(
            f"agent.toml: {key} must be a number of seconds from {low:.0f} to {high:.0f}"
        )
    return float(value)


def load_config(paths: StatePaths) -> LocalConfig:
    """Read ``agent.toml`` if present; defaults otherwise."""
    try:
        data = read_private(paths.config, CONFIG_MAX)
    except FileNotFoundError:
        return LocalConfig()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError("agent.toml is not UTF-8 text; fix or remove it") from None
    return parse_config(text)
