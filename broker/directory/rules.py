"""What a company directory (LDAP, Active Directory) says about a person, and what Secondline
makes of it (pure: no I/O, no clock).

- :class:`DirectorySettings`: where people and groups are, which group gives which role,
  which group or attribute names the customers a person may work for.
- :func:`person_filter` / :func:`group_filter`: LDAP search filters with every outside value
  escaped (RFC 4515), so a user name such as ``*)(uid=*`` matches nobody instead of everybody.
- :func:`decide`: a person's entry (or its absence) → a role, customers and SSH keys, or the
  reason the person has no access (shown on the console and in the audit log).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

from broker.auth.scopes import ROLES, Role, parse_role

OutagePolicy = Literal["keep", "end"]
# Attribute names (RFC 4512 descriptors): what an admin may give for the user and customer
# attributes; they go into filters and attribute lists unescaped, so nothing else is taken.
_ATTRIBUTE_RE: Final = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,63}$")
_GROUP_RE: Final = re.compile(r"^[^,=+<>#;\\\"\x00-\x1f]{1,64}$")
# Active Directory's userAccountControl: ACCOUNTDISABLE.
_AD_DISABLED: Final = 0x2
MAX_NAME: Final = 64


class SettingsError(ValueError):
    """A directory setting is not valid; the message says which and how to write it."""


@dataclass(frozen=True, kw_only=True)
class DirectorySettings:
    base_dn: str
    user_attribute: str = "uid"  # Active Directory: sAMAccountName
    user_object_class: str = "person"
    # Group cn (lower case) → role; a person in several gets the highest role.
    roles: tuple[tuple[str, Role], ...] = ()
    # Group cn (lower case) → customer name; and/or an attribute of the person holding
    # customer names. Neither: directory staff work for every customer.
    customer_groups: tuple[tuple[str, str], ...] = ()
    customer_attribute: str | None = None
    ssh_key_attribute: str | None = "sshPublicKey"
    sync_seconds: int = 300
    timeout_seconds: float = 5.0
    on_outage: OutagePolicy = "keep"

    @property
    def scoped(self) -> bool:
        return bool(self.customer_groups) or self.customer_attribute is not None

    def attributes(self) -> list[str]:
        """The attributes read for a person."""
        wanted = [
            self.user_attribute,
            "cn",
            "displayName",
            "memberOf",
            "userAccountControl",
            "pwdAccountLockedTime",
        ]
        for extra in (self.ssh_key_attribute, self.customer_attribute):
            if extra:
                wanted.append(extra)
        return wanted


def valid_attribute(text: str, what: str) -> str:
    if not _ATTRIBUTE_RE.fullmatch(text):
        raise SettingsError(
            f"{what} {text[:80]!r} is not an LDAP attribute name (letters, digits, '-')"
        )
    return text


def group_cn(text: str) -> str:
    """``cn=helpdesk-l2``, ``helpdesk-l2`` or a group's full DN → ``helpdesk-l2``."""
    first = text.strip().split(",", 1)[0].strip()
    if first.lower().startswith("cn="):
        first = first[3:].strip()
    if not _GROUP_RE.fullmatch(first):
        raise SettingsError(f"{text[:80]!r} is not a group name; write e.g. cn=helpdesk-l2")
    return first.lower()


def _pairs(text: str, what: str, example: str) -> list[tuple[str, str]]:
    pairs = []
    for item in text.split(","):
        if not item.strip():
            continue
        # "cn=helpdesk-l2=level2": the group may carry its "cn=" prefix.
        group, sep, value = item.strip().rpartition("=")
        if not sep or not group.strip() or not value.strip():
            raise SettingsError(f"{what} {item.strip()[:80]!r} is not GROUP=VALUE; e.g. {example}")
        pairs.append((group_cn(group), value.strip()))
    return pairs


def parse_roles(text: str) -> tuple[tuple[str, Role], ...]:
    """``cn=helpdesk-l1=level1,cn=helpdesk-l2=level2`` → ((group, role), …)."""
    example = "cn=helpdesk-l1=level1,cn=helpdesk-l2=level2"
    out: list[tuple[str, Role]] = []
    for group, value in _pairs(text, "the role mapping", example):
        try:
            out.append((group, parse_role(value)))
        except ValueError as exc:
            raise SettingsError(f"the role mapping for {group}: {exc}") from None
    if not out:
        raise SettingsError(f"map at least one group to a role, e.g. --roles {example}")
    return tuple(out)


def parse_customer_groups(text: str) -> tuple[tuple[str, str], ...]:
    """``cn=cust-acme=acme`` → ((group, customer), …)."""
    return tuple(
        (group, value.lower())
        for group, value in _pairs(text, "the customer mapping", "cn=cust-acme=acme")
    )


def escape_filter_value(value: str) -> str:
    """RFC 4515: every byte outside printable ASCII and the five specials as ``\\XX``."""
    out = []
    for byte in value.encode("utf-8"):
        char = chr(byte)
        if char in "*()\\" or byte < 0x20 or byte >= 0x7F:
            out.append(f"\\{byte:02x}")
        else:
            out.append(char)
    return "".join(out)


def person_filter(settings: DirectorySettings, name: str | None) -> str:
    """The people of the directory, or (``name``) the one with that user name."""
    kind = f"(objectClass={settings.user_object_class})"
    if name is None:
        return f"(&{kind}({settings.user_attribute}=*))"
    return f"(&{kind}({settings.user_attribute}={escape_filter_value(name)}))"


def mapped_groups(settings: DirectorySettings) -> list[str]:
    names = [g for g, _ in settings.roles] + [g for g, _ in settings.customer_groups]
    return sorted(set(names))


def group_filter(settings: DirectorySettings) -> str:
    """The groups named in the role and customer mappings (their members are read)."""
    cns = "".join(f"(cn={escape_filter_value(cn)})" for cn in mapped_groups(settings))
    return f"(|{cns})"


@dataclass(frozen=True)
class Person:
    """One person as the directory shows them (read from a search result)."""

    dn: str
    name: str  # the user attribute's value, lower case
    display_name: str
    groups: frozenset[str] = frozenset()  # cn of each group, lower case
    ssh_keys: tuple[str, ...] = ()
    customer_values: tuple[str, ...] = ()
    disabled: bool = False


def person_of(
    dn: str, attrs: dict[str, list[str]], settings: DirectorySettings, groups: frozenset[str]
) -> Person | None:
    """A search result entry (attribute names lower case, values as text) → a person; None
    when it has no usable user name."""
    names = attrs.get(settings.user_attribute.lower(), [])
    if not names or not names[0] or len(names[0]) > MAX_NAME:
        return None
    member_of = frozenset(
        cn for cn in (_cn_or_none(v) for v in attrs.get("memberof", [])) if cn is not None
    )
    control = attrs.get("useraccountcontrol", ["0"])[0]
    disabled = bool(attrs.get("pwdaccountlockedtime")) or (
        control.isdigit() and int(control) & _AD_DISABLED != 0
    )
    display = (attrs.get("displayname") or attrs.get("cn") or [""])[0]
    keys = attrs.get(settings.ssh_key_attribute.lower(), []) if settings.ssh_key_attribute else []
    customers = (
        attrs.get(settings.customer_attribute.lower(), []) if settings.customer_attribute else []
    )
    return Person(
        dn=dn,
        name=names[0].lower(),
        display_name=display[:200],
        groups=groups | member_of,
        ssh_keys=tuple(k.strip() for k in keys if k.strip()),
        customer_values=tuple(c.strip().lower() for c in customers if c.strip()),
        disabled=disabled,
    )


def _cn_or_none(dn: str) -> str | None:
    try:
        return group_cn(dn)
    except SettingsError:
        return None


@dataclass(frozen=True)
class Verdict:
    """What Secondline makes of one person: access with a role, or the reason there is none."""

    role: Role | None
    customers: tuple[str, ...] = ()
    ssh_keys: tuple[str, ...] = ()
    display_name: str = ""
    refusal: str | None = None

    @property
    def allowed(self) -> bool:
        return self.refusal is None


REMOVED: Final = "removed from the directory"
DISABLED: Final = "disabled in the directory"


def decide(person: Person | None, settings: DirectorySettings) -> Verdict:
    if person is None:
        return Verdict(None, refusal=REMOVED)
    if person.disabled:
        return Verdict(None, refusal=DISABLED)
    granted = [role for group, role in settings.roles if group in person.groups]
    if not granted:
        groups = ", ".join(g for g, _ in settings.roles)
        return Verdict(None, refusal=f"in none of the groups that give a role ({groups})")
    role = max(granted, key=ROLES.index)
    customers = sorted(
        {c for group, c in settings.customer_groups if group in person.groups}
        | set(person.customer_values)
    )
    if settings.scoped and not customers:
        # No customer rows means "every customer" for a Secondline account: a directory that
        # scopes customers must name at least one, or the person gets none.
        return Verdict(None, refusal="in none of the customer groups")
    return Verdict(
        role,
        customers=tuple(customers),
        ssh_keys=person.ssh_keys,
        display_name=person.display_name,
    )
