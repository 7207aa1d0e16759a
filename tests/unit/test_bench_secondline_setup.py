"""Reading what the Secondline CLI prints during the bench's setup, strictly."""

from __future__ import annotations

import json

import pytest

from bench import MeasurementError
from bench.secondline_target import (
    agent_is_online,
    parse_ticket_id,
    parse_token,
    pinned_host_keys,
)

TOKEN = "sle1.abcdefghij01." + "A" * 32 + "." + "0f" * 32


def test_token_is_taken_alone_from_stdout() -> None:
    """The enrollment token printed alone, with a newline, is accepted."""
    assert parse_token(TOKEN + "\n") == TOKEN


@pytest.mark.parametrize("printed", ["", "token: " + TOKEN, TOKEN + " extra", "sle1.x.y.z"])
def test_anything_else_than_a_token_is_refused(printed: str) -> None:
    """Output that is not exactly one sle1 token is refused."""
    with pytest.raises(MeasurementError, match="enrollment token"):
        parse_token(printed)


@pytest.mark.parametrize(("printed", "user"), [("T-1042\n", "T-1042"), ("17", "T-17")])
def test_ticket_id_becomes_the_ssh_user(printed: str, user: str) -> None:
    """A ticket id, with or without its T- prefix, becomes ``T-<n>``."""
    assert parse_ticket_id(printed) == user


@pytest.mark.parametrize("printed", ["", "T-", "T-12; rm -rf /", "ticket 12"])
def test_a_malformed_ticket_id_is_refused(printed: str) -> None:
    """Anything but digits after an optional T- is refused."""
    with pytest.raises(MeasurementError, match="ticket id"):
        parse_ticket_id(printed)


@pytest.mark.parametrize(
    "listing",
    [
        [{"name": "bench-agent", "online": True}],
        [{"name": "bench-agent", "state": "online"}],
        {
            "agents": [
                {"name": "other", "online": True},
                {"name": "bench-agent", "status": "online"},
            ]
        },
        {"items": [{"name": "bench-agent", "online": True}]},
    ],
)
def test_agent_online_in_any_listing_shape(listing: object) -> None:
    """A list, or an object holding agents/items, shows the agent online."""
    assert agent_is_online(json.dumps(listing), "bench-agent")


@pytest.mark.parametrize(
    "text",
    [
        json.dumps([{"name": "bench-agent", "online": False, "state": "offline"}]),
        json.dumps([{"name": "other", "online": True}]),
        json.dumps({"agents": "none"}),
        json.dumps(["bench-agent"]),
        "not json",
    ],
)
def test_agent_not_online(text: str) -> None:
    """Offline, absent, malformed or unparsable listings do not count as online."""
    assert not agent_is_online(text, "bench-agent")


def test_only_well_formed_host_keys_are_pinned() -> None:
    """Comment lines and unexpected key types are dropped."""
    scan = (
        "# 127.0.0.1:2222 SSH-2.0-AsyncSSH_2.24.1\n"
        "[127.0.0.1]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB\n"
        "[127.0.0.1]:2222 ssh-rsa AAAAB3Nza\n"
        "[127.0.0.1]:2222 ssh-ed25519 AAAA bad;key\n"
    )
    assert pinned_host_keys(scan) == ["[127.0.0.1]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB"]
