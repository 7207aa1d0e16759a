"""asciicast v2, as Secondline writes it, and a strict parser for verification.

A ``.cast`` file is UTF-8 text, one JSON document per line, each line ending in ``\\n``:

- line 1, the header: ``{"version": 2, "width": W, "height": H, "timestamp": T,
  ["title": ...,] "env": {"TERM": ..., "SHELL": ...}, "secondline": {"session_id": ...,
  "ticket": ..., "agent": ..., "staff": ...}}``
- every further line, an event ``[time, code, data]``: ``time`` in seconds since the
  session started, written with exactly six decimals and never decreasing; ``code`` one of
  ``o`` (output), ``i`` (input staff typed), ``a`` (answer-back: the staff terminal's
  replies to queries, never typed), ``r`` (resize, ``"COLSxROWS"``), ``m`` (marker, a
  label). Players skip the ``a`` code they do not know.
- format 2 (``"format": 2`` in the header's ``secondline`` object) adds ``b``: output as
  its exact bytes in canonical base64, for blocks that JSON text would make large
  (:mod:`broker.transcript.output`, which also makes the asciicast v2 copy players read).

Every line has one canonical encoding (fixed key order, ``", "``/``": "`` separators,
non-ASCII written as is, six-decimal times). The strict parser accepts a line only when it
is exactly that encoding of valid content, so a parsed transcript re-encodes to the same
bytes: the export bundle relies on it. Any failure is a :class:`CastFormatError` naming the
line (and event); the parser raises nothing else for any input bytes.

``asciinema play`` and ``asciinema cat`` (2.4) read format 1 files as they are, and the
copy :func:`broker.transcript.output.playable_cast` makes of a format 2 file.
"""

from __future__ import annotations

import binascii
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from json.encoder import encode_basestring
from typing import BinaryIO, Final, Literal, TypeGuard

from broker.transcript.errors import CastFormatError, InvalidSessionId, InvalidValue

SESSION_ID_PATTERN: Final = re.compile(r"s-[A-Za-z0-9]{22}")
TICKET_PATTERN: Final = re.compile(r"T-[0-9]{1,9}")
AGENT_PATTERN: Final = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
STAFF_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
TERM_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
SHELL_PATTERN: Final = re.compile(r"/[A-Za-z0-9._/+-]{0,255}")
_SIZE_PATTERN: Final = re.compile(r"([0-9]{1,5})x([0-9]{1,5})")

MAX_TITLE: Final = 200
MAX_LABEL: Final = 200
MAX_SIZE: Final = 10000
MAX_TIME: Final = 1e9
MAX_EVENT_CHARS: Final = 65536
# An event holds at most MAX_EVENT_CHARS characters; JSON escaping can make one six bytes.
MAX_LINE_BYTES: Final = 1 << 20

EventCode = Literal["o", "b", "i", "a", "r", "m"]
EVENT_CODES: Final[frozenset[str]] = frozenset({"o", "b", "i", "a", "r", "m"})
# Transcript format versions (docs/transcripts.md, "Format versions"): 1 writes every output
# event as text ("o"); 2, named in the header's "secondline" object, may also write output
# as its exact bytes in base64 ("b"), which costs 4/3 of a byte per byte where escaping a
# control character as JSON text costs six.
FORMAT_TEXT: Final = 1
FORMAT_DENSE: Final = 2
MAX_OUTPUT_BYTES: Final = 65536  # the bytes of one "b" event
_B64_MAX: Final = (MAX_OUTPUT_BYTES + 2) // 3 * 4

# Controls, bidi overrides, invisible formatting and lone surrogates: never in a label.
_LABEL_BAD: Final = re.compile(
    "[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff\ud800-\udfff]"
)


def clean_label(text: str, limit: int = MAX_LABEL) -> str:
    """Make ``text`` a one-line label: controls shown as ``\\xHH``, capped at ``limit``."""

    def _escape(m: re.Match[str]) -> str:
        code = ord(m.group())
        if 0xD800 <= code <= 0xDFFF:
            return "\ufffd"
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"

    cleaned = _LABEL_BAD.sub(_escape, text)
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


def _is_label(value: object, limit: int) -> bool:
    return isinstance(value, str) and len(value) <= limit and not _LABEL_BAD.search(value)


def check_session_id(session_id: str) -> str:
    """Return ``session_id`` if it matches ``^s-[A-Za-z0-9]{22}$``, else refuse."""
    if not isinstance(session_id, str) or not SESSION_ID_PATTERN.fullmatch(session_id):
        raise InvalidSessionId("this is not a session id (expected s- and 22 letters or digits)")
    return session_id


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionInfo:
    """Who and what a session is about; stored under ``"secondline"`` in the header."""

    session_id: str
    ticket: str
    agent: str
    staff: str

    def __post_init__(self) -> None:
        check_session_id(self.session_id)
        for name, pattern in (
            ("ticket", TICKET_PATTERN),
            ("agent", AGENT_PATTERN),
            ("staff", STAFF_PATTERN),
        ):
            value = getattr(self, name)
            if not isinstance(value, str) or not pattern.fullmatch(value):
                raise InvalidValue(f"the session's {name} has characters a transcript refuses")


@dataclass(frozen=True, slots=True, kw_only=True)
class CastHeader:
    """The first line of a ``.cast`` file. ``title`` is cleaned with :func:`clean_label`."""

    width: int
    height: int
    timestamp: int
    session: SessionInfo
    term: str | None = None
    shell: str | None = None
    title: str | None = None
    transcript_format: int = FORMAT_TEXT

    def __post_init__(self) -> None:
        if self.transcript_format not in (FORMAT_TEXT, FORMAT_DENSE):
            raise InvalidValue("the transcript format is 1 or 2")
        for name in ("width", "height"):
            value = getattr(self, name)
            if type(value) is not int or not 1 <= value <= MAX_SIZE:
                raise InvalidValue(f"the terminal {name} must be 1 to {MAX_SIZE}")
        if type(self.timestamp) is not int or not 0 <= self.timestamp < 2**40:
            raise InvalidValue("the header timestamp must be whole seconds since 1970")
        if self.term is not None and not TERM_PATTERN.fullmatch(self.term):
            raise InvalidValue("TERM has characters a transcript refuses")
        if self.shell is not None and not SHELL_PATTERN.fullmatch(self.shell):
            raise InvalidValue("SHELL must be an absolute path of plain characters")
        if self.title is not None:
            object.__setattr__(self, "title", clean_label(self.title, MAX_TITLE))

    def to_json(self) -> dict[str, object]:
        """The header as a JSON object, keys in canonical order."""
        doc: dict[str, object] = {
            "version": 2,
            "width": self.width,
            "height": self.height,
            "timestamp": self.timestamp,
        }
        if self.title is not None:
            doc["title"] = self.title
        env: dict[str, str] = {}
        if self.term is not None:
            env["TERM"] = self.term
        if self.shell is not None:
            env["SHELL"] = self.shell
        doc["env"] = env
        meta: dict[str, object] = {
            "session_id": self.session.session_id,
            "ticket": self.session.ticket,
            "agent": self.session.agent,
            "staff": self.session.staff,
        }
        if self.transcript_format != FORMAT_TEXT:  # format 1 files carry no version
            meta["format"] = self.transcript_format
        doc["secondline"] = meta
        return doc


@dataclass(frozen=True, slots=True)
class CastEvent:
    """One event line: seconds since the start, its code, its data."""

    time: float
    code: EventCode
    data: str


def _is_code(code: object) -> TypeGuard[EventCode]:
    return isinstance(code, str) and code in EVENT_CODES


def _dumps(obj: object) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(", ", ": "))


def encode_header_line(header: CastHeader) -> bytes:
    """The header line's bytes, without the line end."""
    return _dumps(header.to_json()).encode("utf-8")


def event_line_parts(time: float, code: str, data: str) -> tuple[bytes, bytes]:
    """An event line as ``(head, body)``: the line is ``head + body + b"]"``.

    Two parts so that the recorder hashes and writes a large event without copying it
    once more; :func:`encode_event_line` joins them, so both give the same canonical bytes.
    The body is ``json.dumps(data, ensure_ascii=False)``, made by the same C escaper
    without the encoder object around it."""
    if not (math.isfinite(time) and 0.0 <= time < MAX_TIME):
        raise InvalidValue("an event time must be 0 to 1e9 seconds")
    if not _is_code(code):
        raise InvalidValue("an event code is one of o, b, i, a, r, m")
    try:
        body = encode_basestring(data).encode()
    except UnicodeEncodeError as exc:
        raise InvalidValue("event data must be valid Unicode (no lone surrogates)") from exc
    return f'[{time:.6f}, "{code}", '.encode("ascii"), body


def encode_event_line(time: float, code: str, data: str) -> bytes:
    """An event line's bytes, without the line end; refuses what the parser would refuse."""
    head, body = event_line_parts(time, code, data)
    return head + body + b"]"


def resize_data(cols: int, rows: int) -> str:
    """The data of an ``r`` event; refuses sizes outside 1..10000."""
    for value in (cols, rows):
        if type(value) is not int or not 1 <= value <= MAX_SIZE:
            raise InvalidValue(f"a terminal size must be 1 to {MAX_SIZE}")
    return f"{cols}x{rows}"


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not allowed")


def _load(line: bytes, line_no: int, event: int | None) -> object:
    if len(line) > MAX_LINE_BYTES:
        raise CastFormatError("the line is too long", line=line_no, event=event)
    try:
        return json.loads(line.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise CastFormatError("the line is not valid UTF-8", line=line_no, event=event) from None
    except (ValueError, RecursionError):
        raise CastFormatError("the line is not valid JSON", line=line_no, event=event) from None


def header_from_json(doc: object) -> CastHeader:
    """Validate a decoded header object; :class:`InvalidValue` when it is not ours."""
    if not isinstance(doc, dict):
        raise InvalidValue("the header is not a JSON object")
    keys = set(doc)
    if not {"version", "width", "height", "timestamp", "env", "secondline"} <= keys:
        raise InvalidValue("the header lacks a required key")
    if not keys <= {"version", "width", "height", "timestamp", "title", "env", "secondline"}:
        raise InvalidValue("the header has a key we do not write")
    if doc["version"] != 2 or type(doc["version"]) is not int:
        raise InvalidValue("this is not asciicast version 2")
    env, meta, title = doc["env"], doc["secondline"], doc.get("title")
    if not isinstance(env, dict) or not set(env) <= {"TERM", "SHELL"}:
        raise InvalidValue("the header env holds something we do not write")
    if not isinstance(meta, dict) or set(meta) - {"format"} != _META_KEYS:
        raise InvalidValue("the header's secondline object is not ours")
    meta = dict(meta)
    version = FORMAT_TEXT
    if "format" in meta:  # written from format 2 on; format 1 has none
        version = meta.pop("format")
        if type(version) is not int or version != FORMAT_DENSE:
            raise InvalidValue("this transcript format is not one we read (1 or 2)")
    if not all(isinstance(v, str) for v in (*env.values(), *meta.values())):
        raise InvalidValue("the header holds a non-text value where text belongs")
    if title is not None and not _is_label(title, MAX_TITLE):
        raise InvalidValue("the header title has control characters or is too long")
    return CastHeader(
        width=doc["width"],
        height=doc["height"],
        timestamp=doc["timestamp"],
        session=SessionInfo(**meta),
        term=env.get("TERM"),
        shell=env.get("SHELL"),
        title=title,
        transcript_format=version,
    )


_META_KEYS: Final = frozenset({"session_id", "ticket", "agent", "staff"})


def event_from_json(
    doc: object, *, previous_time: float = 0.0, transcript_format: int = FORMAT_TEXT
) -> CastEvent:
    """Validate a decoded event array; :class:`InvalidValue` when it is not ours."""
    if not isinstance(doc, list) or len(doc) != 3:
        raise InvalidValue("an event is an array of time, code and data")
    time, code, data = doc
    if type(time) not in (int, float) or not (math.isfinite(time) and 0 <= time < MAX_TIME):
        raise InvalidValue("the event time is not a number of seconds")
    if not _is_code(code):
        raise InvalidValue("the event code is not o, b, i, a, r or m")
    if not isinstance(data, str):
        raise InvalidValue("the event data is not text")
    if time < previous_time:
        raise InvalidValue("the event time goes backwards")
    if code == "r":
        m = _SIZE_PATTERN.fullmatch(data)
        if m is None:
            raise InvalidValue("the resize data is not COLSxROWS")
        resize_data(int(m.group(1)), int(m.group(2)))
    elif code == "m" and not _is_label(data, MAX_LABEL):
        raise InvalidValue("the marker label has control characters or is too long")
    elif code == "b":
        if transcript_format < FORMAT_DENSE:
            raise InvalidValue("output as bytes (b) is not in format 1 transcripts")
        # Canonical base64 (padding, no line breaks) of 1 to MAX_OUTPUT_BYTES bytes: one
        # spelling per content, as every line has.
        if not (len(data) <= _B64_MAX and _is_canonical_base64(data)):
            raise InvalidValue("the output bytes are not canonical base64 of 1 to 65536 bytes")
    elif len(data) > MAX_EVENT_CHARS:
        raise InvalidValue("the event data is longer than we write")
    return CastEvent(float(time), code, data)


def parse_header_line(line: bytes) -> CastHeader:
    """Parse line 1 strictly (without its line end)."""
    doc = _load(line, 1, None)
    try:
        header = header_from_json(doc)
    except InvalidValue as exc:
        raise CastFormatError(str(exc), line=1, event=None) from None
    if encode_header_line(header) != line:
        raise CastFormatError("the header is not in canonical form", line=1, event=None)
    return header


def _is_canonical_base64(data: str) -> bool:
    try:
        raw = binascii.a2b_base64(data.encode("ascii"), strict_mode=True)
    except (UnicodeEncodeError, binascii.Error):
        return False
    # Unused padding bits must be zero: one spelling per content.
    canonical = binascii.b2a_base64(raw, newline=False) == data.encode("ascii")
    return canonical and 0 < len(raw) <= MAX_OUTPUT_BYTES


def parse_event_line(
    line: bytes, *, event: int, previous_time: float = 0.0, transcript_format: int = FORMAT_TEXT
) -> CastEvent:
    """Parse event number ``event`` (1-based; it sits on line ``event + 1``) strictly."""
    line_no = event + 1
    doc = _load(line, line_no, event)
    try:
        parsed = event_from_json(
            doc, previous_time=previous_time, transcript_format=transcript_format
        )
        canonical = encode_event_line(parsed.time, parsed.code, parsed.data)
    except InvalidValue as exc:
        raise CastFormatError(str(exc), line=line_no, event=event) from None
    if canonical != line:
        raise CastFormatError("the event is not in canonical form", line=line_no, event=event)
    return parsed


class CastReader:
    """Parse a ``.cast`` line by line, keeping the count and the time order."""

    def __init__(self) -> None:
        self.header: CastHeader | None = None
        self.events = 0
        self._last_time = 0.0

    def feed_line(self, line: bytes) -> CastHeader | CastEvent:
        """Parse the next line (without its line end)."""
        if self.header is None:
            self.header = parse_header_line(line)
            return self.header
        event = parse_event_line(
            line,
            event=self.events + 1,
            previous_time=self._last_time,
            transcript_format=self.header.transcript_format,
        )
        self.events += 1
        self._last_time = event.time
        return event


@dataclass(frozen=True, slots=True)
class RawLine:
    """One line read from a file: its bytes without ``\\n``, whether the ``\\n`` was there,
    and whether it was longer than :data:`MAX_LINE_BYTES` (then ``data`` is cut)."""

    data: bytes
    terminated: bool
    too_long: bool = False
    size: int = 0  # bytes the line takes in the file, line end included


def read_lines(fh: BinaryIO) -> Iterator[RawLine]:
    """Yield the lines of a binary file; stop after a line that is too long."""
    while True:
        raw = fh.readline(MAX_LINE_BYTES + 2)
        if not raw:
            return
        if raw.endswith(b"\n"):
            yield RawLine(raw[:-1], True, len(raw) - 1 > MAX_LINE_BYTES, len(raw))
            if len(raw) - 1 > MAX_LINE_BYTES:
                return
        elif len(raw) > MAX_LINE_BYTES:
            yield RawLine(raw, False, True, len(raw))
            return
        else:
            yield RawLine(raw, False, False, len(raw))
            return
