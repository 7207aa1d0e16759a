"""Who a session's processes run as, and with which environment.

Sessions run as ``login_user`` from agent.toml, or as the account the agent runs as.
When they differ the agent must be root; the child then drops to the user's uid, gid and
supplementary groups before it executes the shell (no ``su`` and no shell string: the
user switch is done by ``subprocess`` itself).
"""

from __future__ import annotations

import os
import pwd
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from agent.errors import SpawnError
from agent.protocol import SessionEnv

_ROOT_PATH: Final = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_USER_PATH: Final = "/usr/local/bin:/usr/bin:/bin:/usr/local/games:/usr/games"
_LOCALE_RE: Final = re.compile(r"[A-Za-z0-9_.@:/+-]{1,64}")
_LOCALE_NAMES: Final = ("LANG", "LC_ALL", "LC_CTYPE", "LC_MESSAGES", "TZ")


@dataclass(frozen=True, slots=True, kw_only=True)
class LoginAccount:
    """A resolved login account: ids, groups, home and shell."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str
    shell: str

    @classmethod
    def resolve(cls, login_user: str | None, shell_override: str | None) -> LoginAccount:
        """Look the account up (``None``: the agent's own account) and check we may use it."""
        euid = os.geteuid()
        try:
            entry = pwd.getpwuid(euid) if login_user is None else pwd.getpwnam(login_user)
        except KeyError:
            raise SpawnError(
                f"the login user {login_user or euid} does not exist on this machine; "
                "create it or change login_user in agent.toml"
            ) from None
        if entry.pw_uid != euid and euid != 0:
            raise SpawnError(
                f"the agent cannot start shells as {entry.pw_name} because it does not run as "
                "root; run it as root or remove login_user from agent.toml"
            )
        switch = entry.pw_uid != euid
        groups = tuple(os.getgrouplist(entry.pw_name, entry.pw_gid)) if switch else ()
        return cls(
            name=entry.pw_name,
            uid=entry.pw_uid,
            gid=entry.pw_gid,
            groups=groups,
            home=entry.pw_dir or "/",
            shell=shell_override or entry.pw_shell or "/bin/sh",
        )

    @property
    def switches_user(self) -> bool:
        """True when the child must drop to another uid."""
        return self.uid != os.geteuid()

    @property
    def working_dir(self) -> str:
        """The home dir, or ``/`` when it does not exist (as sshd does)."""
        return self.home if os.path.isdir(self.home) else "/"


def session_environment(
    account: LoginAccount,
    session: SessionEnv,
    *,
    term: str | None,
    inherited: Mapping[str, str],
) -> dict[str, str]:
    """A clean login environment: nothing of the agent's own leaks in but the locale."""
    env = {
        "HOME": account.home,
        "USER": account.name,
        "LOGNAME": account.name,
        "SHELL": account.shell,
        "PATH": _ROOT_PATH if account.uid == 0 else _USER_PATH,
        "LANG": "C.UTF-8",
        "SL_SESSION": session.session,
        "SL_STAFF": session.staff,
        "SL_STAFF_LEVEL": str(session.staff_level),
        "SL_TICKET": session.ticket,
    }
    for name in _LOCALE_NAMES:
        value = inherited.get(name)
        if value is not None and _LOCALE_RE.fullmatch(value):
            env[name] = value
    if term is not None:
        env["TERM"] = term
    return env
