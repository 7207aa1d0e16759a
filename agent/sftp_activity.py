"""What the end user's ``secondline-agent sessions`` shows of a file session: read from
the log lines of the machine's own ``sftp-server`` (started with ``-e -l INFO``, which
writes one line per file operation on its stderr), never from the session's bytes.

OpenSSH writes paths in those lines quoted and escaped (``strnvis``: controls and
non-printing bytes as octal), so a hostile name cannot forge a line; we take only the
shapes below and count them. Pure: :class:`FileActivity` is fed text, the agent shows it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final

# sftp-server.c's INFO lines that move or change files.
_CLOSE: Final = re.compile(r'(?:forced )?close "(.*)" bytes read ([0-9]+) written ([0-9]+)')
_CHANGE: Final = re.compile(
    r'(remove name|rename old|mkdir name|rmdir name|posix-rename old|symlink old) "(.*?)"'
)
MAX_LINE: Final = 16 << 10
PATH_SHOWN: Final = 120


@dataclass
class FileActivity:
    """Counts of one file session's operations, and the last file it touched."""

    read: int = 0  # files read (closed with bytes read)
    written: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    changed: int = 0  # removes, renames, mkdir, rmdir, symlinks
    last: str = ""
    _partial: bytes = field(default=b"", repr=False)

    def feed(self, data: bytes) -> None:
        """Bytes of sftp-server's stderr, cut anywhere."""
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()[-MAX_LINE:]
        for line in lines:
            self._line(line[:MAX_LINE].decode("utf-8", "replace").rstrip("\r"))

    def _line(self, line: str) -> None:
        m = _CLOSE.fullmatch(line)
        if m is not None:
            read, written = int(m.group(2)), int(m.group(3))
            self.bytes_read += read
            self.bytes_written += written
            self.read += 1 if read else 0
            self.written += 1 if written else 0
            if read or written:
                self.last = m.group(1)[:PATH_SHOWN]
            return
        m = _CHANGE.match(line)
        if m is not None:
            self.changed += 1
            self.last = m.group(2)[:PATH_SHOWN]

    def to_dict(self) -> dict[str, object]:
        return {
            "files_read": self.read,
            "files_written": self.written,
            "bytes_read": self.bytes_read,
            "bytes_written": self.bytes_written,
            "changes": self.changed,
            "last_file": self.last or None,
        }

    def summary(self) -> str:
        """One line for ``secondline-agent sessions``."""
        text = (
            f"files: {self.written} written ({self.bytes_written} bytes), {self.read} read "
            f"({self.bytes_read} bytes), {self.changed} changed"
        )
        return f"{text}, last {self.last}" if self.last else text
