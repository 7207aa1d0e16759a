"""Offline verification: statuses, tamper detection naming the first bad event, bundles."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, replace

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.transcript.asciicast import (
    CastHeader,
    SessionInfo,
    encode_event_line,
    encode_header_line,
)
from broker.transcript.chain import (
    DigestChain,
    chain_entry,
    chain_header_line,
    padded_seal,
    pending_placeholder,
    sign_seal,
)
from broker.transcript.keys import public_key_fingerprint
from broker.transcript.verify import VerifyResult, verify_bundle_bytes, verify_transcript_bytes

SID = "s-" + "v" * 22
KEY = Ed25519PrivateKey.from_private_bytes(b"\x07" * 32)
OTHER = Ed25519PrivateKey.from_private_bytes(b"\x08" * 32)
HEADER = CastHeader(
    width=80,
    height=24,
    timestamp=1700000000,
    session=SessionInfo(session_id=SID, ticket="T-7", agent="web01", staff="alice"),
    term="xterm",
)
EVENTS = [
    (0.1, "o", "$ "),
    (0.5, "i", "l"),
    (0.6, "o", "l"),
    (0.9, "i", "s\r"),
    (1.0, "o", "s\r\nfile\r\n"),
    (2.0, "m", "participant joined: carol (observer)"),
    (2.5, "r", "100x30"),
]


@dataclass
class Files:
    lines: list[bytes]
    seal: bytes | None
    chain: bytes | None

    @property
    def cast(self) -> bytes:
        return b"".join(line + b"\n" for line in self.lines)

    def verify(self, key: Ed25519PrivateKey = KEY) -> VerifyResult:
        return verify_transcript_bytes(
            self.cast, key.public_key(), seal=self.seal, chain=self.chain
        )


def chain_of(lines: list[bytes], session_id: str = SID) -> tuple[bytes, bytes]:
    chain = DigestChain(lines[0])
    data = chain_header_line(session_id, chain.h0)
    for line in lines[1:]:
        data += chain_entry(chain.add(line))
    return data, chain.head


def build(
    events: list[tuple[float, str, str]] = EVENTS,
    *,
    complete: bool = True,
    reason: str = "ended",
    key: Ed25519PrivateKey = KEY,
) -> Files:
    lines = [encode_header_line(HEADER)] + [encode_event_line(*e) for e in events]
    chain, head = chain_of(lines)
    seal = sign_seal(
        session_id=SID,
        event_count=len(events),
        final_hash=head,
        complete=complete,
        end_reason=reason,
        now=1700000100,
        key=key,
    )
    return Files(lines, padded_seal(seal), chain)


def reseal(files: Files, key: Ed25519PrivateKey, **changes: object) -> bytes:
    chain = DigestChain(files.lines[0])
    for line in files.lines[1:]:
        chain.add(line)
    fields: dict[str, object] = {
        "session_id": SID,
        "event_count": chain.count,
        "final_hash": chain.head,
        "complete": True,
        "end_reason": "ended",
        "now": 1700000200,
        "key": key,
    }
    fields.update(changes)
    return padded_seal(sign_seal(**fields))  # type: ignore[arg-type]


def test_valid_transcript() -> None:
    """An untouched, completely recorded transcript is valid."""
    result = build().verify()
    assert result.status == "valid"
    assert result.ok
    assert result.first_bad_event is None
    assert result.event_count == len(EVENTS)
    assert result.session_id == SID
    assert result.seal is not None
    assert "authentic and complete" in result.message
    doc = result.to_json()
    assert doc["digest"] == result.seal.final_hash
    assert doc["complete"] is True


def test_cut_short_transcript() -> None:
    """A transcript sealed as incomplete (disk full) is valid but cut short."""
    result = build(complete=False, reason="disk full").verify()
    assert result.status == "valid_cut_short"
    assert result.ok
    assert "disk full" in result.message


def test_empty_session_is_valid() -> None:
    """A session with no events seals and verifies."""
    assert build([]).verify().status == "valid"


def test_missing_seal_is_incomplete_never_valid() -> None:
    """Without a seal, or with the pending placeholder, the status is incomplete."""
    files = build()
    for seal in (None, pending_placeholder()):
        result = replace(files, seal=seal).verify()
        assert result.status == "incomplete"
        assert not result.ok
        assert result.to_json()["digest"] is None


def test_unsealed_torn_tail_is_incomplete() -> None:
    """A crash-torn last line without a seal is incomplete, pointing at recovery."""
    files = replace(build(), seal=None)
    result = verify_transcript_bytes(files.cast[:-5], KEY.public_key(), chain=files.chain)
    assert result.status == "incomplete"
    assert "recovery" in result.message


def test_unsealed_altered_is_invalid() -> None:
    """An unsealed transcript that differs from its chain file is invalid, not incomplete."""
    files = replace(build(), seal=None)
    files.lines[3] = encode_event_line(0.6, "o", "X")
    result = files.verify()
    assert result.status == "invalid"
    assert result.first_bad_event == 3


def test_unsealed_malformed_is_invalid() -> None:
    """An unsealed transcript with a malformed complete line is invalid."""
    files = replace(build(), seal=None, chain=None)
    files.lines[2] = b"garbage"
    result = files.verify()
    assert (result.status, result.first_bad_event, result.first_bad_line) == ("invalid", 2, 3)


@pytest.mark.parametrize("event", range(1, len(EVENTS) + 1))
def test_changed_byte_names_the_event(event: int) -> None:
    """Changing one byte of any event names that event."""
    files = build()
    line = bytearray(files.lines[event])
    position = line.index(b'"', line.index(b'"') + 3) - 1  # inside the data string
    line[position] = ord("Z") if line[position] != ord("Z") else ord("Y")
    files.lines[event] = bytes(line)
    result = files.verify()
    assert result.status == "invalid"
    assert result.first_bad_event == event
    assert result.first_bad_line == event + 1
    assert f"event {event}" in result.message


def test_changed_header_names_line_one() -> None:
    """A changed header is named as line 1."""
    files = build()
    files.lines[0] = files.lines[0].replace(b"alice", b"mallo")
    result = files.verify()
    assert result.status == "invalid"
    assert (result.first_bad_event, result.first_bad_line) == (None, 1)
    assert "header" in result.message


def test_deleted_line_names_the_event() -> None:
    """Deleting an event's line names the event that is gone."""
    files = build()
    del files.lines[3]
    result = files.verify()
    assert (result.status, result.first_bad_event) == ("invalid", 3)


def test_deleted_line_without_chain_file_is_invalid_unnamed() -> None:
    """Without a chain file a deleted line is still invalid, without a name."""
    files = replace(build(), chain=None)
    del files.lines[3]
    result = files.verify()
    assert result.status == "invalid"
    assert result.first_bad_event is None
    assert "cannot be named" in result.message


def test_swapped_lines_name_the_first() -> None:
    """Swapping two lines names the first of them."""
    files = build()
    files.lines[2], files.lines[4] = files.lines[4], files.lines[2]
    result = files.verify()
    assert (result.status, result.first_bad_event) == ("invalid", 2)


def test_swapped_lines_without_chain_file_are_invalid() -> None:
    """Without a chain file swapped lines are invalid (time order or the chain)."""
    files = replace(build(), chain=None)
    files.lines[1], files.lines[2] = files.lines[2], files.lines[1]
    assert files.verify().status == "invalid"


def test_cut_tail_mid_line_names_the_cut_event() -> None:
    """Cutting the file inside a line names that event."""
    files = build()
    cast = files.cast
    cut = cast[: cast.index(files.lines[5]) + 4]
    result = verify_transcript_bytes(cut, KEY.public_key(), seal=files.seal, chain=files.chain)
    assert (result.status, result.first_bad_event) == ("invalid", 5)
    assert "cut" in result.message


def test_cut_tail_at_line_end_names_the_first_missing_event() -> None:
    """Removing whole last lines names the first missing event."""
    files = build()
    del files.lines[5:]
    result = files.verify()
    assert (result.status, result.first_bad_event, result.first_bad_line) == ("invalid", 5, 6)
    assert "missing" in result.message


def test_appended_event_is_named() -> None:
    """An event added after sealing is named."""
    files = build()
    files.lines.append(encode_event_line(9.0, "o", "rm -rf /"))
    result = files.verify()
    assert (result.status, result.first_bad_event) == ("invalid", len(EVENTS) + 1)


def test_appended_garbage_is_named() -> None:
    """A malformed line after the sealed end is named."""
    files = build()
    files.lines.append(b"{}")
    result = files.verify()
    assert (result.status, result.first_bad_event) == ("invalid", len(EVENTS) + 1)


def test_replaced_signature_is_invalid() -> None:
    """A seal whose signature was replaced does not verify; the content is not blamed."""
    files = build()
    doc = json.loads(files.seal or b"")
    doc["signature"] = base64.b64encode(b"\x00" * 64).decode()
    result = replace(files, seal=json.dumps(doc).encode()).verify()
    assert result.status == "invalid"
    assert result.first_bad_event is None
    assert "signature" in result.message


def test_changed_seal_field_is_invalid() -> None:
    """Changing a signed field of the seal (complete: false to true) breaks it."""
    files = build(complete=False, reason="disk full")
    doc = json.loads(files.seal or b"")
    doc["complete"] = True
    assert replace(files, seal=json.dumps(doc).encode()).verify().status == "invalid"


def test_resigned_with_another_key_is_invalid_and_names_the_event() -> None:
    """Altered content re-sealed with another key is invalid and the event is named."""
    files = build()
    files.lines[2] = encode_event_line(0.5, "i", "X")
    files.seal = reseal(files, OTHER)
    result = files.verify()
    assert result.status == "invalid"
    assert result.first_bad_event == 2
    assert public_key_fingerprint(OTHER.public_key()) in result.message


def test_resigned_claiming_the_right_fingerprint_is_invalid() -> None:
    """A seal signed by another key but naming ours fails on its signature."""
    files = build()
    doc = json.loads(reseal(files, OTHER))
    doc["key_fingerprint"] = public_key_fingerprint(KEY.public_key())
    result = replace(files, seal=json.dumps(doc).encode()).verify()
    assert result.status == "invalid"
    assert "signature" in result.message


def test_verifying_with_the_wrong_key_is_invalid() -> None:
    """A genuine transcript checked against another key is invalid."""
    assert build().verify(OTHER).status == "invalid"


def test_seal_for_another_session_is_invalid() -> None:
    """A valid seal of another session does not vouch for this transcript."""
    files = build()
    files.seal = reseal(files, KEY, session_id="s-" + "w" * 22)
    result = files.verify()
    assert result.status == "invalid"
    assert "session" in result.message


def test_malformed_seal_is_invalid() -> None:
    """A seal file that is not a seal makes the transcript invalid."""
    result = replace(build(), seal=b"{not json").verify()
    assert result.status == "invalid"
    assert "not a valid seal" in result.message


def test_damaged_chain_file_does_not_change_a_valid_verdict() -> None:
    """The chain file only locates: damage to it leaves an authentic transcript valid."""
    files = build()
    assert files.chain is not None
    damaged = files.chain[:-10] + b"0" * 9 + b"\n"
    assert replace(files, chain=damaged).verify().status == "valid"
    other, _ = chain_of(files.lines, "s-" + "x" * 22)
    assert replace(files, chain=other).verify().status == "valid"
    assert replace(files, chain=b"").verify().status == "valid"


def test_rewritten_chain_file_cannot_name_but_still_invalid() -> None:
    """Content and chain file altered together is invalid, with no event named."""
    files = build()
    files.lines[4] = encode_event_line(0.9, "i", "X")
    files.chain, _ = chain_of(files.lines)
    result = files.verify()
    assert result.status == "invalid"
    assert result.first_bad_event is None
    assert "no chain file shows where" in result.message


def test_empty_file_is_invalid() -> None:
    """An empty transcript file is invalid, sealed or not."""
    for seal in (build().seal, None):
        result = verify_transcript_bytes(b"", KEY.public_key(), seal=seal)
        assert result.status == "invalid"
        assert result.first_bad_line == 1


def test_overlong_line_is_invalid() -> None:
    """A line past the size cap is named and not read further."""
    files = build()
    files.lines[3] = b"x" * (1 << 21)
    result = files.verify()
    assert (result.status, result.first_bad_event) == ("invalid", 3)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_any_single_byte_change_is_caught_and_named(data: st.DataObject) -> None:
    """Any one changed byte makes the transcript invalid and names the line it is in."""
    files = build()
    cast = bytearray(files.cast)
    position = data.draw(st.integers(min_value=0, max_value=len(cast) - 1))
    value = data.draw(st.integers(min_value=0, max_value=255).filter(lambda b: b != cast[position]))
    line_no = cast[:position].count(b"\n") + 1
    cast[position] = value
    result = verify_transcript_bytes(
        bytes(cast), KEY.public_key(), seal=files.seal, chain=files.chain
    )
    assert result.status == "invalid"
    assert result.first_bad_line == line_no


@settings(max_examples=300, deadline=None)
@given(
    cast=st.binary(max_size=400),
    seal=st.none() | st.binary(max_size=200),
    chain=st.none() | st.binary(max_size=200),
)
def test_arbitrary_bytes_give_a_result_never_an_exception(
    cast: bytes, seal: bytes | None, chain: bytes | None
) -> None:
    """Whatever the files hold, verify answers with a result and never says valid."""
    result = verify_transcript_bytes(cast, KEY.public_key(), seal=seal, chain=chain)
    assert result.status in ("incomplete", "invalid")
    assert result.message


@settings(max_examples=200, deadline=None)
@given(lines=st.lists(st.binary(max_size=60), max_size=6))
def test_arbitrary_lines_after_a_real_header_give_a_result(lines: list[bytes]) -> None:
    """A real header followed by arbitrary lines never raises and is never valid."""
    files = build()
    cast = files.cast.split(b"\n", 1)[0] + b"\n" + b"\n".join(lines)
    result = verify_transcript_bytes(cast, KEY.public_key(), seal=files.seal, chain=files.chain)
    assert result.status in ("incomplete", "invalid")


# -- bundles ----------------------------------------------------------------------------


def bundle(files: Files) -> dict[str, object]:
    chain = DigestChain(files.lines[0])
    digests = [chain.h0.hex()] + [chain.add(line).hex() for line in files.lines[1:]]
    return {
        "format": "secondline-transcript-bundle",
        "version": 1,
        "header": json.loads(files.lines[0]),
        "seal": json.loads(files.seal) if files.seal else None,
        "chain": digests,
        "events": [json.loads(line) for line in files.lines[1:]],
    }


def check(doc: object, key: Ed25519PrivateKey = KEY) -> VerifyResult:
    return verify_bundle_bytes(json.dumps(doc).encode(), key.public_key())


def test_bundle_verifies_on_its_own() -> None:
    """A bundle of a sealed transcript verifies with nothing else."""
    assert check(bundle(build())).status == "valid"
    assert check(bundle(build(complete=False, reason="interrupted"))).status == "valid_cut_short"


def test_bundle_without_seal_is_incomplete() -> None:
    """A bundle whose seal is null is incomplete."""
    doc = bundle(build())
    doc["seal"] = None
    assert check(doc).status == "incomplete"


def test_bundle_tampering_names_the_event() -> None:
    """A changed event in a bundle is named by its chain list."""
    doc = bundle(build())
    events = doc["events"]
    assert isinstance(events, list)
    events[3] = [0.9, "i", "rm\r"]
    result = check(doc)
    assert (result.status, result.first_bad_event) == ("invalid", 4)


def test_bundle_time_must_be_exact() -> None:
    """A time that six decimals do not represent exactly is refused, not rounded."""
    doc = bundle(build())
    events = doc["events"]
    assert isinstance(events, list)
    events[0] = [0.1000001, "o", "$ "]
    assert check(doc).first_bad_event == 1
    events[0] = ["0.1", "o", "$ "]
    assert check(doc).first_bad_event == 1
    events[0] = [1e300, "o", "$ "]
    assert check(doc).status == "invalid"


def test_bundle_bad_header_and_chain() -> None:
    """A broken header is named; a broken chain list only stops locating."""
    doc = bundle(build())
    doc["header"] = {"version": 2}
    assert check(doc).first_bad_line == 1
    doc = bundle(build())
    doc["chain"] = ["zz", 5]
    assert check(doc).status == "valid"


@pytest.mark.parametrize(
    "doc",
    [
        [],
        {"format": "x"},
        {
            "format": "secondline-transcript-bundle",
            "version": 2,
            "header": {},
            "seal": None,
            "chain": [],
            "events": [],
        },
        {
            "format": "secondline-transcript-bundle",
            "version": 1,
            "header": {},
            "seal": None,
            "chain": {},
            "events": [],
        },
    ],
)
def test_malformed_bundles_are_invalid(doc: object) -> None:
    """Documents that are not bundles are invalid, not errors."""
    assert check(doc).status == "invalid"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bundle_bytes_give_a_result(data: bytes) -> None:
    """Arbitrary bytes as a bundle give a result, never an exception."""
    assert verify_bundle_bytes(data, KEY.public_key()).status in ("incomplete", "invalid")
