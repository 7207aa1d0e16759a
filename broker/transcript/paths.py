"""Where a session's transcript files live, from a validated session id only.

Every name is built from a session id that matches ``^s-[A-Za-z0-9]{22}$`` and must
resolve to a file directly under the transcript root; anything else is refused with
:class:`InvalidSessionId` before any file is touched. Files are opened with ``O_NOFOLLOW``
by the recorder, so a symlink planted at a transcript's name is refused too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from broker.transcript.asciicast import check_session_id
from broker.transcript.errors import InvalidSessionId

CAST_SUFFIX: Final = ".cast"
CHAIN_SUFFIX: Final = ".cast.chain"
SEAL_SUFFIX: Final = ".cast.seal.json"
_CAST_NAME: Final = re.compile(r"(s-[A-Za-z0-9]{22})\.cast")


@dataclass(frozen=True, slots=True)
class TranscriptPaths:
    """The three files of one session's transcript."""

    session_id: str
    cast: Path
    chain: Path
    seal: Path


def transcript_paths(root: Path, session_id: str) -> TranscriptPaths:
    """The files of ``session_id`` under ``root``; refuses ids or paths that escape it."""
    check_session_id(session_id)
    base = Path(root).resolve()
    paths = TranscriptPaths(
        session_id=session_id,
        cast=base / f"{session_id}{CAST_SUFFIX}",
        chain=base / f"{session_id}{CHAIN_SUFFIX}",
        seal=base / f"{session_id}{SEAL_SUFFIX}",
    )
    for path in (paths.cast, paths.chain, paths.seal):
        # Defence in depth: the pattern already excludes separators and "..".
        if path.parent != base or path.resolve().parent != base:
            raise InvalidSessionId("a transcript file would lie outside the transcript directory")
    return paths


def session_id_of(cast_path: Path) -> str:
    """The session id in a ``<session>.cast`` file name; refuses any other name."""
    m = _CAST_NAME.fullmatch(Path(cast_path).name)
    if m is None:
        raise InvalidSessionId("a transcript file is named s-<22 letters or digits>.cast")
    return m.group(1)


def sidecar_paths(cast_path: Path) -> tuple[Path, Path]:
    """``(chain, seal)`` beside any ``.cast`` file, for export copies named freely."""
    cast_path = Path(cast_path)
    return (
        cast_path.with_name(cast_path.name + ".chain"),
        cast_path.with_name(cast_path.name + ".seal.json"),
    )
