"""Session transcripts: record, seal, verify and export asciicast v2 files.

The session hub uses, per session::

    parser = MarkParser()
    recorder = TranscriptRecorder(root, header, signing_key, started_at=now)
    forward, marks = parser.feed(chunk)          # every output chunk from the agent
    recorder.output(forward, now, marks)
    recorder.input(keystrokes, now)              # every staff keystroke
    recorder.resize(cols, rows, now); recorder.marker("consent approved by bob", now)
    recorder.flush()                             # at least once a second
    seal = recorder.seal(True, "ended", now); recorder.commands()

Modules: ``marks`` (shell marks parser, command tracker), ``asciicast`` (format),
``chain`` (digest chain, seal, chain file), ``recorder``, ``disk_writer`` (the
recorders' writer threads), ``file_writes``, ``seal_file``, ``recovery``, ``verify``,
``export``, ``output`` (format 2 output events, the asciicast v2 copy for players),
``render`` (plain text), ``keys``, ``paths``. Errors: see ``errors``; the root
is :class:`TranscriptError`, a :class:`broker.errors.BrokerError`. docs/transcripts.md
describes the files.
"""

from broker.transcript.asciicast import (
    FORMAT_DENSE,
    FORMAT_TEXT,
    CastEvent,
    CastHeader,
    SessionInfo,
)
from broker.transcript.chain import (
    END_AGENT_DISCONNECTED,
    END_DISK_FULL,
    END_ENDED,
    END_INTERRUPTED,
    END_KILLED,
    Seal,
)
from broker.transcript.disk_writer import DiskWriter
from broker.transcript.errors import (
    CastFormatError,
    InvalidSessionId,
    InvalidValue,
    KeyFormatError,
    RecorderClosed,
    RecorderDiskFull,
    RecorderError,
    RecorderWriteError,
    RecoveryError,
    SealFormatError,
    TranscriptError,
    TranscriptNotFound,
)
from broker.transcript.export import (
    OutputBudget,
    commands_from_cast,
    export_bundle,
    export_cast,
    export_text,
    text_blocks,
    text_lines,
)
from broker.transcript.keys import (
    load_public_key,
    load_signing_key,
    public_key_beside,
    public_key_document,
    public_key_fingerprint,
)
from broker.transcript.marks import (
    Command,
    CommandEnd,
    CommandLine,
    CommandStart,
    CommandTracker,
    InputStart,
    Mark,
    MarkParser,
    PromptStart,
)
from broker.transcript.output import playable_cast
from broker.transcript.paths import TranscriptPaths, transcript_paths
from broker.transcript.recorder import INPUT_HIDDEN_LABEL, TranscriptRecorder
from broker.transcript.recovery import find_unsealed, recover
from broker.transcript.render import commands_to_dicts, render_text
from broker.transcript.verify import (
    VerifyResult,
    verify_bundle,
    verify_path,
    verify_transcript,
    verify_transcript_bytes,
)

__all__ = [
    "END_AGENT_DISCONNECTED",
    "END_DISK_FULL",
    "END_ENDED",
    "END_INTERRUPTED",
    "END_KILLED",
    "FORMAT_DENSE",
    "FORMAT_TEXT",
    "INPUT_HIDDEN_LABEL",
    "CastEvent",
    "CastFormatError",
    "CastHeader",
    "Command",
    "CommandEnd",
    "CommandLine",
    "CommandStart",
    "CommandTracker",
    "DiskWriter",
    "InputStart",
    "InvalidSessionId",
    "InvalidValue",
    "KeyFormatError",
    "Mark",
    "MarkParser",
    "OutputBudget",
    "PromptStart",
    "RecorderClosed",
    "RecorderDiskFull",
    "RecorderError",
    "RecorderWriteError",
    "RecoveryError",
    "Seal",
    "SealFormatError",
    "SessionInfo",
    "TranscriptError",
    "TranscriptNotFound",
    "TranscriptPaths",
    "TranscriptRecorder",
    "VerifyResult",
    "commands_from_cast",
    "commands_to_dicts",
    "export_bundle",
    "export_cast",
    "export_text",
    "find_unsealed",
    "load_public_key",
    "load_signing_key",
    "playable_cast",
    "public_key_beside",
    "public_key_document",
    "public_key_fingerprint",
    "recover",
    "render_text",
    "text_blocks",
    "text_lines",
    "transcript_paths",
    "verify_bundle",
    "verify_path",
    "verify_transcript",
    "verify_transcript_bytes",
]
