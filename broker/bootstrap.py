"""`secondline init`: config, keys, database and the first admin; there is no HTTP setup
path at all, so nobody can reach set-up from the network after install."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy import select

from broker import staff_store
from broker.audit.log import AuditLog
from broker.config import CONFIG_FILE, BrokerConfig, load_config, write_config
from broker.db.engine import create_engine, migrate, session_factory
from broker.db.models_staff import User
from broker.errors import SetupError
from broker.keys import AUDIT_KEY, create_keys, load_ed25519, write_private

ADMIN_TOKEN_FILE = "admin.token"  # noqa: S105 - a file name, not a secret
ADMIN_TOKEN_DAYS = 365


@dataclass(frozen=True)
class InitResult:
    config: BrokerConfig
    admin_token: str


def _check_url(public_url: str) -> None:
    parts = urlsplit(public_url)
    if parts.scheme != "https" or not parts.hostname or parts.path not in ("", "/"):
        raise SetupError(
            f"--public-url {public_url!r} must look like https://host[:port] with no path"
        )
    if any(c in public_url for c in "\"'\\ \n\r\t<>"):
        raise SetupError("--public-url contains characters a URL cannot have")


def _prepare_dir(data_dir: Path) -> None:
    if (data_dir / CONFIG_FILE).exists() or (data_dir / "keys").exists():
        raise SetupError(
            f"{data_dir} is initialised already; nothing was changed. "
            "Use `secondline serve --data-dir` to run it, or choose an empty directory"
        )
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        probe = data_dir / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise SetupError(
            f"cannot write to {data_dir} ({exc.strerror}); choose a directory you can write to"
        ) from None


async def _first_admin(config: BrokerConfig, now: dt.datetime) -> str:
    engine = create_engine(config.db_url, schema=config.database_schema or None)
    sessions = session_factory(engine)
    try:
        async with sessions() as db, db.begin():
            if (await db.execute(select(User.id))).first() is not None:
                raise SetupError("the database holds staff accounts already; nothing was changed")
            admin = await staff_store.add_user(
                db,
                name="admin",
                role="admin",
                display_name="Administrator",
                password=None,
                ssh_keys=[],
                customers=[],
                now=now,
            )
            token = await staff_store.mint_token(
                db,
                admin,
                scopes=None,
                ttl_seconds=ADMIN_TOKEN_DAYS * 86400,
                label="init",
                now=now,
                max_tokens=1000,
            )
        audit = AuditLog(
            sessions, load_ed25519(config.keys_dir / AUDIT_KEY), config.data_dir / "audit.head"
        )
        await audit.record(
            actor="secondline-init",
            action="init",
            target="admin",
            source="local",
            details={"public_url": config.public_url},
        )
        return token.plaintext
    finally:
        await engine.dispose()


def init_data_dir(
    data_dir: Path,
    public_url: str,
    *,
    settings: dict[str, object] | None = None,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    now: dt.datetime | None = None,
) -> InitResult:
    now = now or dt.datetime.now(dt.UTC)
    _check_url(public_url)
    _prepare_dir(data_dir)
    extra = dict(settings or {})
    if (tls_cert is None) != (tls_key is None):
        raise SetupError("give both --tls-cert and --tls-key, or neither for a self-signed one")
    if tls_cert is not None and tls_key is not None:
        extra["tls_cert"], extra["tls_key"] = str(tls_cert.resolve()), str(tls_key.resolve())
    write_config(data_dir, public_url, extra)
    config = load_config(data_dir)
    create_keys(config.keys_dir, public_url, now, with_tls=tls_cert is None)
    for sub in (config.transcripts_dir, config.attachments_dir):
        sub.mkdir(mode=0o700, exist_ok=True)
    try:
        migrate(config.db_url, config.database_schema or None)
        token = asyncio.run(_first_admin(config, now))
    except OSError as exc:
        raise SetupError(f"cannot reach the database ({exc}); check database_url") from None
    write_private(data_dir / ADMIN_TOKEN_FILE, (token + "\n").encode())
    os.chmod(data_dir, 0o700)
    return InitResult(config, token)
