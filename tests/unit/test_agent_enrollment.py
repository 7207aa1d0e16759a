"""Unit tests of the enrollment token and messages (pure parsing, strict validation)."""

from __future__ import annotations

import contextlib
import json

import asyncssh
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.enrollment import (
    EnrollmentAnswer,
    EnrollmentRequest,
    EnrollmentToken,
    ErrorBody,
    check_url,
    default_agent_name,
    pem_to_der,
)
from agent.errors import MessageError, TokenError
from agent.facts import Facts
from agent.protocol import TOKEN_RE, Ed25519PublicKey, cert_fingerprint
from tests.component.test_agent_harness import make_cert

FP = "ab" * 32
TOKEN = f"sle1.abcdefgh1234.{'A1b2' * 8}.{FP}"
KEY_LINE = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
FACTS = Facts(
    hostname="web01", os="Debian GNU/Linux", os_version="12", kernel="6.1", arch="x86_64",
    users=("alice",),
)  # fmt: skip
CERT = make_cert()


def test_token_parses_into_its_parts() -> None:
    """A well-formed token yields id, secret and fingerprint, and serializes back."""
    token = EnrollmentToken.parse(TOKEN)
    assert (token.token_id, token.secret, token.fingerprint) == ("abcdefgh1234", "A1b2" * 8, FP)
    assert token.serialize() == TOKEN


def test_token_tolerates_surrounding_whitespace() -> None:
    """Copy-pasted tokens with a trailing newline still parse."""
    assert EnrollmentToken.parse(f"  {TOKEN}\n").serialize() == TOKEN


def test_token_repr_hides_the_secret() -> None:
    """The secret never shows in a repr (logs, tracebacks)."""
    assert "A1b2" not in repr(EnrollmentToken.parse(TOKEN))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "sle1",
        TOKEN.replace("sle1", "sle2"),
        TOKEN[:-1],
        TOKEN + "0",
        TOKEN.replace("abcdefgh1234", "ABCDEFGH1234"),
        TOKEN.replace(FP, FP.upper()),
        TOKEN.replace(".", ":"),
        TOKEN + "\nx",
        f"{TOKEN}.extra",
    ],
)
def test_malformed_tokens_are_refused(text: str) -> None:
    """Every deviation from the strict format is a TokenError that does not echo the input."""
    with pytest.raises(TokenError, match="not a Secondline enrollment token") as info:
        EnrollmentToken.parse(text)
    assert "A1b2" not in str(info.value)


def test_non_strings_are_refused() -> None:
    """Bytes or None are not tokens."""
    with pytest.raises(TokenError):
        EnrollmentToken.parse(TOKEN.encode())


@given(st.text())
def test_token_parsing_raises_only_token_error(text: str) -> None:
    """Whatever the text, parsing returns a token or raises TokenError, nothing else."""
    try:
        token = EnrollmentToken.parse(text)
    except TokenError:
        return
    assert TOKEN_RE.fullmatch(token.serialize())


@given(st.from_regex(TOKEN_RE, fullmatch=True))
def test_every_token_of_the_format_round_trips(text: str) -> None:
    """Every string of the documented format parses and serializes back unchanged."""
    assert EnrollmentToken.parse(text).serialize() == text


def test_generated_tokens_are_valid_and_distinct() -> None:
    """Generated tokens follow the format and carry the fingerprint."""
    first, second = EnrollmentToken.generate(FP), EnrollmentToken.generate(FP)
    assert TOKEN_RE.fullmatch(first.serialize())
    assert first.fingerprint == FP
    assert first.secret != second.secret
    with pytest.raises(MessageError):
        EnrollmentToken.generate("XYZ")


def _request() -> EnrollmentRequest:
    return EnrollmentRequest(
        token=EnrollmentToken.parse(TOKEN),
        name="web01",
        public_key=Ed25519PublicKey.parse(KEY_LINE),
        facts=FACTS,
    )


def test_request_round_trips() -> None:
    """A request serializes to the contract's JSON and parses back equal."""
    request = _request()
    body = json.loads(request.serialize())
    assert set(body) == {"token", "name", "public_key", "facts"}
    assert body["token"] == TOKEN
    assert EnrollmentRequest.parse(request.serialize()) == request


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"extra": 1}, "unknown key 'extra'"),
        ({"name": "Web 01"}, "name"),
        ({"name": None}, "name"),
        ({"token": "nope"}, "token is malformed"),
        ({"public_key": "ssh-rsa AAAA"}, "public_key"),
        ({"facts": {"hostname": "x"}}, "facts: missing key"),
    ],
)
def test_request_validation_names_the_problem(change: dict[str, object], message: str) -> None:
    """A request with a bad field is refused with a MessageError naming it."""
    body = json.loads(_request().serialize())
    body.update(change)
    with pytest.raises(MessageError, match=message):
        EnrollmentRequest.parse(json.dumps(body))


def test_request_missing_key_is_refused() -> None:
    """A request without one of its keys is refused."""
    body = json.loads(_request().serialize())
    del body["name"]
    with pytest.raises(MessageError, match="missing key 'name'"):
        EnrollmentRequest.parse(json.dumps(body))


def _answer(**change: object) -> bytes:
    body: dict[str, object] = {
        "agent_id": "ag-0123456789abcdef",
        "name": "web01",
        "customer": "acme",
        "consent": "attended",
        "broker_ssh_key": KEY_LINE,
        "tunnel_url": "wss://broker.example:8443/agent/v1/tunnel",
        "tls_cert_pem": CERT.cert_pem,
    }
    body.update(change)
    return json.dumps(body).encode()


def test_answer_parses_and_exposes_the_certificate_fingerprint() -> None:
    """An answer parses, keeps every field, and fingerprints its certificate."""
    answer = EnrollmentAnswer.parse(_answer())
    assert answer.consent == "attended"
    assert answer.tls_cert_fingerprint == cert_fingerprint(CERT.der)
    assert EnrollmentAnswer.parse(answer.serialize()) == answer


def test_answer_carries_the_release_key_when_the_broker_sends_one() -> None:
    """The release key round-trips; an older broker's answer without it parses as None."""
    assert EnrollmentAnswer.parse(_answer()).release_key is None
    answer = EnrollmentAnswer.parse(_answer(release_key=KEY_LINE))
    assert answer.release_key is not None
    assert answer.release_key.serialize() == " ".join(KEY_LINE.split()[:2])
    assert EnrollmentAnswer.parse(answer.serialize()) == answer


def test_answer_ignores_fields_a_newer_broker_adds() -> None:
    """Keys this agent does not know (a newer broker's) are ignored; the known ones are
    still checked, so an old agent keeps enrolling with a newer broker."""
    answer = EnrollmentAnswer.parse(_answer(surprise=True, release_channel={"name": "stable"}))
    assert answer == EnrollmentAnswer.parse(_answer())
    with pytest.raises(MessageError, match="consent"):
        EnrollmentAnswer.parse(_answer(surprise=True, consent="sometimes"))


@pytest.mark.parametrize(
    "change",
    [
        {"agent_id": "ag-short"},
        {"consent": "sometimes"},
        {"tunnel_url": "ws://broker/agent"},
        {"tunnel_url": "wss://user:pw@broker/agent"},
        {"tunnel_url": "wss:///nohost"},
        {"tls_cert_pem": "not a cert"},
        {"tls_cert_pem": CERT.cert_pem + CERT.cert_pem},
        {"broker_ssh_key": "ssh-ed25519 AAAA"},
        {"customer": "../etc"},
        {"release_key": "ssh-ed25519 AAAA"},
        {"release_key": None},
    ],
)
def test_answer_validation_refuses_bad_fields(change: dict[str, object]) -> None:
    """Each malformed answer field is refused with a MessageError."""
    with pytest.raises(MessageError):
        EnrollmentAnswer.parse(_answer(**change))


def test_error_body_parses_and_makes_the_message_inert() -> None:
    """The error body's message loses terminal controls; the code keeps its strict set."""
    body = b'{"error": {"code": "token_used", "message": "used\\u001b[2J"}}'
    error = ErrorBody.parse(body)
    assert error == ErrorBody("token_used", "used [2J")
    assert ErrorBody.parse(error.serialize()) == error
    with pytest.raises(MessageError):
        ErrorBody.parse(b'{"error": {"code": "Bad Code", "message": "x"}}')
    with pytest.raises(MessageError):
        ErrorBody.parse(b'{"error": "flat"}')


@given(st.binary(max_size=512))
def test_message_parsers_raise_only_message_error(data: bytes) -> None:
    """Arbitrary bytes never make a message parser raise anything but MessageError."""
    for parse in (EnrollmentRequest.parse, EnrollmentAnswer.parse, ErrorBody.parse, Facts.parse):
        with contextlib.suppress(MessageError):
            parse(data)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.text(max_size=12), children, max_size=6)
        ),
        max_leaves=20,
    )
)
def test_message_parsers_refuse_any_json_shape(value: object) -> None:
    """Any JSON value parses into a message or raises MessageError."""
    data = json.dumps(value)
    for parse in (EnrollmentRequest.parse, EnrollmentAnswer.parse, ErrorBody.parse, Facts.parse):
        with contextlib.suppress(MessageError):
            parse(data)


@pytest.mark.parametrize(
    ("hostname", "name"),
    [
        ("web01", "web01"),
        ("Web01.Example.COM", "web01"),
        ("my host_1", "my-host_1"),
        ("---x", "x"),
        ("...", "agent"),
        ("a" * 100, "a" * 63),
    ],
)
def test_default_agent_name(hostname: str, name: str) -> None:
    """The default name is the host name lowercased and reduced to the allowed set."""
    assert default_agent_name(hostname) == name


def test_check_url_and_pem_helpers() -> None:
    """URLs need the scheme and a host; PEM decoding refuses anything but one certificate."""
    assert check_url("https://b.example:8443", "u", "https") == "https://b.example:8443"
    for bad in ("http://b", "https://", "https://b:0", "https://b#frag", "https://b c", 5):
        with pytest.raises(MessageError):
            check_url(bad, "u", "https")
    assert pem_to_der(CERT.cert_pem) == CERT.der
    with pytest.raises(MessageError):
        pem_to_der("-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----")
