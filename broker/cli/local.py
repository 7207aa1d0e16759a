"""Commands that run on the broker host without the API: init and serve."""

from __future__ import annotations

import argparse
import asyncio
import errno
import gc
import logging
import os
import ssl
from pathlib import Path
from urllib.parse import urlsplit

from broker.allocator import use_system_malloc
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
    p.add_argument(
        "--node",
        default=None,
        metavar="NAME",
        help="join the cluster of [cluster] in secondline.toml as node NAME (docs/cluster.md)",
    )
    p.set_defaults(handler=run_serve)

    p = sub.add_parser(
        "known-hosts",
        help="print the SSH gateway's known_hosts line, for staff's ~/.ssh/known_hosts",
    )
    _data_dir_option(p)
    p.set_defaults(handler=run_known_hosts)


def register_agent(agent: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``secondline agent publish FILE``: on the broker host, with its data dir."""
    p = agent.add_parser(
        "publish",
        help="sign an agent package with the broker's release key and offer it to agents",
    )
    _data_dir_option(p)
    p.add_argument("file", help="secondline-agent_VERSION_ARCH.deb (from make agent-deb)")
    p.set_defaults(handler=run_publish)


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
    # Everything in the data dir is the owner's only; SQLite makes its files by the umask.
    os.umask(0o077)
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
    # First of all: this may start the process again (see broker.allocator).
    use_system_malloc()
    data_dir = _data_dir(rt)
    overrides = {
        "https_port": rt.args.https_port,
        "ssh_port": rt.args.ssh_port,
        "node": rt.args.node,
    }
    try:
        config = load_config(data_dir, rt.env, overrides)
    except BrokerError as exc:
        raise CliError(exc.message) from None
    if config.clustered and not config.node:
        raise CliError(
            "[cluster] nats_url is set, so this broker is a cluster node and needs a name: "
            "secondline serve --node NAME (unique in the cluster)"
        )
    if not (data_dir / "keys").exists():
        raise CliError(
            f"{data_dir} is not initialised; run `secondline init --data-dir {data_dir}`"
        )
    logging.getLogger().setLevel(config.log_level.upper())
    logging.getLogger("alembic").setLevel(max(logging.WARNING, logging.getLogger().level))
    os.umask(0o077)  # SQLite's -wal and -shm files, transcripts: the owner's only
    from broker.server import serve

    try:
        asyncio.run(serve(config))
    except OSError as exc:
        if exc.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES):
            raise CliError(
                f"cannot listen on {config.listen_host} port {config.https_port} (HTTPS) or "
                f"{config.ssh_port} (SSH): {exc.strerror}; stop what uses the port or choose "
                "others (https_port, ssh_port in secondline.toml, or --https-port/--ssh-port)"
            ) from None
        raise
    except ssl.SSLError as exc:
        raise CliError(
            f"the TLS certificate or key cannot be used ({exc.reason or exc}); check tls_cert "
            "and tls_key in secondline.toml"
        ) from None
    finally:
        # The broker has stopped and closed what it holds; what is left is the
        # interpreter's exit, whose collections walk every object the broker made (about
        # 170,000, more with agents and sessions). That took 1 to 5 s of CPU on a loaded
        # 2-core machine, after "secondline: stopped", long enough for a service manager
        # or a bench to kill a node it had asked to stop. Frozen objects are skipped.
        gc.freeze()
    return 0


def run_known_hosts(rt: Runtime) -> int:
    """The line staff add to ~/.ssh/known_hosts, so that their OpenSSH client checks the
    gateway's host key from the first connection on (no trust-on-first-use prompt)."""
    data_dir = _data_dir(rt)
    try:
        config = load_config(data_dir, rt.env)
    except BrokerError as exc:
        raise CliError(exc.message) from None
    pub = config.keys_dir / "ssh_host_ed25519.pub"
    try:
        fields = pub.read_text(encoding="ascii").split()
    except (OSError, UnicodeDecodeError):
        raise CliError(
            f"{data_dir} has no SSH host key; run this on the broker host, with the data dir "
            "of an initialised broker"
        ) from None
    host = urlsplit(config.public_url).hostname or "localhost"
    name = host if config.ssh_port == 22 else f"[{host}]:{config.ssh_port}"
    print(f"{name} {' '.join(fields[:2])}")
    return 0


def run_publish(rt: Runtime) -> int:
    """Copy the package into the packages dir with its manifest and signature."""
    data_dir = _data_dir(rt)
    try:
        config = load_config(data_dir, rt.env)
    except BrokerError as exc:
        raise CliError(exc.message) from None
    if not config.keys_dir.is_dir():
        raise CliError(
            f"{data_dir} is not initialised; run this on the broker host with its data dir"
        )
    from broker.agents.releases import publish
    from broker.keys import release_key

    try:
        manifest = publish(
            Path(rt.args.file), config.agent_packages_path, release_key(config.keys_dir)
        )
    except BrokerError as exc:
        raise CliError(exc.message) from None
    print(
        f"Published {manifest.file} (version {manifest.version}, sha256 {manifest.sha256}) "
        f"in {config.agent_packages_path}, signed with the release key."
    )
    return 0
