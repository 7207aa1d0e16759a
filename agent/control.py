"""The control socket of the running agent (``DIR/control.sock``, 0600, JSON lines).

The CLI sends one request per line and reads one answer per line::

    {"op": "status"}                     -> {"ok": true, "result": {...}}
    {"op": "sessions"}                   -> {"ok": true, "result": {"live": [], "pending": []}}
    {"op": "approve", "session": "s-…"}  -> {"ok": true, "result": {...decision}}
    {"op": "deny", "session": "s-…", "staff": "carol"}   ("staff" when several are asked about)
    {"op": "end", "session": "s-…"}      -> {"ok": true, "result": {"ended": 1}}
    anything refused                     -> {"ok": false, "error": "a sentence"}

Who approves is taken from the peer's credentials (``SO_PEERCRED``), not from the
request. The state dir (0700) and the socket (0600) keep other users out.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import pwd
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from agent.errors import AgentError, ControlError, MessageError
from agent.protocol import (
    LOCAL_USER_RE,
    SESSION_ID_RE,
    STAFF_NAME_RE,
    load_json_object,
    require_match,
)

logger = logging.getLogger(__name__)

LINE_MAX: Final = 64 * 1024
CLIENT_TIMEOUT: Final = 10.0
Op = Literal["status", "sessions", "approve", "deny", "end"]
_OPS: Final[tuple[Op, ...]] = ("status", "sessions", "approve", "deny", "end")
_SESSION_OPS: Final = frozenset(("approve", "deny", "end"))


@dataclass(frozen=True, slots=True)
class ControlRequest:
    """One request line."""

    op: Op
    session: str | None = None
    staff: str | None = None  # approve/deny: which of the people asking

    def __post_init__(self) -> None:
        if self.op not in _OPS:
            raise MessageError("unknown control operation")
        if (self.op in _SESSION_OPS) != (self.session is not None):
            raise MessageError(
                f"the {self.op} operation takes {'a' if self.op in _SESSION_OPS else 'no'} session"
            )
        if self.session is not None:
            require_match(SESSION_ID_RE, self.session, "session")
        if self.staff is not None:
            if self.op not in ("approve", "deny"):
                raise MessageError(f"the {self.op} operation takes no staff name")
            require_match(STAFF_NAME_RE, self.staff, "staff")

    @classmethod
    def parse(cls, line: bytes) -> ControlRequest:
        """Parse a request line."""
        obj = load_json_object(line, "control request", max_bytes=LINE_MAX)
        if not set(obj) <= {"op", "session", "staff"}:
            raise MessageError("control request: only 'op', 'session' and 'staff' are allowed")
        op = obj.get("op")
        if op not in _OPS:
            raise MessageError("unknown control operation")
        session = obj.get("session")
        if session is not None and not isinstance(session, str):
            raise MessageError("control request: session is not a string")
        staff = obj.get("staff")
        if staff is not None and not isinstance(staff, str):
            raise MessageError("control request: staff is not a string")
        return cls(op, session, staff)

    def serialize(self) -> bytes:
        """The request line."""
        body: dict[str, object] = {"op": self.op}
        if self.session is not None:
            body["session"] = self.session
        if self.staff is not None:
            body["staff"] = self.staff
        return json.dumps(body, separators=(",", ":")).encode() + b"\n"


def encode_answer(result: dict[str, object] | None = None, error: str | None = None) -> bytes:
    """An answer line: the result, or the error sentence."""
    body: dict[str, object] = (
        {"ok": False, "error": error} if error else {"ok": True, "result": result or {}}
    )
    return json.dumps(body, separators=(",", ":")).encode() + b"\n"


def decode_answer(line: bytes) -> dict[str, object]:
    """The result of an answer line; :class:`ControlError` with the agent's sentence."""
    try:
        obj = load_json_object(line, "control answer", max_bytes=16 * LINE_MAX)
    except MessageError:
        raise ControlError(
            "the agent sent an answer that could not be read; is it the same version?"
        ) from None
    if obj.get("ok") is True:
        result = obj.get("result")
        return result if isinstance(result, dict) else {}
    error = obj.get("error")
    raise ControlError(error if isinstance(error, str) else "the agent refused the request")


Handler = Callable[[ControlRequest, str], Awaitable[dict[str, object]]]


def peer_user(sock: socket.socket | None) -> str:
    """The user name of the process at the other end of a UNIX socket."""
    if sock is None:
        return "unknown"
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _, uid, _ = struct.unpack("3i", creds)
    except OSError:
        return "unknown"
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid{uid}"
    return name if LOCAL_USER_RE.fullmatch(name) else f"uid{uid}"


class ControlServer:
    """Serves the control socket; ``handler(request, peer_user)`` answers each request."""

    def __init__(self, path: Path, handler: Handler) -> None:
        self._path = path
        self._handler = handler
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        """Bind the socket (refusing if another agent serves it) and start serving."""
        if self._path.exists() or self._path.is_symlink():
            if _is_served(self._path):
                raise ControlError(
                    f"another agent is already running with this state dir ({self._path}); "
                    "stop it first or use another --state-dir"
                )
            self._path.unlink()
        self._server = await asyncio.start_unix_server(
            self._serve, path=str(self._path), limit=LINE_MAX
        )
        self._path.chmod(0o600)

    async def close(self) -> None:
        """Stop serving and remove the socket."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self._path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        user = peer_user(writer.get_extra_info("socket"))
        try:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    writer.write(encode_answer(error="the request line is too long"))
                    break
                if not line:
                    break
                writer.write(await self._answer(line, user))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception:  # a connection boundary: one bad client must not stop the agent
            logger.exception("control connection failed")
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _answer(self, line: bytes, user: str) -> bytes:
        try:
            request = ControlRequest.parse(line)
            return encode_answer(await self._handler(request, user))
        except AgentError as exc:
            return encode_answer(error=str(exc))


def _is_served(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True


def call_agent(
    path: Path, request: ControlRequest, timeout: float = CLIENT_TIMEOUT
) -> dict[str, object]:
    """Send one request to the running agent and return its result (blocking; for the CLI)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            raise ControlError(
                f"the agent is not running (nothing answers at {path}); "
                "start it with: secondline-agent run"
            ) from None
        except PermissionError:
            raise ControlError(
                f"you may not talk to the agent at {path}; run the command as the user "
                "the agent runs as (for example with sudo)"
            ) from None
        except OSError as exc:
            if exc.errno == errno.ENOTSOCK:
                raise ControlError(f"{path} is not the agent's control socket") from None
            raise ControlError(f"cannot reach the agent at {path} ({exc.strerror})") from None
        sock.sendall(request.serialize())
        answer = bytearray()
        while not answer.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
            if len(answer) > 16 * LINE_MAX:
                break
    except TimeoutError:
        raise ControlError(
            "the agent did not answer in time; check it with: secondline-agent status"
        ) from None
    except OSError as exc:
        raise ControlError(f"the connection to the agent failed ({exc.strerror})") from None
    finally:
        sock.close()
    return decode_answer(bytes(answer))
