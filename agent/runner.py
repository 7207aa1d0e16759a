"""``secondline-agent run``: keep the tunnel to the broker up and serve SSH over it.

The connect loop dials ``tunnel_url`` (TLS pinned to ``broker.pem``, ``HTTPS_PROXY``
honoured), runs the SSH server of :mod:`agent.ssh_server` over the WebSocket and waits
for the connection to end; then it waits a backoff delay (:mod:`agent.backoff`) and dials
again. A connection never stays up dead: SSH keepalives and WebSocket pings both end it
(``keepalive_interval_seconds`` x ``keepalive_count_max`` of ``agent.toml``, 15 s x 2 by
default: an SSH keepalive after an interval without a byte from the broker, the tunnel
dropped after ``count`` unanswered ones; a ping every interval, its pong due within
interval x count). HTTP 401/403 on the upgrade means the agent was revoked: that is
logged as such and retried at the backoff cap. HTTP 503 with ``Retry-After`` (the broker
admits agents at a fixed rate) is retried after that many seconds plus up to half again,
instead of the backoff delay. ``status.json`` follows every change,
and the control socket serves the CLI for the whole run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import pwd
import random
import ssl
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Final, TypeVar

import asyncssh
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from agent.backoff import Backoff
from agent.consent import ConsentBook, ConsentRequest, ConsentService, Decision
from agent.consent_prompt import TerminalPrompt
from agent.control import ControlRequest, ControlServer
from agent.desktop import DesktopPrompt
from agent.errors import ControlError, TunnelRefusedError
from agent.facts import Facts, collect_facts
from agent.protocol import AGENT_ID_HEADER, MAX_TUNNEL_MESSAGE, iso_utc
from agent.proxy import Proxy
from agent.pty_session import ProcessTable
from agent.reverse_ssh import open_reverse_connection
from agent.send_turns import SEND_HIGH, SEND_LOW, SendTurns
from agent.session_log import SessionLog, SessionRegistry
from agent.shell_integration import ZshStartupFiles
from agent.ssh_server import ServerContext, server_options
from agent.state import EnrolledState, LocalConfig, StatePaths, atomic_write
from agent.tunnel import WebsocketsStream, WebSocketTunnel
from agent.updater import Updater, UpdaterSettings
from agent.version import VERSION

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

USER_AGENT = f"secondline-agent/{VERSION}"
#: The broker's handshake limiter answers 503 with ``Retry-After`` (our place in line).
HTTP_BUSY: Final = 503
RETRY_AFTER_MAX_S: Final = 600
RETRY_AFTER_MAX_DIGITS: Final = 6
#: A busy answer's wait is stretched by up to this fraction of itself, at random.
RETRY_AFTER_JITTER: Final = 0.5


@dataclass(frozen=True, slots=True, kw_only=True)
class RunnerSettings:
    """Everything ``run`` needs, read from the state dir before the loop starts."""

    paths: StatePaths
    state: EnrolledState
    config: LocalConfig
    agent_key: asyncssh.SSHKey
    broker_pem: str
    open_timeout: float = 30.0
    #: None: ``config.keepalive_interval_seconds``.
    ping_interval: float | None = None
    #: None: ``config.ping_timeout_seconds`` (interval x count).
    ping_timeout: float | None = None
    close_timeout: float = 5.0
    backoff_base: float = 1.0
    backoff_cap: float = 60.0
    stable_after: float = 60.0
    terminal_prompt: bool = False
    #: The HTTP proxy to the broker (agent.proxy.select_proxy), None: connect directly.
    proxy: Proxy | None = None
    #: Self-update (agent.updater); None: this agent does not update itself.
    updater: UpdaterSettings | None = None
    #: The tunnel's send queue: full at ``send_high`` bytes, channels go on at
    #: ``send_low`` (agent.send_turns).
    send_high: int = SEND_HIGH
    send_low: int = SEND_LOW


def tunnel_ssl_context(broker_pem: str) -> ssl.SSLContext:
    """TLS verified against the pinned certificate alone (no CA store, no host name)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cadata=broker_pem)
    # The pinned certificate is the trust anchor even when it is a leaf issued by a CA.
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return context


class AgentRunner:
    """The agent's main loop."""

    def __init__(
        self,
        settings: RunnerSettings,
        *,
        rand: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.time,
        environ: Mapping[str, str] = os.environ,
        facts: Callable[[], Facts] = collect_facts,
    ) -> None:
        self._settings = settings
        self._rand = rand
        self._clock = clock
        self._environ = environ
        self._backoff = Backoff(
            base=settings.backoff_base, cap=settings.backoff_cap, stable_after=settings.stable_after
        )
        state = settings.state
        self.consent = ConsentService(
            ConsentBook(
                attended=state.consent == "attended",
                timeout=settings.config.consent_timeout_seconds,
            ),
            clock=clock,
        )
        self.registry = SessionRegistry(SessionLog(settings.paths.sessions_log), clock)
        self.processes = ProcessTable()
        self._zsh_files = ZshStartupFiles()
        self._context = ServerContext(
            broker_key=asyncssh.import_public_key(state.broker_ssh_key.serialize()),
            consent=self.consent,
            registry=self.registry,
            processes=self.processes,
            config=settings.config,
            facts=facts,
            clock=clock,
            environ=environ,
            zsh_files=self._zsh_files,
        )
        self._ssl = tunnel_ssl_context(settings.broker_pem)
        self._connected = False
        self._since = clock()
        self._last_error: str | None = None
        #: Set while a tunnel is up.
        self.connected = asyncio.Event()
        #: The send queue of the newest tunnel: its channels' turns and its peak level.
        self.send_turns = SendTurns()
        #: Set at every change of :meth:`status` (whoever waits on it clears it).
        self.status_changed = asyncio.Event()
        #: Why the agent stopped to be started again (an update or a rollback), or None.
        self.restart_reason: str | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set."""
        control = ControlServer(self._settings.paths.control_sock, self._control)
        await control.start()
        self.consent.add_listener(self._log_consent)
        prompt: TerminalPrompt | None = None
        if self._settings.terminal_prompt:
            prompt = TerminalPrompt(self.consent, sys.stdin.fileno(), sys.stderr)
            prompt.start()
        desktop: DesktopPrompt | None = None
        if self._settings.config.desktop_windows:
            desktop = DesktopPrompt(
                self.consent,
                self.registry,
                login_user=self._settings.config.login_user or pwd.getpwuid(os.geteuid()).pw_name,
                environ=self._environ,
            )
            desktop.start()
        self._write_status()
        updating = self._start_updater(stop)
        try:
            while not stop.is_set():
                delay = await self._connect_once(stop)
                if stop.is_set():
                    break
                self._write_status(next_attempt=self._clock() + delay)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await stop.wait()
        finally:
            if updating is not None:
                updating.cancel()
                await asyncio.wait((updating,))
            await self.processes.shutdown()
            self._zsh_files.close()
            if prompt is not None:
                prompt.close()
            if desktop is not None:
                await desktop.close()
            self.consent.close()
            await control.close()
            self._connected = False
            self._last_error = "stopped"
            self._write_status(running=False)

    def _start_updater(self, stop: asyncio.Event) -> asyncio.Task[None] | None:
        settings = self._settings.updater
        if settings is None:
            return None

        def restart(reason: str) -> None:
            logger.warning("stopping to restart: %s", reason)
            self.restart_reason = reason
            stop.set()

        updater = Updater(
            settings, live_sessions=lambda: len(self.registry.live()), restart=restart,
            clock=self._clock,
        )  # fmt: skip
        task = asyncio.create_task(updater.run(self.connected), name="updater")
        # A failed updater is logged and stays down: sessions matter more than updates.
        task.add_done_callback(_log_failure)
        return task

    async def _connect_once(self, stop: asyncio.Event) -> float:
        """One connection, from dialling to its end; return the delay before the next."""
        state = self._settings.state
        try:
            websocket = await _unless_stopped(stop, self._dial())
        except TunnelRefusedError as exc:
            delay = self._backoff.refused(self._rand())
            logger.error("%s; retrying in %.0f s", exc, delay)
            self._last_error = str(exc)
            return delay
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a connection boundary: every failure means "retry later"
            told = retry_after(exc)
            if told is None:
                delay = self._backoff.failed(self._rand())
            else:
                # The broker's handshake limiter named our turn: come back then (spread a
                # little, so agents told the same second do not arrive together), not
                # sooner and not at an exponentially growing delay of our own.
                delay = busy_delay(told, self._rand())
            self._last_error = _describe(exc)
            logger.warning(
                "cannot connect to the broker at %s: %s; retrying in %.1f s",
                state.tunnel_url,
                self._last_error,
                delay,
            )
            return delay
        if websocket is None:
            return 0.0
        try:
            established = await self._serve(websocket, stop)
        finally:
            await websocket.close()
            lasted = self._clock() - self._since
            if self._connected:
                self._connected = False
                self._since = self._clock()
            self.connected.clear()
        if not established:
            delay = self._backoff.failed(self._rand())
            logger.warning("%s; retrying in %.1f s", self._last_error, delay)
            return delay
        delay = self._backoff.disconnected(lasted, self._rand())
        if not stop.is_set():
            logger.warning(
                "disconnected from the broker (%s); reconnecting in %.1f s",
                self._last_error or "connection closed",
                delay,
            )
        return delay

    async def _dial(self) -> ClientConnection:
        settings = self._settings
        try:
            return await connect(
                settings.state.tunnel_url,
                ssl=self._ssl,
                additional_headers={AGENT_ID_HEADER: settings.state.agent_id},
                user_agent_header=USER_AGENT,
                compression=None,  # SSH bytes are encrypted: deflate would only cost CPU
                max_size=MAX_TUNNEL_MESSAGE,
                open_timeout=settings.open_timeout,
                ping_interval=(
                    settings.config.keepalive_interval_seconds
                    if settings.ping_interval is None
                    else settings.ping_interval
                ),
                ping_timeout=(
                    settings.config.ping_timeout_seconds
                    if settings.ping_timeout is None
                    else settings.ping_timeout
                ),
                close_timeout=settings.close_timeout,
                proxy=settings.proxy.url if settings.proxy is not None else None,
            )
        except InvalidStatus as exc:
            if exc.response.status_code in (401, 403):
                raise TunnelRefusedError(exc.response.status_code) from None
            raise

    async def _serve(self, websocket: ClientConnection, stop: asyncio.Event) -> bool:
        """Run SSH over the tunnel until it ends; False when the handshake failed."""
        settings = self._settings
        self.send_turns = SendTurns(high=settings.send_high, low=settings.send_low)
        tunnel = WebSocketTunnel(WebsocketsStream(websocket), turns=self.send_turns)
        try:
            conn = await _unless_stopped(
                stop,
                open_reverse_connection(
                    tunnel, **server_options(settings.agent_key, self._context)
                ),
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a connection boundary: the SSH handshake failed
            self._last_error = f"the SSH handshake with the broker failed: {_describe(exc)}"
            return False
        if conn is None:
            return True
        self._connected = True
        self._since = self._clock()
        self._last_error = None
        self.connected.set()
        self._write_status()
        logger.info("connected to the broker at %s", settings.state.tunnel_url)
        stopping = asyncio.ensure_future(stop.wait())
        closed = asyncio.ensure_future(conn.wait_closed())
        try:
            await asyncio.wait((stopping, closed), return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            if not closed.done():
                conn.close()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._settings.close_timeout):
                        await closed
            closed.cancel()
        if not stop.is_set():
            self._last_error = "the connection closed"
        return True

    # -- status, control, consent log -------------------------------------------------

    def status(self) -> dict[str, object]:
        """What ``secondline-agent status`` shows."""
        state = self._settings.state
        return {
            "running": True,
            "pid": os.getpid(),
            "connected": self._connected,
            "since": iso_utc(self._since),
            "last_error": self._last_error,
            "agent_id": state.agent_id,
            "name": state.name,
            "customer": state.customer,
            "consent": state.consent,
            "broker_url": state.broker_url,
            "live_sessions": len(self.registry.live()),
            "pending_requests": len(self.consent.book.pending()),
        }

    def _write_status(self, *, running: bool = True, next_attempt: float | None = None) -> None:
        self.status_changed.set()
        status = self.status()
        status["running"] = running
        status["next_attempt_at"] = None if next_attempt is None else iso_utc(next_attempt)
        try:
            atomic_write(
                self._settings.paths.status_json, json.dumps(status, indent=2).encode() + b"\n"
            )
        except OSError as exc:
            logger.warning("cannot write %s: %s", self._settings.paths.status_json, exc.strerror)

    async def _control(self, request: ControlRequest, user: str) -> dict[str, object]:
        if request.op == "status":
            return self.status()
        if request.op == "sessions":
            return {
                "live": [channel.to_dict() for channel in self.registry.live()],
                "pending": [req.to_dict() for req in self.consent.book.pending()],
                "approved": [
                    {"session": key.session, "staff": key.staff, "role": key.role}
                    for key in self.consent.held()
                ],
            }
        session = request.session
        assert session is not None  # ControlRequest guarantees it for these ops
        if request.op in ("approve", "deny"):
            decision = self.consent.answer(
                session, approved=request.op == "approve", by=user, staff=request.staff
            )
            return {
                "session": session,
                "staff": decision.key.staff,
                "role": decision.key.role,
                "decision": decision.decision,
                "withdrawn": decision.withdrawn,
                "by": decision.by,
            }
        waiting = self.consent.book.matching(session)
        for key in waiting:
            self.consent.decide(key, approved=False, by=user)
        ended = self.registry.end_session(session)
        if not ended and not waiting:
            raise ControlError(
                f"no session {session} is running or waiting; "
                "list them with: secondline-agent sessions"
            )
        return {"session": session, "ended": ended, "denied": bool(waiting)}

    def _log_consent(self, event: ConsentRequest | Decision) -> None:
        if isinstance(event, ConsentRequest):
            logger.info(
                "session %s: %s asks for consent as %s (ticket %s)",
                event.env.session,
                event.env.staff,
                event.env.asked_role,
                event.env.ticket,
            )
            return
        what = "withdrawn" if event.withdrawn else event.decision
        logger.info("session %s: consent %s for %s", event.session, what, event.key.describe())
        self.registry.consent(
            {
                "session": event.session,
                "staff": event.key.staff,
                "role": event.key.role,
                "decision": event.decision,
                "withdrawn": event.withdrawn,
                "by": event.by,
                "at": iso_utc(event.at),
            }
        )


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("self-update stopped after an error", exc_info=task.exception())


async def _unless_stopped(stop: asyncio.Event, work: Awaitable[_T]) -> _T | None:
    """The result of ``work``, or None (``work`` cancelled) once ``stop`` is set."""
    task = asyncio.ensure_future(work)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait((task, stopping), return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        if not task.done():
            task.cancel()
            await asyncio.wait((task,))
    if task.cancelled():
        return None
    return task.result()


def retry_after(exc: BaseException) -> float | None:
    """The seconds a 503 answer's ``Retry-After`` asks for (delay-seconds form only,
    capped at :data:`RETRY_AFTER_MAX_S`), or None for any other failure."""
    if not isinstance(exc, InvalidStatus) or exc.response.status_code != HTTP_BUSY:
        return None
    raw = exc.response.headers.get("Retry-After", "").strip()
    if not raw or len(raw) > RETRY_AFTER_MAX_DIGITS or not raw.isascii() or not raw.isdigit():
        return None
    return float(min(int(raw), RETRY_AFTER_MAX_S))


def busy_delay(retry_after_s: float, rand: float) -> float:
    """At least ``retry_after_s``, plus up to half of it again (``rand`` in [0, 1))."""
    return retry_after_s + rand * retry_after_s * RETRY_AFTER_JITTER


def _describe(exc: BaseException) -> str:
    """A log-safe, one-line reason for a connection failure."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "the broker's certificate does not match the pinned broker.pem"
    if isinstance(exc, InvalidStatus):
        return f"the broker answered HTTP {exc.response.status_code}"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc).splitlines()[0][:200] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
