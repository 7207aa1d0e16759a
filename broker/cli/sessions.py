"""Commands for remote sessions and their transcripts:

secondline session list [--live] [--ticket T] [--limit N] [--ids|--json] | show ID [--json]
secondline session kill ID [--reason TEXT] [--json]
secondline transcript export SESSION [--format cast|txt|json] [-o FILE]
secondline transcript verify SESSION|FILE [--public-key KEY] [--json]
secondline transcript public-key [--json]

``export`` writes what offline verification needs: for ``cast``, the seal and the chain file
beside the copy (``FILE.seal.json``, ``FILE.chain``); ``json`` is a bundle that holds
everything; both get the broker's public key and its fingerprint beside them
(``FILE.pub.pem``). ``verify`` checks a file, or a session (its files on the broker host with
``--data-dir``, else its bundle from the API), against the broker's public key: from
``--public-key``, the data dir, the ``FILE.pub.pem`` beside a file, or the API. A file
verifies with no broker and no data dir. Exit status: 0 valid (also when cut short, which it
says), 1 invalid (naming the first bad event), 2 incomplete (no seal).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote, urlencode

from broker.cli.client import CliError
from broker.cli.runtime import Runtime, add_json
from broker.config import BrokerConfig, load_config
from broker.errors import BrokerError
from broker.rules import InvalidName, parse_session_id, parse_ticket_ref
from broker.rules.outside_text import escape_controls

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from broker.transcript import VerifyResult

LIST_COLUMNS = ["id", "ticket", "agent_name", "owner", "via", "state", "started_at", "ended_at"]
SHOW_FIELDS = [
    "id",
    "ticket",
    "agent_name",
    "agent_id",
    "owner",
    "kind",
    "command",
    "via",
    "state",
    "consent",
    "consent_by",
    "created_at",
    "started_at",
    "ended_at",
    "end_reason",
    "ended_by",
    "exit_status",
    "exit_signal",
    "transcript_digest",
    "transcript_complete",
]
EXIT_INVALID = 1
EXIT_INCOMPLETE = 2


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    session = sub.add_parser("session", help="remote sessions").add_subparsers(
        dest="sub", required=True
    )
    p = session.add_parser("list", help="list sessions, newest first")
    p.add_argument("--live", action="store_true", help="only sessions that have not ended")
    p.add_argument("--ticket", default=None, help="only the sessions of this ticket")
    p.add_argument("--ids", action="store_true", help="print only the ids, one a line")
    p.add_argument(
        "--limit", type=int, default=None, metavar="N", help="at most N (1-500; default 100)"
    )
    add_json(p)
    p.set_defaults(handler=session_list)
    p = session.add_parser("show", help="show a session: participants, commands, digest")
    p.add_argument("id")
    add_json(p)
    p.set_defaults(handler=session_show)
    p = session.add_parser("kill", help="end a live session now (its transcript is sealed)")
    p.add_argument("id")
    p.add_argument(
        "--reason",
        default=None,
        help="why, in one line: shown to the participants, kept in the transcript, the "
        "ticket's note and the audit log",
    )
    add_json(p)
    p.set_defaults(handler=session_kill)

    transcript = sub.add_parser("transcript", help="session transcripts").add_subparsers(
        dest="sub", required=True
    )
    p = transcript.add_parser("export", help="save a transcript, with what verifies it")
    p.add_argument("session")
    p.add_argument("--format", choices=["cast", "txt", "json"], default="cast")
    p.add_argument("-o", "--output", default=None, metavar="FILE")
    p.set_defaults(handler=transcript_export)
    p = transcript.add_parser("verify", help="check a transcript's seal and chain offline")
    p.add_argument("target", metavar="SESSION|FILE")
    p.add_argument(
        "--public-key",
        default=None,
        metavar="KEY",
        help="the broker's public key (PEM or ssh-ed25519), as `transcript public-key` prints it",
    )
    add_json(p)
    p.set_defaults(handler=transcript_verify)
    p = transcript.add_parser(
        "public-key", help="print the key transcripts are signed with, and its fingerprint"
    )
    add_json(p)
    p.set_defaults(handler=transcript_public_key)


def _session_id(text: str) -> str:
    try:
        return parse_session_id(text)
    except InvalidName as exc:
        raise CliError(exc.message) from None


def session_list(rt: Runtime) -> int:
    query = []
    if rt.args.live:
        query.append("live=1")
    if rt.args.ticket:
        try:
            query.append(f"ticket=T-{parse_ticket_ref(rt.args.ticket)}")
        except InvalidName as exc:
            raise CliError(exc.message) from None
    if rt.args.limit is not None:
        if not 1 <= rt.args.limit <= 500:
            raise CliError("--limit must be from 1 to 500")
        query.append(f"limit={rt.args.limit}")
    path = "/sessions" + ("?" + "&".join(query) if query else "")
    data = rt.api.request("GET", path)
    if rt.args.ids and not rt.json and isinstance(data, list):
        for row in data:
            print(row.get("id") if isinstance(row, dict) else row)
        return 0
    rt.show_list(data, LIST_COLUMNS)
    return 0


def session_show(rt: Runtime) -> int:
    data = rt.api.request("GET", f"/sessions/{quote(_session_id(rt.args.id))}")
    if rt.json:
        rt.show_one(data)
        return 0
    if not isinstance(data, dict):
        raise CliError("the broker sent an unexpected answer")
    rt.show_one(data, SHOW_FIELDS)
    print("participants:")
    for p in data.get("participants") or []:
        left = p.get("left_at") or "-"
        print(f"  {p.get('name')} ({p.get('role')}, {p.get('via')}) {p.get('joined_at')} - {left}")
    print("commands:")
    for c in data.get("commands") or []:
        status = "?" if c.get("exit_status") is None else c.get("exit_status")
        line = escape_controls(str(c.get("command", "")))
        print(f"  [exit {status}] {line}")
    return 0


def session_kill(rt: Runtime) -> int:
    path = f"/sessions/{quote(_session_id(rt.args.id))}/kill"
    if rt.args.reason is not None:
        path += "?" + urlencode({"reason": rt.args.reason})
    data = rt.api.request("POST", path)
    if rt.json:
        rt.show_one(data)
    else:
        print(f"Session {rt.args.id} ended; its transcript is sealed.")
    return 0


def _fetch(rt: Runtime, session_id: str, fmt: str) -> dict[str, object]:
    data = rt.api.request("GET", f"/sessions/{quote(session_id)}/transcript?format={fmt}")
    if not isinstance(data, dict) or not isinstance(data.get("content"), str):
        raise CliError("the broker sent an unexpected answer")
    return data


def _write(path: Path, data: bytes) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
    except OSError as exc:
        raise CliError(f"cannot write {path} ({exc.strerror})") from None


def transcript_export(rt: Runtime) -> int:
    from broker.transcript import public_key_beside, public_key_document, public_key_fingerprint

    session_id = _session_id(rt.args.session)
    fmt = rt.args.format
    data = _fetch(rt, session_id, fmt)
    out = Path(rt.args.output or f"{session_id}.{fmt}")
    content = str(data["content"]).encode("utf-8")
    written = [out]
    _write(out, content)
    if fmt == "cast":
        seal = data.get("seal")
        if isinstance(seal, dict):
            seal_path = out.with_name(out.name + ".seal.json")
            _write(seal_path, json.dumps(seal, indent=2).encode("ascii") + b"\n")
            written.append(seal_path)
        chain = data.get("chain")
        if isinstance(chain, str):
            chain_path = out.with_name(out.name + ".chain")
            _write(chain_path, chain.encode("ascii"))
            written.append(chain_path)
        written += _export_kept_files(rt, session_id, out)
    if fmt == "txt":
        print(f"Wrote {out}", file=sys.stderr)
        print(
            "The text rendering is not signed; verify the cast or json export instead.",
            file=sys.stderr,
        )
        return 0
    # An auditor elsewhere has no broker to ask: the key travels with the file.
    key = _broker_public_key(rt)
    key_path = public_key_beside(out)
    _write(key_path, public_key_document(key).encode("ascii"))
    written.append(key_path)
    print(f"Wrote {', '.join(str(p) for p in written)}", file=sys.stderr)
    print(
        f"Signed by the key with fingerprint {public_key_fingerprint(key)}; "
        f"verify anywhere with: secondline transcript verify {out}",
        file=sys.stderr,
    )
    return 0


def _export_kept_files(rt: Runtime, session_id: str, out: Path) -> list[Path]:
    """The content an SFTP session kept (its markers' ``kept=N``), into ``OUT.files/``:
    verify checks it against the signed markers."""
    from broker.transcript.kept_files import kept_claims, kept_dir

    claims = kept_claims(out)
    if not claims:
        return []
    directory = kept_dir(out)
    try:
        directory.mkdir(mode=0o700, exist_ok=True)
    except OSError as exc:
        raise CliError(f"cannot make {directory} ({exc.strerror})") from None
    for _, number, _, _ in claims:
        body = rt.api.download(f"/files/sessions/{quote(session_id)}/files/{number}")
        _write(directory / str(number), body)
    return [directory]


def _data_dir_key(rt: Runtime) -> Ed25519PublicKey | None:
    """The public half of the broker's signing key, on the broker host."""
    from broker.transcript import KeyFormatError, load_public_key

    data_dir = rt.args.data_dir or rt.env.get("SECONDLINE_DATA_DIR")
    if not data_dir:
        return None
    try:
        return load_public_key(Path(data_dir) / "keys" / "transcript_ed25519.pem")
    except KeyFormatError:
        return None


def _broker_public_key(rt: Runtime) -> Ed25519PublicKey:
    """The broker's key from the data dir, else from its API (a public endpoint)."""
    from broker.transcript import KeyFormatError, load_public_key

    local = _data_dir_key(rt)
    if local is not None:
        return local
    data = rt.api.request("GET", "/transcripts/public-key", auth=False)
    if not isinstance(data, dict) or not isinstance(data.get("pem"), str):
        raise CliError("the broker did not give its transcript key; pass --public-key KEY")
    try:
        return load_public_key(str(data["pem"]).encode("ascii"))
    except KeyFormatError as exc:
        raise CliError(f"the broker's transcript key is not usable: {exc.message}") from None


def transcript_public_key(rt: Runtime) -> int:
    from broker.transcript import public_key_document, public_key_fingerprint

    key = _broker_public_key(rt)
    if rt.json:
        pem = public_key_document(key).split("\n", 2)[2]
        print(json.dumps({"pem": pem, "fingerprint": public_key_fingerprint(key)}, indent=2))
    else:
        print(public_key_document(key), end="")
    return 0


@dataclass(frozen=True)
class _KeyChoice:
    key: Ed25519PublicKey
    beside: Path | None = None  # set when the key was the copy that travelled with the file


def _verify_key(rt: Runtime, file: Path | None) -> _KeyChoice:
    """--public-key, else the data dir, else the key beside the file, else the API."""
    from broker.transcript import KeyFormatError, load_public_key, public_key_beside

    if rt.args.public_key:
        try:
            return _KeyChoice(load_public_key(Path(rt.args.public_key)))
        except KeyFormatError as exc:
            raise CliError(f"the public key is not usable: {exc.message}") from None
    local = _data_dir_key(rt)
    if local is not None:
        return _KeyChoice(local)
    if file is not None:
        beside = public_key_beside(file)
        if beside.is_file():
            try:
                return _KeyChoice(load_public_key(beside), beside)
            except KeyFormatError as exc:
                raise CliError(f"{beside} is not usable: {exc.message}") from None
        try:
            rt.api  # noqa: B018 - resolves the connection, or says none is configured
        except CliError:
            raise CliError(
                f"no public key to verify {file} with: pass --public-key KEY (the broker "
                "prints it with `secondline transcript public-key`), or keep the "
                f"{beside.name} that `transcript export` wrote beside it"
            ) from None
    return _KeyChoice(_broker_public_key(rt))


def _verify_on_host(rt: Runtime, session_id: str, key: Ed25519PublicKey) -> VerifyResult | None:
    """Verify a session from the broker host's data dir, without the API; None when the
    data dir has no copy of it (the API is asked then).

    Its files when they are sealed (no database needed), and on SQLite. On PostgreSQL the
    database may hold the sealed copy while the files here are unsealed: the session was
    recorded here by a node that died, and another node sealed it from the database's
    copy (docs/cluster.md). So the copy is chosen as the broker chooses it for playback
    (the shared store's ``opened``): the files when sealed, else the database's sealed
    copy, else the files (incomplete)."""
    from broker.transcript import verify_path
    from broker.transcript.store import sealed_here

    data_dir = rt.args.data_dir or rt.env.get("SECONDLINE_DATA_DIR")
    if not data_dir:
        return None
    try:
        config = load_config(Path(data_dir), rt.env)
    except BrokerError:
        return None
    cast = config.transcripts_dir / f"{session_id}.cast"
    if config.db_url.startswith("postgresql") and not sealed_here(
        config.transcripts_dir, session_id
    ):
        return asyncio.run(_verify_shared(config, session_id, key))
    return verify_path(cast, key) if cast.is_file() else None


async def _verify_shared(
    config: BrokerConfig, session_id: str, key: Ed25519PublicKey
) -> VerifyResult | None:
    from broker.db.engine import create_engine, session_factory
    from broker.transcript import transcript_paths, verify_path
    from broker.transcript.store import DatabaseStore

    engine = create_engine(config.db_url, schema=config.database_schema or None)
    store = DatabaseStore(
        config.transcripts_dir,
        config.data_dir / "transcript-scratch",
        session_factory(engine),
        config.node or "single",
    )
    try:
        async with store.opened(session_id) as root:
            cast = transcript_paths(root, session_id).cast
            if not cast.is_file():
                return None
            return await asyncio.to_thread(verify_path, cast, key)
    except OSError as exc:
        raise CliError(f"cannot reach the database ({exc.strerror}); is it running?") from None
    finally:
        await engine.dispose()


def transcript_verify(rt: Runtime) -> int:
    from broker.transcript import TranscriptError, verify_path
    from broker.transcript.verify import verify_bundle_bytes

    target = rt.args.target
    file = Path(target) if Path(target).exists() else None
    choice = _verify_key(rt, file)
    result: VerifyResult
    try:
        if file is not None:
            result = verify_path(file, choice.key)
        else:
            session_id = _session_id(target)
            on_host = _verify_on_host(rt, session_id, choice.key)
            if on_host is not None:
                result = on_host
            else:
                bundle = _fetch(rt, session_id, "json")
                result = verify_bundle_bytes(str(bundle["content"]).encode("utf-8"), choice.key)
    except TranscriptError as exc:
        raise CliError(exc.message) from None
    if rt.json:
        doc = result.to_json()
        doc["key_source"] = str(choice.beside) if choice.beside else "given"
        print(json.dumps(doc, indent=2))
    else:
        print(verdict(result, choice.beside))
    if result.ok:
        return 0
    return EXIT_INCOMPLETE if result.status == "incomplete" else EXIT_INVALID


def verdict(result: VerifyResult, key_beside: Path | None = None) -> str:
    """What ``verify`` prints: the verdict and the sentence, then the digest of a transcript
    that verified (a changed one has no digest worth quoting: its first bad event is named),
    then where the key came from when it travelled with the file."""
    if result.status == "valid":
        head = "valid"
    elif result.status == "valid_cut_short":
        reason = result.seal.end_reason if result.seal else "cut short"
        head = f"valid, but cut short ({reason})"
    elif result.status == "incomplete":
        head = "incomplete"
    elif result.first_bad_event is not None:
        head = f"INVALID, first bad event {result.first_bad_event}"
        if result.first_bad_line is not None:
            head += f" (line {result.first_bad_line})"
    else:
        head = "INVALID"
    lines = [f"{head}: {result.message}"]
    if result.ok and result.seal is not None:
        lines.append(f"digest {result.seal.final_hash}")
    if key_beside is not None and result.seal is not None:
        lines.append(
            f"The key was read from {key_beside}, which travelled with the transcript: check "
            f"that {result.seal.key_fingerprint} is your broker's fingerprint "
            "(`secondline transcript public-key`), or pass --public-key."
        )
    return "\n".join(lines)
