"""``run``: connect to the broker and serve sessions until stopped (or until an update
asks for a restart)."""

from __future__ import annotations

import logging
import os
import sys

from agent.cli_broker import read_credentials
from agent.enrollment import pem_to_der
from agent.protocol import cert_fingerprint
from agent.state import StatePaths, check_private, load_config, load_enrolled_state


def run_agent(paths: StatePaths, *, verbose: bool) -> int:
    import asyncio
    import signal

    import asyncssh

    from agent.gc_policy import settle_after_startup
    from agent.login import LoginAccount
    from agent.runner import AgentRunner, RunnerSettings

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # asyncssh logs commands and environments at INFO: they may carry secrets.
    logging.getLogger("asyncssh").setLevel(logging.WARNING)
    logging.getLogger("websockets").setLevel(logging.WARNING)

    state = load_enrolled_state(paths)
    check_private(paths.root)
    config = load_config(paths)
    LoginAccount.resolve(config.login_user, config.shell)  # fail now, not at the first session
    key_data, private_key, broker_pem = read_credentials(paths)
    agent_key = asyncssh.import_private_key(key_data)
    from urllib.parse import urlsplit

    from agent.proxy import select_proxy

    proxy = select_proxy(config.proxy_url, urlsplit(state.tunnel_url).hostname or "", os.environ)
    from agent.updater import EXIT_RESTART, UpdaterSettings, why_off

    update_settings = UpdaterSettings(
        paths=paths,
        state=state,
        config=config,
        key=private_key,
        fingerprint=cert_fingerprint(pem_to_der(broker_pem, "broker.pem")),
    )
    off = why_off(update_settings)
    if off is not None:
        logging.getLogger(__name__).info("self-update is off: %s", off)
    settings = RunnerSettings(
        paths=paths,
        state=state,
        config=config,
        agent_key=agent_key,
        broker_pem=broker_pem,
        proxy=proxy,
        updater=update_settings if off is None else None,
        terminal_prompt=state.consent == "attended" and sys.stdin.isatty() and sys.stderr.isatty(),
    )

    async def serve() -> str | None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        runner = AgentRunner(settings)
        settle_after_startup()
        await runner.run(stop)
        return runner.restart_reason

    # After an update or a rollback the agent exits with EX_TEMPFAIL, so that its service
    # manager starts it again (now the version that is installed).
    return EXIT_RESTART if asyncio.run(serve()) is not None else 0
