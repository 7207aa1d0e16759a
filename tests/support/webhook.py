"""The webhook receiver process (tests/support/webhook_receiver.py) in the tests' hands, and
a sender of signed inbound events as a ticket system would send them (its own HMAC code,
nothing of the broker's)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import signal
import ssl
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Final

from tests.support.processes import stop_process

WAIT: Final = 30.0
RECEIVER: Final = Path(__file__).with_name("webhook_receiver.py")


class Receiver:
    """A running receiver; ``lines`` is everything it printed so far."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self.port = 0
        self._changed = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/secondline-events"

    @classmethod
    async def start(cls, secret_file: Path, *options: str) -> Receiver:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(RECEIVER),
            "--secret-file",
            str(secret_file),
            *options,
            stdout=asyncio.subprocess.PIPE,
        )
        receiver = cls(proc)
        receiver._reader = asyncio.get_running_loop().create_task(receiver._read())
        try:
            first = await receiver.wait_for("listening ")
        except BaseException:
            # A receiver that never listened is nobody's to stop: end it here.
            await receiver.stop()
            raise
        receiver.port = int(first.split()[1])
        return receiver

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            self.lines.append(line.decode().rstrip("\n"))
            self._changed.set()
        self._changed.set()

    async def wait_for(self, prefix: str, start: int = 0) -> str:
        async with asyncio.timeout(WAIT):
            index = start
            while True:
                while index < len(self.lines):
                    line = self.lines[index]
                    index += 1
                    if line.startswith(prefix):
                        return line
                if self._reader is not None and self._reader.done():
                    raise AssertionError(f"receiver exited: {self.lines[-10:]}")
                self._changed.clear()
                await self._changed.wait()

    async def event(self, event_type: str, start: int = 0) -> dict[str, object]:
        """The next event of ``event_type`` the receiver took."""
        index = start
        while True:
            line = await self.wait_for("event ", index)
            index = self.lines.index(line, index) + 1
            taken = json.loads(line.removeprefix("event "))
            assert isinstance(taken, dict)
            if taken["type"] == event_type:
                return taken

    def taken(self) -> list[dict[str, object]]:
        return [json.loads(x.removeprefix("event ")) for x in self.lines if x.startswith("event ")]

    async def stop(self) -> None:
        try:
            await stop_process(self.proc, signal.SIGTERM, WAIT)
        finally:
            if self._reader is not None:
                await self._reader


def signature(secret: str, body: bytes, timestamp: int | None = None) -> str:
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), str(t).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def post_event(
    url: str,
    cafile: Path,
    body: bytes,
    header: str | None,
) -> tuple[int, dict[str, object]]:
    """POST an inbound event to the broker; the status and the JSON answer."""
    req = urllib.request.Request(url, data=body, method="POST")  # noqa: S310 - our broker
    req.add_header("Content-Type", "application/json")
    if header is not None:
        req.add_header("Secondline-Signature", header)
    context = ssl.create_default_context(cafile=str(cafile))
    try:
        with urllib.request.urlopen(req, context=context, timeout=10) as resp:  # noqa: S310
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def ticket_event(event_id: str, event_type: str, **ticket: object) -> bytes:
    return json.dumps({"id": event_id, "type": event_type, "ticket": ticket}).encode()
