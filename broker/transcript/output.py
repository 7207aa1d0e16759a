"""Output events of format 2 transcripts: how the recorder writes them, how readers get the
text back, and the asciicast v2 copy that players read.

Format 2 (docs/transcripts.md, "Format versions") writes a block of output either as text,
``[t, "o", "…"]``, when it is valid UTF-8 and escaping it as JSON costs little, or as its
exact bytes in base64, ``[t, "b", "…"]``, when it is not valid UTF-8 or it is a large block
that JSON text would make larger than base64 does (``head -c 1G /dev/zero``: a NUL is six
bytes as JSON text, 4/3 of a byte in base64). Either way the record is the bytes as the
staff terminal received them; format 1 replaced an invalid byte by U+FFFD.

asciinema's player and ``asciinema cat`` know only ``o`` events: :func:`playable_cast` turns
a format 2 file into asciicast v2 (``b`` as ``o`` text, decoded as format 1 did) for
downloads and ticket notes; verification always reads the stored file.
"""

from __future__ import annotations

import binascii
import codecs
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Final

import pybase64

from broker.transcript.asciicast import (
    FORMAT_DENSE,
    MAX_EVENT_CHARS,
    MAX_LINE_BYTES,
    CastEvent,
    CastHeader,
    CastReader,
    RawLine,
    event_line_parts,
    parse_header_line,
    read_lines,
)
from broker.transcript.errors import CastFormatError, TranscriptNotFound

# Blocks smaller than this stay text whatever they hold (a prompt with its shell marks is
# mostly escapes): they cost little, and the .cast stays readable where a person looks.
DENSE_MIN_BYTES: Final = 4096
# Bytes JSON escapes as \u00XX (six bytes); \b \t \n \f \r take two and are left out.
_SIX_BYTE_CONTROLS: Final = bytes(b for b in range(0x20) if b not in b"\b\t\n\f\r")
# Bytes JSON escapes with a backslash and one letter.
_TWO_BYTE_ESCAPES: Final = b'\b\t\n\f\r"\\'
_SAMPLE: Final = 1024
_TEXT_END: Final = b"]"
_BYTES_END: Final = b'"]'


def output_event_parts(time: float, raw: bytes) -> tuple[bytes, bytes, bytes]:
    """Format 2: one output event for ``raw`` (at most MAX_EVENT_CHARS bytes) as
    ``(head, body, end)``; the line is their concatenation (without ``\\n``).

    Text when ``raw`` is valid UTF-8 and either small or no larger as JSON text than as
    base64 (its first KiB decides, so that a GB of zeros never goes through the JSON
    escaper); its exact bytes otherwise. Either form holds the same bytes: the choice
    changes only the cost and how readable the line is."""
    if len(raw) < DENSE_MIN_BYTES or not _looks_binary(raw[:_SAMPLE]):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            head, body = event_line_parts(time, "o", text)
            return head, body, _TEXT_END
    head = f'[{time:.6f}, "b", "'.encode("ascii")
    # pybase64: the same canonical base64 as binascii's, 40 times faster (SIMD).
    return head, pybase64.b64encode(raw), _BYTES_END


def _looks_binary(sample: bytes) -> bool:
    """Whether ``sample`` as JSON text would be larger than its base64 (4/3)."""
    six = len(sample) - len(sample.translate(None, _SIX_BYTE_CONTROLS))
    two = len(sample) - len(sample.translate(None, _TWO_BYTE_ESCAPES))
    return 3 * (len(sample) + 5 * six + two) > 4 * len(sample)


def output_bytes(event: CastEvent) -> bytes | None:
    """The bytes of an output event (``o`` text as UTF-8, ``b`` decoded); ``None`` for
    other events."""
    if event.code == "o":
        return event.data.encode("utf-8")
    if event.code == "b":
        return binascii.a2b_base64(event.data)
    return None


class OutputText:
    """The text of a transcript's output events, in order, for renderers: ``o`` as it is,
    ``b`` through one UTF-8 decoder (a character split across events stays whole, an
    invalid byte becomes U+FFFD, as format 1 recorded it)."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def text(self, event: CastEvent) -> str | None:
        """The text ``event`` adds to the output; ``None`` if it is not output."""
        if event.code == "b":
            return self._decoder.decode(binascii.a2b_base64(event.data))
        if event.code == "o":
            # An o event is whole text: bytes left over from a b event before it end there.
            rest = self._decoder.decode(b"", final=True)
            return rest + event.data if rest else event.data
        return None

    def finish(self) -> str:
        """What is left at the end (an incomplete character, as U+FFFD)."""
        return self._decoder.decode(b"", final=True)


def playable_lines(lines: Iterable[RawLine]) -> Iterator[bytes]:
    """The lines (with ``\\n``) of the asciicast v2 copy of a transcript read strictly:
    format 1 lines as they are; in format 2, ``b`` events become ``o`` text. Stops before a
    torn last line (a session still recording); a malformed line raises
    :class:`CastFormatError`."""
    reader = CastReader()
    output = OutputText()
    last = 0.0
    for raw in lines:
        if raw.too_long:
            line = reader.events + 2 if reader.header else 1
            raise CastFormatError("the line is too long", line=line, event=line - 1 or None)
        if not raw.terminated:
            break
        item = reader.feed_line(raw.data)
        if isinstance(item, CastHeader) or (text := output.text(item)) is None:
            yield raw.data + b"\n"
            continue
        last = item.time
        if text is item.data:  # text as recorded: the line as it is
            yield raw.data + b"\n"
        else:
            yield from _text_events(item.time, text)
    if reader.header is not None and reader.header.transcript_format >= FORMAT_DENSE:
        yield from _text_events(last, output.finish())


def playable_cast(cast_path: Path, max_bytes: int) -> bytes | None:
    """The asciicast v2 copy of the ``.cast`` at ``cast_path`` (see
    :func:`playable_lines`); ``None`` when it is larger than ``max_bytes``."""
    try:
        fh = open(cast_path, "rb")  # noqa: SIM115 - closed below
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise TranscriptNotFound(f"there is no transcript file at {cast_path}") from None
    with fh:
        if not _is_dense(fh.readline(MAX_LINE_BYTES + 1)):
            fh.seek(0)
            data = fh.read(max_bytes + 1)  # format 1 is asciicast v2 as it is
            return data if len(data) <= max_bytes else None
        fh.seek(0)
        parts: list[bytes] = []
        size = 0
        for line in playable_lines(read_lines(fh)):
            size += len(line)
            if size > max_bytes:
                return None
            parts.append(line)
    return b"".join(parts)


def playable_size(cast_path: Path, max_bytes: int) -> int | None:
    """The size of :func:`playable_cast`'s copy; ``None`` when it is larger than
    ``max_bytes``. A file without ``b`` events is served as stored: its size is read from
    the file system, and only a file with them is converted (up to ``max_bytes``)."""
    size = Path(cast_path).stat().st_size
    if size > max_bytes:
        return None  # judged by the stored size, as before format 2
    with open(cast_path, "rb") as fh:
        data = fh.read(max_bytes + 1)
    # Only event lines hold `, "b", "` with bare quotes: inside a JSON string a quote is \".
    if not _is_dense(data.split(b"\n", 1)[0]) or data.find(b', "b", "') < 0:
        return size
    converted = playable_cast(cast_path, max_bytes)
    return None if converted is None else len(converted)


def _is_dense(first_line: bytes) -> bool:
    try:
        header = parse_header_line(first_line.rstrip(b"\n"))
    except CastFormatError:
        return False  # served as it is, as format 1 always was
    return header.transcript_format >= FORMAT_DENSE


def _text_events(time: float, text: str) -> Iterator[bytes]:
    for start in range(0, len(text), MAX_EVENT_CHARS):
        head, body = event_line_parts(time, "o", text[start : start + MAX_EVENT_CHARS])
        yield head + body + b"]\n"
