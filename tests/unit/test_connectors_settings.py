"""What an admin configures for a connector, and ticket numbers of external systems as SSH
user names: pure checks."""

from __future__ import annotations

import pytest

from broker.connectors.refs import ExternalTarget, parse_external_target
from broker.connectors.settings import (
    ConnectorSettingsError,
    check_credential,
    check_kind,
    check_name,
    check_prefix,
    check_url,
    default_levels,
    parse_levels,
)
from broker.rules import InvalidName


def test_levels_map_each_level_to_one_place() -> None:
    levels = parse_levels("1=Support, 2=Second level,3=Engineering")
    assert levels.level_of("Second level") == 2
    assert levels.level_of("General") is None
    assert levels.place_of(3) == "Engineering"
    assert levels.as_text() == "1=Support,2=Second level,3=Engineering"
    assert default_levels("rt").as_text() == "1=Level 1,2=Level 2,3=Level 3"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("1=A,2=B", "level 3 has no place"),
        ("1=A,2=B,3=A", "the same place"),
        ("1=A,1=B,2=C,3=D", "mapped twice"),
        ("4=A,1=B,2=C,3=D", "write LEVEL=PLACE"),
        ("1=A,2=B,3=\x1b[2J", "without control characters"),
        ("1A,2=B,3=C", "write LEVEL=PLACE"),
    ],
)
def test_bad_level_maps_say_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(ConnectorSettingsError, match=says.replace("(", r"\(")):
        parse_levels(text)


def test_names_prefixes_kinds_urls_and_credentials() -> None:
    assert check_name("rt-acme") == "rt-acme"
    assert check_prefix("RT") == "RT"
    assert check_kind("rt") == "rt"
    assert check_url("https://rt.example.com/") == "https://rt.example.com"
    assert check_credential("1-14-abc\n") == "1-14-abc"
    for bad_name in ("RT", "-x", "a/b", "x" * 33, ""):
        with pytest.raises(ConnectorSettingsError):
            check_name(bad_name)
    for bad_prefix in ("T", "rt", "1A", "ABCDEFGHIJK"):
        with pytest.raises(ConnectorSettingsError):
            check_prefix(bad_prefix)
    assert [check_kind(k) for k in ("zammad", "znuny", "webhook")] == ["zammad", "znuny", "webhook"]
    with pytest.raises(ConnectorSettingsError, match="unknown connector kind"):
        check_kind("jira")
    with pytest.raises(ConnectorSettingsError, match="must not hold credentials"):
        check_url("https://root:password@rt.example.com")
    for bad_url in ("ftp://rt.example.com", "rt.example.com", "https://rt.example.com/?q=1"):
        with pytest.raises(ConnectorSettingsError):
            check_url(bad_url)
    for bad_credential in ("", "  \n", "a\nb", "x" * 5000):
        with pytest.raises(ConnectorSettingsError):
            check_credential(bad_credential)


def test_a_znuny_credential_is_login_colon_password() -> None:
    """Znuny's web service has no tokens: the file holds the agent's LOGIN:PASSWORD (the
    password may hold colons); anything else is refused saying what is expected."""
    assert check_credential("secondline:pa:ss\n", "znuny") == "secondline:pa:ss"
    for bad in ("secondline", ":password", "secondline:"):
        with pytest.raises(ConnectorSettingsError, match="LOGIN:PASSWORD"):
            check_credential(bad, "znuny")
    assert check_credential("secondline", "zammad") == "secondline"


def test_each_kind_has_default_level_places() -> None:
    """Zammad's default level 1 is the group a new Zammad has, Znuny's the queue new mail
    lands in; RT's are three queues named for the levels."""
    assert default_levels("zammad").places[1] == "Users"
    assert default_levels("znuny").places[1] == "Raw"
    assert default_levels("rt").as_text() == "1=Level 1,2=Level 2,3=Level 3"


def test_external_ticket_numbers_as_ssh_user_names() -> None:
    assert parse_external_target("RT-1234") == ExternalTarget("RT", "1234", None)
    target = parse_external_target("ZM2-7+web01")
    assert target == ExternalTarget("ZM2", "7", "web01")
    assert target.ref == "ZM2-7"
    for other in ("T-1042", "rt-1", "RT-0", "RT-01", "RT-", "RT-12a", "-1", "RT-1-2"):
        assert parse_external_target(other) is None
    with pytest.raises(InvalidName):
        parse_external_target("RT-1+bad/agent")


def test_a_webhook_secret_is_long_enough_for_hmac() -> None:
    """A webhook's credential is the shared secret: shorter than 32 characters is refused
    with the command that makes a good one."""
    secret = "0123456789abcdef" * 4
    assert check_credential(secret + "\n", "webhook") == secret
    with pytest.raises(ConnectorSettingsError, match="openssl rand -hex 32"):
        check_credential("too-short", "webhook")
