"""API token scopes and which roles may hold them (pure)."""

from __future__ import annotations

from typing import Final, Literal

Role = Literal["level1", "level2", "level3", "admin"]
ROLES: Final[tuple[Role, ...]] = ("level1", "level2", "level3", "admin")

# read: see tickets, agents, sessions, KB; write: change tickets and KB;
# session: open, join and observe remote shells; admin: manage staff, agents, tokens, audit.
SCOPES: Final = ("read", "write", "session", "admin")

ROLE_SCOPES: Final[dict[Role, frozenset[str]]] = {
    "level1": frozenset({"read", "write", "session"}),
    "level2": frozenset({"read", "write", "session"}),
    "level3": frozenset({"read", "write", "session"}),
    "admin": frozenset({"read", "admin"}),
}


def parse_role(text: str) -> Role:
    for role in ROLES:
        if text == role:
            return role
    raise ValueError(f"unknown role {text!r}; use one of: {', '.join(ROLES)}")


def check_scopes(role: Role, wanted: frozenset[str]) -> str | None:
    """Return why ``wanted`` is refused for ``role``, or None when it is allowed."""
    unknown = sorted(wanted - set(SCOPES))
    if unknown:
        return f"unknown scope {unknown[0]!r}; scopes are: {', '.join(SCOPES)}"
    wider = sorted(wanted - ROLE_SCOPES[role])
    if wider:
        return (
            f"scope {wider[0]!r} is wider than the role {role} allows "
            f"({', '.join(sorted(ROLE_SCOPES[role]))})"
        )
    return None
