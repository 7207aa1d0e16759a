"""Attachment files on disk: ``<root>/T-<id>/<name>``, written through a temporary file so
that a refused or failed upload leaves nothing behind.

Every path is resolved and checked to sit directly in its ticket's directory under the root
before it is opened, whatever the name (names are checked by ``text.attachment_name``
first; this is the second lock). File work runs in a thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from broker.rules import format_ticket_id
from broker.tickets.errors import TicketInputError

# Where an attachment is downloaded: an address of the ticket's record (``schemas``), served
# by the web edge (``broker.web.ticket_downloads``).
DOWNLOAD_PATH: Final = "/files/tickets/{id}/attachments/{name}"


def download_url(ticket_ref: str, name: str) -> str:
    """The path a stored attachment is downloaded from (names are URL-safe by construction)."""
    return DOWNLOAD_PATH.replace("{id}", ticket_ref).replace("{name}", name)


# Staged uploads start with a dot, which no attachment name may: they can never be served.
_STAGE_PREFIX = ".upload-"


@dataclass(frozen=True)
class StagedFile:
    """An upload written to a temporary file in its ticket's directory, not yet named."""

    path: Path
    size: int
    sha256: str


def too_large(limit: int) -> TicketInputError:
    return TicketInputError(
        f"the attachment is larger than {limit} bytes, the limit of this broker; "
        "compress it or attach a smaller excerpt",
        code="attachment_too_large",
        status=413,
    )


class AttachmentFiles:
    """The attachment directory of one broker."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes

    def _ticket_dir(self, ticket_id: int) -> Path:
        root = self.root.resolve()
        folder = (root / format_ticket_id(ticket_id)).resolve()
        if folder.parent != root:
            raise TicketInputError("the attachment directory is not where it should be")
        return folder

    def path_of(self, ticket_id: int, name: str) -> Path:
        """The file of attachment ``name`` of the ticket; refuses anything outside its dir."""
        folder = self._ticket_dir(ticket_id)
        path = (folder / name).resolve()
        if path.parent != folder or not path.is_relative_to(self.root.resolve()):
            raise TicketInputError(
                "the attachment name points outside the ticket's directory",
                code="bad_attachment_name",
            )
        return path

    def _new_stage(self, ticket_id: int) -> tuple[Path, int]:
        folder = self._ticket_dir(ticket_id)
        self.root.mkdir(mode=0o700, exist_ok=True)
        folder.mkdir(mode=0o700, exist_ok=True)
        path = folder / f"{_STAGE_PREFIX}{secrets.token_hex(8)}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        return path, fd

    def _write_all(self, ticket_id: int, data: bytes) -> StagedFile:
        path, fd = self._new_stage(ticket_id)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return StagedFile(path, len(data), hashlib.sha256(data).hexdigest())

    async def stage_bytes(self, ticket_id: int, data: bytes) -> StagedFile:
        """Write ``data`` to a staged file, or refuse it when it is over the limit."""
        if len(data) > self.max_bytes:
            raise too_large(self.max_bytes)
        return await asyncio.to_thread(self._write_all, ticket_id, data)

    async def stage_stream(self, ticket_id: int, chunks: AsyncIterator[bytes]) -> StagedFile:
        """Write chunks to a staged file; stop and remove it as soon as it is over the limit."""
        path, fd = await asyncio.to_thread(self._new_stage, ticket_id)
        digest = hashlib.sha256()
        size = 0
        try:
            with os.fdopen(fd, "wb") as fh:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise too_large(self.max_bytes)
                    digest.update(chunk)
                    await asyncio.to_thread(fh.write, chunk)
        except BaseException:
            await asyncio.to_thread(path.unlink, missing_ok=True)
            raise
        return StagedFile(path, size, digest.hexdigest())

    async def place(self, staged: StagedFile, ticket_id: int, name: str) -> Path:
        """Give a staged file its attachment name (replacing an orphan left by a crash)."""
        final = self.path_of(ticket_id, name)
        await asyncio.to_thread(os.replace, staged.path, final)
        return final

    async def discard(self, *paths: Path) -> None:
        """Remove files of an upload that was refused or not committed."""

        def remove() -> None:
            for path in paths:
                with contextlib.suppress(OSError):
                    path.unlink(missing_ok=True)

        await asyncio.to_thread(remove)

    async def read(self, ticket_id: int, name: str) -> bytes | None:
        """The bytes of an attachment, or None when its file is missing."""
        path = self.path_of(ticket_id, name)

        def load() -> bytes | None:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
            except OSError:  # missing, or a symlink planted in its place
                return None
            with os.fdopen(fd, "rb") as fh:
                return fh.read(self.max_bytes + 1)

        return await asyncio.to_thread(load)
