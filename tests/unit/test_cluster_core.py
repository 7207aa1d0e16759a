"""The cluster's pure core: subject matching, the wire units and the presence lease."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from broker.cluster.bus import subject_matches, valid_subject
from broker.cluster.messages import (
    Announcement,
    BadMessage,
    Control,
    ControlResult,
    Subjects,
)
from broker.cluster.view import LEASE_S, ClusterView
from broker.config import load_config, peer_url
from broker.errors import ConfigError


@pytest.mark.parametrize(
    ("pattern", "subject", "matches"),
    [
        ("a.b", "a.b", True),
        ("a.*", "a.b", True),
        ("a.*", "a.b.c", False),
        ("a.>", "a.b.c", True),
        ("a.>", "a", False),
        ("a.b.c", "a.b", False),
        ("*.b", "x.b", True),
    ],
)
def test_subjects_match_as_nats_matches_them(pattern: str, subject: str, matches: bool) -> None:
    """``*`` is one token and ``>`` one or more, as in NATS."""
    assert subject_matches(pattern, subject) is matches


def test_a_subject_from_outside_cannot_carry_wildcards() -> None:
    """A name with a wildcard, a space or an empty token is not a subject we publish to."""
    assert valid_subject(Subjects("main").node("n1", "kill"))
    for bad in ("a.*", "a.>", "a..b", "a b", ""):
        assert not valid_subject(bad)


def test_an_announcement_round_trips() -> None:
    """What a node announces comes back the same from the wire."""
    a = Announcement("n1", ("ag1", "ag2"), ("s1",), url="https://x", leaving=False)
    assert Announcement.parse(a.serialize()) == a


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b"[]",
        b'{"node": "N1"}',  # not a node name
        b'{"node": "n1", "agents": ["a b"]}',  # not an id
        b'{"node": "n1", "agents": "ag1"}',
        b'{"node": "n1", "leaving": "yes"}',
        b'{"node": "' + b"n" * 40 + b'"}',
    ],
)
def test_a_bad_announcement_is_refused(data: bytes) -> None:
    """Anything that is not an announcement of ours is refused, never half-read."""
    with pytest.raises(BadMessage):
        Announcement.parse(data)


def test_a_control_message_round_trips_and_refuses_unknown_kinds() -> None:
    """Kill, revoke and disable travel as they were issued; other kinds are refused."""
    c = Control(kind="session.kill", target="s1", by="alice", origin="n1", reason="why")
    assert Control.parse(c.serialize()) == c
    with pytest.raises(BadMessage):
        Control.parse(b'{"kind": "rm -rf", "target": "x"}')
    with pytest.raises(BadMessage):
        Control.parse(b'{"kind": "agent.revoke", "target": ""}')
    assert ControlResult.parse(ControlResult("n2", True).serialize()) == ControlResult("n2", True)
    with pytest.raises(BadMessage):
        ControlResult.parse(b'{"done": "yes"}')


def test_a_node_not_heard_for_its_lease_is_forgotten_with_its_agents() -> None:
    """A node that stops announcing is gone after the lease; one that says goodbye at once."""
    view = ClusterView()
    assert view.heard(Announcement("n2", ("ag1",), ()), now=100.0)
    assert not view.heard(Announcement("n2", ("ag1",), ()), now=101.0)
    assert view.holder_of_agent("ag1") == "n2"
    assert view.expire(now=101.0 + LEASE_S) == []
    assert view.expire(now=101.0 + LEASE_S + 0.1) == ["n2"]
    assert view.holder_of_agent("ag1") is None
    view.heard(Announcement("n3", (), ()), now=200.0)
    view.heard(Announcement("n3", (), (), leaving=True), now=200.5)
    assert view.nodes == {}


def test_the_lease_keeps_the_promise_of_ten_seconds() -> None:
    """Lease plus the one-second check stays within the promised 10 s."""
    assert LEASE_S + 1.0 <= 10.0


def test_cluster_settings_come_from_the_cluster_table(tmp_path: Path) -> None:
    """[cluster] nats_url and name are read from the file; --node comes from the command."""
    (tmp_path / "secondline.toml").write_text(
        'database_url = "postgresql://db.example/secondline"\n'
        '[cluster]\nnats_url = "nats://127.0.0.1:4222"\nname = "eu"\n'
    )
    config = load_config(tmp_path, env={}, overrides={"node": "n1"})
    assert (config.cluster_nats_url, config.cluster_name, config.node) == (
        "nats://127.0.0.1:4222",
        "eu",
        "n1",
    )
    assert config.clustered


@pytest.mark.parametrize(
    ("text", "overrides", "match"),
    [
        ('[cluster]\nnats_url = "nats://127.0.0.1:4222"\n', {}, "a cluster needs PostgreSQL"),
        ("", {"node": "n1"}, "no NATS server is set"),
        ('[cluster]\nnats_url = "http://x"\n', {}, "must start with nats://"),
        ("", {"node": "N 1"}, "node name 'N 1'"),
        ('[cluster]\nbogus = "x"\n', {}, "unknown key 'cluster_bogus'"),
    ],
)
def test_bad_cluster_settings_are_refused_with_what_to_do(
    tmp_path: Path, text: str, overrides: dict[str, object], match: str
) -> None:
    """A cluster on SQLite, a node without NATS, a bad URL or name: each refused, named."""
    (tmp_path / "secondline.toml").write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_config(tmp_path, env={}, overrides=overrides)


def test_the_configuration_in_docs_cluster_md_is_what_the_broker_reads(tmp_path: Path) -> None:
    """The secondline.toml of docs/cluster.md loads as a cluster node's configuration."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "cluster.md").read_text()
    block = doc.split("```toml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "secondline.toml").write_text(textwrap.dedent(block))
    config = load_config(tmp_path, env={}, overrides={"node": "n1"})
    assert (config.clustered, config.cluster_name, config.node) == (True, "main", "n1")
    assert config.public_url == "https://support.example.com:8443"
    assert peer_url(config) == "https://10.0.0.11:8443"
