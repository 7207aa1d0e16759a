"""`secondline init`: config, keys, database and the first admin; there is no HTTP setup
path at all, so nobody can reach set-up from the network after install."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import shutil
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from broker import staff_store
from broker.audit.log import AuditLog
from broker.config import CONFIG_FILE, BrokerConfig, load_config, write_config
from broker.db.engine import create_engine, migrate, session_factory
from broker.db.models_staff import User
from broker.db.urls import normalize_database_url
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


def _refuse_initialised(data_dir: Path) -> None:
    if (data_dir / CONFIG_FILE).exists() or (data_dir / "keys").exists():
        raise SetupError(
            f"{data_dir} is initialised already; nothing was changed. "
            "Use `secondline serve --data-dir` to run it, or choose an empty directory"
        )
    if data_dir.exists() and not data_dir.is_dir():
        raise SetupError(f"{data_dir} is a file, not a directory; choose a directory")


def _check_tls_pair(cert: Path, key: Path) -> None:
    """Refuse a certificate and key that `serve` could not use, before anything is made."""
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except OSError as exc:  # ssl.SSLError is an OSError too
        why = getattr(exc, "reason", None) or exc.strerror or str(exc)
        raise SetupError(
            f"cannot use --tls-cert {cert} with --tls-key {key} ({why}); give a PEM "
            "certificate and its private key, or neither for a self-signed one"
        ) from None


def _missing_root(path: Path) -> Path | None:
    """The outermost of ``path`` and its parents that does not exist yet (None: all do)."""
    missing = None
    for candidate in [path, *path.parents]:
        if candidate.exists():
            break
        missing = candidate
    return missing


def _staging_dir(data_dir: Path) -> Path:
    """An empty 0700 directory beside ``data_dir``: init builds everything in it and moves
    it into place at the end, so a failure leaves nothing half-made behind."""
    try:
        data_dir.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{data_dir.name}.init-", dir=data_dir.parent))
    except OSError as exc:
        raise SetupError(
            f"cannot write to {data_dir.parent} ({exc.strerror}); choose a directory you can "
            "write to"
        ) from None


def _move_into_place(staging: Path, data_dir: Path) -> None:
    if not data_dir.exists():
        staging.rename(data_dir)
        return
    entries = sorted(staging.iterdir())
    clash = [e.name for e in entries if (data_dir / e.name).exists()]
    if clash:
        raise SetupError(
            f"{data_dir} holds {', '.join(clash)} already; nothing was changed. Remove "
            "them (a broken earlier init) or choose an empty directory"
        )
    try:
        for entry in entries:
            entry.rename(data_dir / entry.name)
        staging.rmdir()
    except OSError as exc:
        raise SetupError(f"cannot write to {data_dir} ({exc.strerror})") from None


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
    """Initialise ``data_dir``, all or nothing: every file is made in a staging directory
    beside it and moved into place last, so a failure (a database that cannot be reached,
    a driver that is missing, a full disk) leaves no half-made data dir behind."""
    now = now or dt.datetime.now(dt.UTC)
    _check_url(public_url)
    _refuse_initialised(data_dir)
    extra = dict(settings or {})
    if (tls_cert is None) != (tls_key is None):
        raise SetupError("give both --tls-cert and --tls-key, or neither for a self-signed one")
    if tls_cert is not None and tls_key is not None:
        _check_tls_pair(tls_cert, tls_key)
        extra["tls_cert"], extra["tls_key"] = str(tls_cert.resolve()), str(tls_key.resolve())
    if isinstance(extra.get("database_url"), str):
        normalize_database_url(str(extra["database_url"]))  # refused before anything is made
    created = _missing_root(data_dir)
    staging = _staging_dir(data_dir)
    try:
        result = _build(staging, public_url, extra, tls_cert is None, now)
        _move_into_place(staging, data_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created is not None and created != data_dir:
            shutil.rmtree(created, ignore_errors=True)  # the parents made for the staging dir
        raise
    os.chmod(data_dir, 0o700)
    return InitResult(load_config(data_dir), result)


def _build(
    staging: Path, public_url: str, extra: dict[str, object], self_signed: bool, now: dt.datetime
) -> str:
    """Everything init makes, in ``staging``; returns the first admin's token."""
    write_config(staging, public_url, extra)
    config = load_config(staging)
    create_keys(config.keys_dir, public_url, now, with_tls=self_signed)
    for sub in (config.transcripts_dir, config.attachments_dir):
        sub.mkdir(mode=0o700, exist_ok=True)
    try:
        migrate(config.db_url, config.database_schema or None)
        token = asyncio.run(_first_admin(config, now))
    except (OSError, SQLAlchemyError, ImportError) as exc:
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise SetupError(
            f"cannot use the database ({detail}); check that it runs and that database_url "
            "is right, then run init again (nothing was kept)"
        ) from None
    if not config.database_url:
        # SQLite makes its file with the process umask (often 0644); it holds password
        # hashes and tokens' digests, so it is the owner's only, like everything here.
        for db_file in staging.glob("secondline.db*"):
            db_file.chmod(0o600)
    write_private(staging / ADMIN_TOKEN_FILE, (token + "\n").encode())
    return token
