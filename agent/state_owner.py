"""Root acting on the state dir of the packaged agent, which belongs to its own account.

The Debian package runs the agent as the system account ``secondline-agent``, which owns
``/var/lib/secondline-agent``. When root runs a command on that dir (``sudo
secondline-agent status``, or the package's postinst enrolling), the command takes that
account's identity first, so every file keeps one owner and the agent's own check (files
that are not the running account's are refused) keeps holding. Only this one account is
adopted, and only by root: it is a step down, never up.
"""

from __future__ import annotations

import os
import pwd
from pathlib import Path
from typing import Final

#: The account the Debian package creates and runs the agent as.
AGENT_ACCOUNT: Final = "secondline-agent"


def account_to_become(euid: int, dir_uid: int | None, agent_uid: int | None) -> int | None:
    """The uid root should switch to for a state dir owned by ``dir_uid``, or None."""
    if euid != 0 or dir_uid is None or agent_uid is None:
        return None
    return agent_uid if dir_uid == agent_uid else None


def become_state_owner(state_dir: Path) -> None:
    """As root, take the packaged agent's identity when it owns ``state_dir``."""
    if os.geteuid() != 0:
        return
    try:
        dir_uid: int | None = state_dir.stat().st_uid
    except OSError:
        dir_uid = None
    try:
        entry: pwd.struct_passwd | None = pwd.getpwnam(AGENT_ACCOUNT)
    except KeyError:
        entry = None
    uid = account_to_become(0, dir_uid, entry.pw_uid if entry else None)
    if uid is None or entry is None:
        return
    os.initgroups(entry.pw_name, entry.pw_gid)
    os.setgid(entry.pw_gid)
    os.setuid(uid)
