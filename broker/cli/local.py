"""Commands that run on the broker host without the API: init and serve."""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

from broker.cli.client import CliError
from broker.cli.runtime import Runtime
from broker.config import load_config
from broker.errors import BrokerError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("init", help="create config, database, keys and the first admin")
    _data_dir_option(p)
    p.add_argument("--public-url", default=None, help="how agents and browsers reach the broker")
    p.add_argument("--https-port", type=int, default=None)
    p.add_argument("--ssh-port", type=int, default=None)
    p.add_argument("--listen-host", default=None, help="address to listen on (default 0.0.0.0)")
    p.add_argument("--database-url", default=None, help="PostgreSQL URL; default SQLite in DIR")
    p.add_argument(
        "--tls-cert", default=None, help="a real certificate (PEM) instead of self-signed"
    )
    p.add_argument("--tls-key", default=None)
    p.set_defaults(handler=run_init)

    p = sub.add_parser(
        "serve", help="run the broker (HTTPS console/API/agent tunnel + SSH gateway)"
    )
    _data_dir_option(p)
    p.add_argument("--https-port", type=int, default=None)
    p.add_argument("--ssh-port", type=int, default=None)
    p.set_defaults(handler=run_serve)


def _data_dir_option(parser: argparse.ArgumentParser) -> None:
    # PRODUCT.md writes `secondline init --data-dir DIR`; the global form works as well.
    parser.add_argument("--data-dir", dest="command_data_dir", metavar="DIR", default=None)


def _data_dir(rt: Runtime) -> Path:
    value = (
        getattr(rt.args, "command_data_dir", None)
        or rt.args.data_dir
        or rt.env.get("SECONDLINE_DATA_DIR")
    )
    if not value:
        raise CliError("give the data dir: secondline --data-dir DIR ...")
    return Path(value)


def run_init(rt: Runtime) -> int:
    a = rt.args
    data_dir = _data_dir(rt)
    settings: dict[str, object] = {}
    for key in ("https_port", "ssh_port", "listen_host", "database_url"):
        if getattr(a, key) is not None:
            settings[key] = getattr(a, key)
    port = a.https_port or 8443
    public_url = a.public_url or f"https://localhost:{port}"
    from broker.bootstrap import ADMIN_TOKEN_FILE, init_data_dir

    try:
        result = init_data_dir(
            data_dir,
            public_url,
            settings=settings,
            tls_cert=Path(a.tls_cert) if a.tls_cert else None,
            tls_key=Path(a.tls_key) if a.tls_key else None,
        )
    except BrokerError as exc:
        raise CliError(exc.message) from None
    print(f"Initialised {data_dir} for {result.config.public_url}.")
    print(
        "Admin API token (shown once; also kept in "
        f"{data_dir / ADMIN_TOKEN_FILE}, readable by you only):"
    )
    print(result.admin_token)
    return 0


def run_serve(rt: Runtime) -> int:
    data_dir = _data_dir(rt)
    overrides = {"https_port": rt.args.https_port, "ssh_port": rt.args.ssh_port}
    try:
        config = load_config(data_dir, rt.env, overrides)
    except BrokerError as exc:
        raise CliError(exc.message) from None
    if not (data_dir / "keys").exists():
        raise CliError(
            f"{data_dir} is not initialised; run `secondline init --data-dir {data_dir}`"
        )
    logging.getLogger().setLevel(config.log_level.upper())
    from broker.server import serve

    asyncio.run(serve(config))
    return 0
