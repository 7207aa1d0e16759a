"""What a ticket accepts as text and as attachment names, as pure functions.

Text is stored as text and never interpreted: HTML stays literally what was typed (pages
escape it), and control characters are removed so that no escape sequence reaches a
terminal that prints a ticket. Oversize input is refused, never cut, so nothing is stored
other than what the writer saw. Attachment names are mapped onto a strict character set;
names that try to leave their directory (a separator, ``..``, NUL or another control
character) are refused outright.
"""

from __future__ import annotations

import re
from typing import Final

from broker.rules import LEVELS, sanitize_display_text
from broker.rules.outside_text import clean_lines
from broker.tickets.errors import TicketInputError

TITLE_MAX: Final = 200
DESCRIPTION_MAX: Final = 20_000
NOTE_MAX: Final = 20_000
SOLUTION_MAX: Final = 20_000
REQUESTER_MAX: Final = 200
ATTACHMENT_NAME_MAX: Final = 100
IDEMPOTENCY_KEY_MAX: Final = 200
CONTENT_TYPE_MAX: Final = 100
DEFAULT_CONTENT_TYPE: Final = "application/octet-stream"

_NAME_OK: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_NAME_MAPPED: Final = re.compile(r"[^A-Za-z0-9._-]")
_IDEMPOTENCY_KEY: Final = re.compile(r"[A-Za-z0-9._:/+=-]{1,200}")
_CONTENT_TYPE: Final = re.compile(r"[a-z0-9][a-z0-9.+-]{0,40}/[a-z0-9][a-z0-9.+-]{0,57}")


def _require_text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise TicketInputError(f"the {what} must be text", code="invalid_text")
    return value


def _refuse_size(what: str, length: int, limit: int) -> TicketInputError:
    return TicketInputError(
        f"the {what} is {length} characters long; keep it to {limit} "
        "(attach longer material as a file)",
        code="text_too_long",
        status=413,
    )


def clean_title(value: object) -> str:
    """Return the title on one line without control characters, or refuse it."""
    text = _require_text(value, "title")
    if len(text) > TITLE_MAX:
        raise _refuse_size("title", len(text), TITLE_MAX)
    cleaned = sanitize_display_text(text, TITLE_MAX)
    if not cleaned:
        raise TicketInputError("the title is empty; say in a few words what is wrong")
    return cleaned


def clean_text(value: object, what: str, limit: int, *, required: bool) -> str:
    """Return multi-line text without control characters but tab and newline, or refuse it.

    Line ends become ``\\n``; surrounding white space is dropped.
    """
    text = _require_text(value, what)
    if len(text) > limit:
        raise _refuse_size(what, len(text), limit)
    cleaned = clean_lines(text)
    if required and not cleaned:
        raise TicketInputError(f"the {what} is empty; write what you want to say")
    return cleaned


def clean_requester(value: object) -> str:
    """Return who asked for help (free text on one line), or refuse it."""
    text = _require_text(value, "requester")
    if len(text) > REQUESTER_MAX:
        raise _refuse_size("requester", len(text), REQUESTER_MAX)
    return sanitize_display_text(text, REQUESTER_MAX)


def check_level(value: object) -> int:
    """Return a ticket level (1, 2 or 3), or refuse it."""
    if isinstance(value, bool) or not isinstance(value, int) or value not in LEVELS:
        raise TicketInputError(
            f"a ticket level is 1, 2 or 3, not {value!r}", code="bad_level", status=422
        )
    return value


def attachment_name(value: object) -> str:
    """Return the stored name of an attachment, or refuse one that could leave its directory.

    Separators, ``..``, NUL and other controls are refused; any other character outside
    ``A-Z a-z 0-9 . _ -`` becomes ``_`` (dropped at the start); a name must then start with
    a letter or digit, so a leading dot or dash is refused: such names hide or read as options.
    """
    text = _require_text(value, "attachment name")
    if not text:
        raise TicketInputError("the attachment has no name; give the file a name")
    if len(text) > ATTACHMENT_NAME_MAX:
        raise TicketInputError(
            f"the attachment name is {len(text)} characters long; keep it to {ATTACHMENT_NAME_MAX}",
            code="bad_attachment_name",
        )
    bad = next((c for c in text if c in "/\\" or not c.isprintable()), None)
    if bad is not None or ".." in text:
        shown = ascii(bad) if bad is not None else "'..'"
        raise TicketInputError(
            f"the attachment name contains {shown}; a name is one file name, without "
            "directories, '..' or control characters",
            code="bad_attachment_name",
        )
    # Mapped characters at the start are dropped: "Übersicht.pdf" is stored as "bersicht.pdf".
    name = _NAME_MAPPED.sub("_", text).lstrip("_")
    if not _NAME_OK.fullmatch(name):
        raise TicketInputError(
            "an attachment name starts with a letter or a digit; rename the file",
            code="bad_attachment_name",
        )
    return name


def numbered_name(name: str, number: int) -> str:
    """Return ``report-2.txt`` for ``report.txt`` and 2: the next free name beside a taken one."""
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        stem, ext = name, ""
    suffix = f"-{number}" + (f".{ext}" if ext else "")
    return stem[: ATTACHMENT_NAME_MAX - len(suffix)] + suffix


def content_type(value: str | None) -> str:
    """Return a media type such as ``text/plain`` (parameters dropped), or the default."""
    if not value:
        return DEFAULT_CONTENT_TYPE
    base = value.split(";", 1)[0].strip().lower()
    return base if _CONTENT_TYPE.fullmatch(base) else DEFAULT_CONTENT_TYPE


def content_disposition(name: str) -> str:
    """Return a Content-Disposition that downloads ``name`` (an :func:`attachment_name`)."""
    # The name passed attachment_name, so it holds no quote, backslash or control character.
    if not _NAME_OK.fullmatch(name):
        raise TicketInputError("not a stored attachment name", code="bad_attachment_name")
    return f'attachment; filename="{name}"'


def idempotency_key(value: str | None) -> str | None:
    """Return the key a retrying writer sends with a note, or refuse a malformed one."""
    if value is None:
        return None
    if not _IDEMPOTENCY_KEY.fullmatch(value):
        raise TicketInputError(
            f"an idempotency key is 1 to {IDEMPOTENCY_KEY_MAX} characters from "
            "A-Z a-z 0-9 . _ : / + = -",
            code="bad_idempotency_key",
        )
    return value
