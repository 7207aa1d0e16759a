"""The directory rules: filter escaping, the group mappings, and each person's verdict."""

from __future__ import annotations

import pytest

from broker.directory.rules import (
    DISABLED,
    REMOVED,
    DirectorySettings,
    Person,
    SettingsError,
    decide,
    escape_filter_value,
    group_cn,
    group_filter,
    parse_customer_groups,
    parse_roles,
    person_filter,
    person_of,
)

SETTINGS = DirectorySettings(
    base_dn="dc=example,dc=com",
    roles=parse_roles("cn=helpdesk-l1=level1,cn=helpdesk-l2=level2,admins=admin"),
)


def dora(**kw: object) -> Person:
    fields: dict[str, object] = {
        "dn": "uid=dora,ou=people,dc=example,dc=com",
        "name": "dora",
        "display_name": "Dora",
        "groups": frozenset({"helpdesk-l2"}),
    }
    fields.update(kw)
    return Person(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("*)(uid=*", "\\2a\\29\\28uid=\\2a"),
        ("a\x00b", "a\\00b"),
        ("back\\slash", "back\\5cslash"),
        ("müller", "m\\c3\\bcller"),
        ("plain-name.1", "plain-name.1"),
    ],
)
def test_filter_values_are_escaped(raw: str, escaped: str) -> None:
    """RFC 4515: the specials, NUL and every non-ASCII byte become \\XX."""
    assert escape_filter_value(raw) == escaped


def test_an_injected_name_stays_one_value_of_one_filter() -> None:
    """``*)(uid=*`` cannot close the filter and match everyone; 4 KB stays one value."""
    f = person_filter(SETTINGS, "*)(uid=*")
    assert f == "(&(objectClass=person)(uid=\\2a\\29\\28uid=\\2a))"
    assert f.count("(") == f.count(")") == 3
    long = person_filter(SETTINGS, "a" * 4096)
    assert long.count("(") == 3


def test_group_filter_names_only_the_mapped_groups() -> None:
    """The sync reads the members of the mapped groups, nothing else."""
    assert group_filter(SETTINGS) == "(|(cn=admins)(cn=helpdesk-l1)(cn=helpdesk-l2))"


@pytest.mark.parametrize(
    "text", ["cn=helpdesk-l2", "helpdesk-l2", "CN=Helpdesk-L2,ou=groups,dc=example,dc=com"]
)
def test_group_names_in_every_spelling(text: str) -> None:
    """A group may be named by cn=…, bare, or by its DN (as memberOf gives it)."""
    assert group_cn(text) == "helpdesk-l2"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "at least one group"),
        ("helpdesk-l2", "GROUP=VALUE"),
        ("cn=helpdesk-l2=boss", "unknown role"),
        ("cn=a\x01b=level1", "not a group name"),
    ],
)
def test_bad_role_mappings_say_what_to_write(text: str, why: str) -> None:
    """A mapping that cannot be read is refused with an example of one that can."""
    with pytest.raises(SettingsError, match=why):
        parse_roles(text)


def test_role_is_the_highest_of_the_mapped_groups() -> None:
    """A person in level 1 and level 2 groups is level 2; unmapped groups give nothing."""
    verdict = decide(dora(groups=frozenset({"helpdesk-l1", "helpdesk-l2", "x"})), SETTINGS)
    assert verdict.allowed
    assert verdict.role == "level2"
    assert verdict.customers == ()


def test_no_mapped_group_removed_or_disabled_take_access() -> None:
    """Each way of losing access says which."""
    assert decide(None, SETTINGS).refusal == REMOVED
    assert decide(dora(disabled=True), SETTINGS).refusal == DISABLED
    outside = decide(dora(groups=frozenset({"other"})), SETTINGS)
    assert outside.role is None
    assert outside.refusal is not None
    assert "helpdesk-l2" in outside.refusal


def test_customer_scopes_from_groups_and_none_means_no_access() -> None:
    """With customer groups set, a person in none of them gets no access, never every
    customer (which is what an account without customer rows means)."""
    scoped = DirectorySettings(
        base_dn="dc=example,dc=com",
        roles=SETTINGS.roles,
        customer_groups=parse_customer_groups("cn=cust-acme=acme,cust-globex=Globex"),
    )
    both = decide(dora(groups=frozenset({"helpdesk-l2", "cust-acme", "cust-globex"})), scoped)
    assert both.customers == ("acme", "globex")
    none = decide(dora(), scoped)
    assert not none.allowed
    assert none.refusal == "in none of the customer groups"


def test_a_search_entry_becomes_a_person() -> None:
    """Attributes are read case-insensitively; AD's disabled bit and memberOf count."""
    attrs = {
        "uid": ["Dora"],
        "displayname": ["Dora D."],
        "memberof": ["CN=Helpdesk-L2,OU=Groups,DC=example,DC=com"],
        "sshpublickey": ["ssh-ed25519 AAAA dora", " "],
        "useraccountcontrol": ["514"],
    }
    person = person_of("uid=Dora,dc=example,dc=com", attrs, SETTINGS, frozenset())
    assert person is not None
    assert person.name == "dora"
    assert person.groups == frozenset({"helpdesk-l2"})
    assert person.ssh_keys == ("ssh-ed25519 AAAA dora",)
    assert person.disabled
    assert person_of("x", {"uid": ["a" * 65]}, SETTINGS, frozenset()) is None
