"""Errors of the transcript core.

TranscriptError                 root; a :class:`broker.errors.BrokerError`
├── InvalidValue                a caller passed a value we refuse (also a ``ValueError``)
│   └── InvalidSessionId        session id not ``^s-[A-Za-z0-9]{22}$``, or a path outside the root
├── CastFormatError             a ``.cast`` line is not strict asciicast v2 as we write it
├── SealFormatError             a seal file is not a seal
├── BundleFormatError           an export bundle is not a bundle
├── KeyFormatError              a key file holds no Ed25519 key we can use
├── TranscriptNotFound          the ``.cast`` file does not exist
├── RecoveryError               ``recover`` refused to seal (no header, altered file)
└── RecorderError               the recorder cannot go on
    ├── RecorderDiskFull        ENOSPC/EDQUOT while writing; ``seal`` still succeeds
    ├── RecorderWriteError      another OS error while writing; ``seal`` still succeeds
    └── RecorderClosed          the recorder was already sealed

Parsers never raise anything but these for any input bytes: ``verify_*`` turns every
format error into a :class:`~broker.transcript.verify.VerifyResult` instead.
"""

from __future__ import annotations

from broker.errors import BrokerError


class TranscriptError(BrokerError):
    """Root of every error the transcript core raises on purpose."""

    code = "transcript_error"
    http_status = 500


class InvalidValue(TranscriptError, ValueError):
    """A caller passed a value outside what a transcript may hold."""

    code = "invalid_input"
    http_status = 400


class InvalidSessionId(InvalidValue):
    """The session id does not match the strict pattern, or its file would leave the root."""

    code = "invalid_session_id"


class CastFormatError(TranscriptError):
    """A line of a ``.cast`` file is not what our writer produces.

    ``line`` is the 1-based line number (the header is line 1), ``event`` the 1-based event
    number (``None`` for the header).
    """

    code = "cast_malformed"

    def __init__(self, message: str, *, line: int, event: int | None) -> None:
        super().__init__(f"line {line}: {message}")
        self.reason = message
        self.line = line
        self.event = event


class SealFormatError(TranscriptError):
    """A seal file is not a seal we can read."""

    code = "seal_malformed"


class BundleFormatError(TranscriptError):
    """An export bundle is not a bundle we can read."""

    code = "bundle_malformed"


class KeyFormatError(TranscriptError):
    """A key file holds no Ed25519 key in a format we read."""

    code = "key_malformed"


class TranscriptNotFound(TranscriptError):
    """The transcript file does not exist."""

    code = "transcript_not_found"
    http_status = 404


class RecoveryError(TranscriptError):
    """``recover`` refused to seal: the file has no header or does not match its chain."""

    code = "transcript_unrecoverable"


class RecorderError(TranscriptError):
    """The recorder cannot record any more; ``seal`` still works."""

    code = "recorder_failed"
    http_status = 503


class RecorderDiskFull(RecorderError):
    """The disk is full: what fitted is consistent on disk and ``seal`` still succeeds."""

    code = "disk_full"


class RecorderWriteError(RecorderError):
    """Writing failed for another reason than a full disk; ``seal`` still succeeds."""

    code = "recorder_write_failed"


class RecorderClosed(RecorderError):
    """The recorder was sealed already; nothing more can be recorded."""

    code = "recorder_closed"
