"""Sessions across nodes, the pure part: the node-to-node credential, the request, the
events from the hub's node and the controls to it (broker.cluster.peering)."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from broker.cluster.messages import Announcement, BadMessage, Steer, SteerResult
from broker.cluster.peering import (
    SKEW_S,
    AttachAsk,
    BadPeerMessage,
    Nonces,
    OpenAsk,
    PeerAuthError,
    check_credential,
    control,
    credential,
    event,
    output_frame,
    parse_ask,
    parse_control,
    parse_event,
    parse_output,
    peer_key,
    reply_control,
    serialize_ask,
)
from broker.cluster.view import ClusterView
from broker.config import valid_peer_url
from broker.rules import SshTarget

KEY = peer_key(ed25519.Ed25519PrivateKey.generate())
NOW = 1_800_000_000.0


def test_the_key_is_derived_and_the_same_from_the_same_keys() -> None:
    """Nodes holding one audit key derive one peer key; another cluster's key differs, and
    the key is not the audit key's bytes."""
    audit = ed25519.Ed25519PrivateKey.generate()
    assert peer_key(audit) == peer_key(audit)
    assert peer_key(audit) != peer_key(ed25519.Ed25519PrivateKey.generate())
    assert len(peer_key(audit)) == 32


def test_a_credential_names_the_node_that_sent_it() -> None:
    """n1's credential for n2 is taken by n2 within the allowed clock skew."""
    header = credential(KEY, "n1", "n2", NOW)
    assert check_credential(KEY, header, "n2", NOW + SKEW_S - 1, Nonces()) == "n1"


@pytest.mark.parametrize(
    ("header", "me", "now", "why"),
    [
        (None, "n2", NOW, "no X-Secondline-Peer"),
        ("n1 n2 1", "n2", NOW, "not ORIGIN"),
        (credential(KEY, "n1", "n2", NOW), "n3", NOW, "for node n2"),
        (credential(KEY, "n1", "n2", NOW), "n2", NOW + SKEW_S + 5, "two minutes"),
        (credential(b"k" * 32, "n1", "n2", NOW), "n2", NOW, "MAC is wrong"),
        (credential(KEY, "N1", "n2", NOW), "n2", NOW, "out of shape"),
    ],
)
def test_a_bad_credential_is_refused_with_the_reason(
    header: str | None, me: str, now: float, why: str
) -> None:
    """Missing, malformed, for another node, stale, from another cluster: refused, saying
    which."""
    with pytest.raises(PeerAuthError, match=why):
        check_credential(KEY, header, me, now, Nonces())


def test_a_tampered_credential_is_refused() -> None:
    """Changing the origin of a signed credential breaks its MAC."""
    header = credential(KEY, "n1", "n2", NOW).replace("n1 ", "n3 ", 1)
    with pytest.raises(PeerAuthError, match="MAC"):
        check_credential(KEY, header, "n2", NOW, Nonces())


def test_a_credential_is_taken_once() -> None:
    """A captured request replayed within the window is refused."""
    nonces = Nonces()
    header = credential(KEY, "n1", "n2", NOW)
    check_credential(KEY, header, "n2", NOW, nonces)
    with pytest.raises(PeerAuthError, match="replay"):
        check_credential(KEY, header, "n2", NOW + 1, nonces)


def test_nonces_are_bounded_and_expire() -> None:
    """The nonce memory forgets what is past its window and never holds more than its limit."""
    nonces = Nonces(window=10.0, limit=3)
    for i in range(5):
        assert nonces.fresh(f"n{i}", NOW)
    assert len(nonces.seen) <= 3
    assert nonces.fresh("n0", NOW + 11)  # expired (and pushed out): taken again
    assert not nonces.fresh("n0", NOW + 12)


def test_requests_round_trip() -> None:
    """An open and an attach come back the same from the wire."""
    opened = OpenAsk(
        staff="bob",
        target=SshTarget(1042, "web01"),
        kind="shell",
        command=None,
        term="xterm-256color",
        cols=120,
        rows=40,
        via="ssh",
        source="10.0.0.9",
    )
    attach = AttachAsk(
        staff="lena", session="s-" + "a" * 22, ticket=1042, role="observer", source="10.0.0.8"
    )
    assert parse_ask(serialize_ask(opened)) == opened
    assert parse_ask(serialize_ask(attach)) == attach


def _open(**changes: object) -> str:
    body: dict[str, object] = {
        "op": "open",
        "staff": "bob",
        "ticket": 7,
        "agent": None,
        "kind": "exec",
        "command": "uptime",
        "term": None,
        "cols": 80,
        "rows": 24,
        "via": "ssh",
        "source": "",
    }
    body.update(changes)
    return json.dumps(body)


@pytest.mark.parametrize(
    "text",
    [
        "nope",
        "[]",
        json.dumps({"op": "drop"}),
        _open(staff="Bob!"),
        _open(ticket=0),
        _open(ticket="7"),
        _open(kind="root"),
        _open(command=None),  # exec without a command
        _open(kind="shell"),  # a command without exec
        _open(command="a\x00b"),
        _open(term="x term"),
        _open(cols=5000),
        _open(agent="web 01"),
        _open(extra=1),
        json.dumps(
            {
                "op": "attach",
                "staff": "bob",
                "session": "s-1",
                "ticket": 1,
                "role": "observer",
                "source": "",
            }
        ),
        json.dumps(
            {
                "op": "attach",
                "staff": "bob",
                "session": "s-" + "a" * 22,
                "ticket": 1,
                "role": "owner",
                "source": "",
            }
        ),
    ],
)
def test_a_request_out_of_shape_is_refused(text: str) -> None:
    """A request is checked field by field like any input from outside."""
    with pytest.raises(BadPeerMessage):
        parse_ask(text)


def test_output_frames_carry_the_stream() -> None:
    """Output frames say stdout or stderr in their first byte; anything else is refused."""
    assert parse_output(output_frame(b"hi", False)) == (b"hi", False)
    assert parse_output(output_frame(b"err", True)) == (b"err", True)
    for bad in (b"", b"\x02x"):
        with pytest.raises(BadPeerMessage):
            parse_output(bad)


def test_events_are_checked() -> None:
    """Events from the hub's node are taken only in their shape."""
    kind, fields = parse_event(event("state", state="running", reason="", session="s-1"))
    assert (kind, fields["state"]) == ("state", "running")
    kind, fields = parse_event(
        event(
            "finish",
            reason="killed",
            code="killed",
            message="the session was ended by admin",
            exit_status=None,
            exit_signal=None,
            ended_by="admin",
            started_at=12,
        )
    )
    assert fields["ended_by"] == "admin"
    assert parse_event(event("pause", paused=True)) == ("pause", {"paused": True})
    for bad in (
        event("shell", cmd="rm"),
        event("notice"),
        event("notice", message=1),
        event("notice", message="x", extra=1),
        event("participants", list=[{"name": "a"}]),
        event("notice", message="x" * 2000),
        event("pause", paused="yes"),
    ):
        with pytest.raises(BadPeerMessage):
            parse_event(bad)


def test_controls_are_checked() -> None:
    """Resize, reply, signal, eof and end are the only controls, each in its shape."""
    assert parse_control(control("resize", cols=100, rows=30)) == ("resize", 100, 30)
    assert parse_control(reply_control(b"\x1b[1;1R")) == ("reply", b"\x1b[1;1R")
    assert parse_control(control("signal", name="INT")) == ("signal", "INT")
    assert parse_control(control("eof")) == ("eof",)
    assert parse_control(control("end")) == ("end",)
    for bad in (
        control("resize", cols=0, rows=30),
        control("reply", data="!!"),
        control("reply", data=""),
        control("kill"),
        control("end", now=True),
    ):
        with pytest.raises(BadPeerMessage):
            parse_control(bad)


def test_a_node_announces_where_it_is_dialled() -> None:
    """The peer address travels in presence and is checked; a node of an older version
    announces none, and the view says so."""
    a = Announcement("n1", ("ag1",), (), peer="https://10.0.0.1:8443")
    assert Announcement.parse(a.serialize()) == a
    older = json.dumps({"node": "n2", "agents": ["ag2"], "sessions": []}).encode()
    assert Announcement.parse(older).peer == ""
    with pytest.raises(BadMessage):
        Announcement.parse(json.dumps({"node": "n1", "peer": "http://x:1"}).encode())
    view = ClusterView()
    view.heard(a, 0.0)
    view.heard(Announcement.parse(older), 0.0)
    assert view.peer_of("n1") == "https://10.0.0.1:8443"
    assert view.peer_of("n2") is None
    assert view.peer_of("n9") is None


@pytest.mark.parametrize(
    ("url", "valid"),
    [
        ("https://10.0.0.1:8443", True),
        ("https://node1.internal:8443/", True),
        ("https://[::1]:8443", True),
        ("http://10.0.0.1:8443", False),
        ("https://10.0.0.1", False),
        ("https://10.0.0.1:8443/x", False),
        ("https://u@10.0.0.1:8443", False),
        ("https://10.0.0.1:99999", False),
        ("https://10.0.0.1:8443 ", False),
    ],
)
def test_peer_urls(url: str, valid: bool) -> None:
    """A peer address is https://HOST:PORT and nothing more."""
    assert valid_peer_url(url) is valid


def test_steering_round_trips_and_is_checked() -> None:
    """An invitation asked of another node, and its answer, come back the same; anything
    out of shape is refused."""
    steer = Steer(kind="session.invite", session="s-" + "a" * 22, by="bob", name="lena")
    assert Steer.parse(steer.serialize()) == steer
    result = SteerResult("", "", (("bob", "owner"), ("lena", "observer")), ("lena",))
    assert SteerResult.parse(result.serialize()) == result
    for bad in (
        b'{"kind": "session.kill", "session": "s-1", "by": "a", "name": "b"}',
        b'{"kind": "session.invite", "session": "s 1", "by": "a", "name": "b"}',
        b'{"kind": "session.invite", "session": "s-1", "by": "", "name": "b"}',
    ):
        with pytest.raises(BadMessage):
            Steer.parse(bad)
    for bad in (b'{"code": "", "participants": [["a"]]}', b'{"code": "", "invited": [1]}'):
        with pytest.raises(BadMessage):
            SteerResult.parse(bad)
