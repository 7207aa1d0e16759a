"""Exports of a recorded transcript: the ``.cast`` with its seal, a self-verifying JSON
bundle, the plain-text rendering, and the command list.

- :func:`export_cast` copies ``FILE.cast`` and writes ``FILE.cast.seal.json`` (and the
  chain file ``FILE.cast.chain``) beside it: ``verify FILE.cast`` works on the copy.
- :func:`export_bundle` writes one JSON document::

      {"format": "secondline-transcript-bundle", "version": 1,
       "header": {...}, "seal": {...} | null, "chain": ["<h0>", "<h1>", ...],
       "events": [[time, code, data], ...]}

  Each header and event re-encodes to exactly the line that was chained and signed (the
  ``.cast`` encoding is canonical), so :func:`~broker.transcript.verify.verify_bundle`
  needs nothing else. ``chain`` holds the digests recorded while writing (the chain file),
  completed from the content where that file is missing, to locate a changed event.
- :func:`export_text` writes the plain-text rendering, markers as ``[hh:mm:ss] label`` lines.
- :func:`commands_from_cast` re-derives the command list from the output events (the shell
  marks stay in the output), e.g. after a crash.

Exports read the ``.cast`` strictly and stop before a torn last line (a session still being
recorded); a malformed line raises :class:`CastFormatError`: export the raw file instead.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final, TextIO

from broker.secret_scrubber import LineScrubber
from broker.transcript.asciicast import CastEvent, CastHeader, CastReader, read_lines
from broker.transcript.chain import MAX_SEAL_FILE, ChainFileReader, DigestChain
from broker.transcript.errors import CastFormatError, TranscriptNotFound
from broker.transcript.kept_files import kept_dir
from broker.transcript.marks import Command, CommandTracker, MarkParser
from broker.transcript.output import OutputText, output_bytes
from broker.transcript.paths import sidecar_paths
from broker.transcript.render import TextRenderer
from broker.transcript.verify import BUNDLE_FORMAT, BUNDLE_VERSION


def _open_cast(cast_path: Path) -> Iterator[tuple[bytes, CastHeader | CastEvent]]:
    try:
        fh = open(cast_path, "rb")  # noqa: SIM115 - closed by the generator's finally
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise TranscriptNotFound(f"there is no transcript file at {cast_path}") from None
    try:
        reader = CastReader()
        for raw in read_lines(fh):
            if raw.too_long:
                line = reader.events + 2 if reader.header else 1
                raise CastFormatError("the line is too long", line=line, event=line - 1 or None)
            if not raw.terminated:
                return
            yield raw.data, reader.feed_line(raw.data)
        if reader.header is None:
            raise CastFormatError("the file is empty", line=1, event=None)
    finally:
        fh.close()


def read_cast(cast_path: Path) -> tuple[CastHeader, Iterator[CastEvent]]:
    """The header and (lazily) the events of a ``.cast`` file, parsed strictly."""
    items = _open_cast(cast_path)
    first = next(items, None)
    if first is None or not isinstance(first[1], CastHeader):  # pragma: no cover - see above
        raise CastFormatError("the file has no header", line=1, event=None)

    def events() -> Iterator[CastEvent]:
        for _, item in items:
            assert isinstance(item, CastEvent)
            yield item

    return first[1], events()


def export_cast(cast_path: Path, out_path: Path) -> list[Path]:
    """Copy the ``.cast`` to ``out_path`` with its seal and chain file beside; return them."""
    cast_path, out_path = Path(cast_path), Path(out_path)
    if not cast_path.is_file():
        raise TranscriptNotFound(f"there is no transcript file at {cast_path}")
    written = [out_path]
    shutil.copyfile(cast_path, out_path)
    for source, target in zip(sidecar_paths(cast_path), sidecar_paths(out_path), strict=True):
        if source.is_file():
            shutil.copyfile(source, target)
            written.append(target)
    kept = kept_dir(cast_path)
    if kept.is_dir():  # file content kept with an SFTP session: verify checks it too
        shutil.copytree(kept, kept_dir(out_path), dirs_exist_ok=True)
        written.append(kept_dir(out_path))
    return written


def _open_chain(cast_path: Path) -> BinaryIO | None:
    try:
        return open(sidecar_paths(cast_path)[0], "rb")
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None


def _read_seal_json(seal_file: Path) -> object:
    try:
        with open(seal_file, "rb") as fh:
            seal = json.loads(fh.read(MAX_SEAL_FILE + 1))
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None  # the bundle then verifies as unsealed, as the files would not verify
    if isinstance(seal, dict) and seal.get("pending") is True:
        return None
    return seal


def export_bundle(cast_path: Path, out_path: Path, seal_path: Path | None = None) -> None:
    """Write the self-verifying JSON bundle of a transcript to ``out_path``."""
    cast_path = Path(cast_path)
    seal = _read_seal_json(Path(seal_path or sidecar_paths(cast_path)[1]))
    chain_file = _open_chain(cast_path)
    try:
        recorded = ChainFileReader(chain_file) if chain_file is not None else None
        with open(out_path, "w", encoding="utf-8") as out:
            chain: DigestChain | None = None
            for line, item in _open_cast(cast_path):
                if chain is None:
                    assert isinstance(item, CastHeader)
                    chain = DigestChain(line)
                    if recorded is not None and recorded.session_id != item.session.session_id:
                        recorded = None  # another session's chain file: use the content's
                    _start_bundle(out, item, seal)
                    digest = recorded.h0 if recorded is not None else None
                    out.write(json.dumps((digest or chain.h0).hex()))
                else:
                    computed = chain.add(line)
                    digest = recorded.next_digest() if recorded is not None else None
                    out.write(", " + json.dumps((digest or computed).hex()))
            out.write('], "events": [')
            separator = ""
            for _, item in _open_cast(cast_path):
                if isinstance(item, CastEvent):
                    out.write(separator + _event_json(item))
                    separator = ", "
            out.write("]}\n")
    finally:
        if chain_file is not None:
            chain_file.close()


def _start_bundle(out: TextIO, header: CastHeader, seal: object) -> None:
    out.write(
        f'{{"format": "{BUNDLE_FORMAT}", "version": {BUNDLE_VERSION}, '
        f'"header": {json.dumps(header.to_json(), ensure_ascii=False)}, '
        f'"seal": {json.dumps(seal)}, "chain": ['
    )


def _event_json(event: CastEvent) -> str:
    return json.dumps([event.time, event.code, event.data], ensure_ascii=False)


def _clock(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 3600:02d}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def text_lines(cast_path: Path, *, markers: bool = True) -> Iterator[str]:
    """The plain-text rendering, line by line (no line ends).

    A marker that comes while a line is half drawn (a password prompt, say) follows that
    line, so that it does not split it. Secrets are replaced (see
    :mod:`broker.secret_scrubber`): the ``.cast`` is the unaltered record.
    """
    for block in text_blocks(cast_path, markers=markers):
        yield from block


@dataclass
class OutputBudget:
    """How much of a session's output a rendering may take in: ``spent`` once it stopped
    for it. Output is not text: a session that printed a gigabyte of zeros or of escape
    sequences renders to almost nothing, and a reader that stops at so much *text* read it
    all (the ticket note's ``.txt`` rendered a 300 MB transfer whole, seconds of CPU per
    note beside the next session's relay)."""

    chars: int
    spent: bool = False


def text_blocks(
    cast_path: Path, *, markers: bool = True, budget: OutputBudget | None = None
) -> Iterator[list[str]]:
    """:func:`text_lines` in lists (those one event completes): for readers that measure
    or join many lines at once, without a Python step per line. With a ``budget``, it stops
    once the output taken in passes ``budget.chars`` and sets ``budget.spent``."""
    _, events = read_cast(cast_path)
    renderer = TextRenderer()
    scrubber = LineScrubber()
    for block in _rendered_blocks(events, renderer, markers, budget):
        cleaned = list(scrubber.lines(block))
        if cleaned:
            yield cleaned


def _rendered_blocks(
    events: Iterator[CastEvent],
    renderer: TextRenderer,
    markers: bool,
    budget: OutputBudget | None = None,
) -> Iterator[list[str]]:
    waiting: list[str] = []
    output = OutputText()
    for event in events:
        text = output.text(event)
        if text is not None:
            lines = renderer.feed(text)
            if lines and waiting:
                lines[1:1] = waiting
                waiting = []
            if lines:
                yield lines
            if budget is not None:
                budget.chars -= len(text)
                if budget.chars < 0:
                    budget.spent = True
                    break
        elif event.code == "m" and markers:
            label = f"[{_clock(event.time)}] {event.data}"
            if renderer.partial:
                waiting.append(label)
            else:
                yield [label]
    if rest := output.finish():
        lines = renderer.feed(rest)
        if lines:
            yield lines
    last = renderer.finish()
    if last:
        yield last
    if waiting:
        yield waiting


def export_text(cast_path: Path, out_path: Path, *, markers: bool = True) -> None:
    """Write the plain-text rendering of a transcript to ``out_path``."""
    with open(out_path, "w", encoding="utf-8") as out:
        for line in text_lines(cast_path, markers=markers):
            out.write(line + "\n")


def commands_from_cast(cast_path: Path) -> tuple[Command, ...]:
    """The commands run in a recorded session, from the shell marks in its output."""
    _, events = read_cast(cast_path)
    parser = MarkParser()
    tracker = CommandTracker(0.0)
    last = 0.0
    for event in events:
        last = event.time
        data = output_bytes(event)
        if data is not None:
            forward, marks = parser.feed(data)
            tracker.observe(forward, marks, event.time)
    tracker.observe(parser.close(), [], last)
    return tracker.finish(last)


FILE_MARKER_PREFIX: Final = "file "


def files_from_cast(cast_path: Path) -> tuple[str, ...]:
    """The file operations of a recorded session (SFTP): its ``file …`` markers, in order
    (their form: broker.sessions.sftp_tracker.FileEvent.label, docs/transcripts.md)."""
    _, events = read_cast(cast_path)
    return tuple(
        event.data[len(FILE_MARKER_PREFIX) :]
        for event in events
        if event.code == "m" and event.data.startswith(FILE_MARKER_PREFIX)
    )
