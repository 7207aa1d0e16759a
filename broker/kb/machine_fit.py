"""Whether an article fits the machine a ticket is about (pure).

A ticket's text says "printer does not print"; its machine says Windows 11. An article about
CUPS on Debian shares the words but not the machine. The agent reports the OS of each machine
linked to the ticket; an article names OS names and carries the commands of the session it
came from. Both sides are reduced to OS families (windows, linux, macos): from OS names, and
for an article without OS names from its commands (``apt-get``, ``systemctl`` are Linux;
``ipconfig``, ``Get-Printer`` are Windows). An article whose families are known and share
none with the ticket's machines goes after the ones that fit, never out of the list: the
machine may not be where the problem is (a Windows client of a Linux print server).

Newer agents also report the machine's installed packages and running services. An article
names software through its commands (``systemctl restart cups``, ``apt-get install
--reinstall cups-filters``, ``service smbd restart``) and its tags (``cups``); among the
articles that fit the machine's OS, those naming software the machine has come first, each
group keeping its order: the session that solved it worked on the same software.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Final, TypeVar

from broker.kb.analysis import fold, words

_FAMILY_WORDS: Final = {
    "windows": frozenset({"windows", "win10", "win11"}),
    "linux": frozenset(
        {"linux", "debian", "ubuntu", "fedora", "rhel", "centos", "suse", "opensuse", "alpine"}
        | {"mint", "arch", "rocky", "almalinux", "raspbian"}
    ),
    "macos": frozenset({"macos", "osx", "darwin"}),
}
# Programs by the OS family they run on; ``sudo`` is skipped before looking the name up.
_LINUX_TEXT: Final = (
    "apt apt-get aptitude dpkg snap yum dnf rpm zypper systemctl journalctl service lpstat "
    "lpadmin lp lpr cancel cupsctl cupsenable ip ifconfig nmcli iptables nft ufw mount umount "
    "df du lsblk fdisk mkfs chown chmod chgrp useradd usermod passwd sss_cache realm kinit "
    "klist timedatectl chronyc localectl hostnamectl update-ca-certificates restic rsync "
    "smbclient su ls cat grep find rm mv cp tail less vi nano crontab"
)
_WINDOWS_TEXT: Final = (
    "ipconfig netsh net cmdkey gpupdate gpresult manage-bde powercfg w32tm winget mstsc tzutil "
    "sfc dism reg regedit wmic schtasks taskkill tasklist robocopy xcopy del ren rd msiexec "
    "wusa certutil bcdedit chkdsk diskpart powershell pwsh"
)
_MAC_TEXT: Final = "brew softwareupdate diskutil launchctl defaults"
_COMMANDS: Final = (
    ("linux", frozenset(_LINUX_TEXT.split())),
    ("windows", frozenset(_WINDOWS_TEXT.split())),
    ("macos", frozenset(_MAC_TEXT.split())),
)
# PowerShell cmdlets are Verb-Noun (Get-Printer, Unlock-ADAccount): Windows.
_CMDLET: Final = re.compile(r"^[A-Z][a-z]+-[A-Z][A-Za-z]+$")

T = TypeVar("T")


def os_families(names: Iterable[str]) -> frozenset[str]:
    """The OS families named in OS names ("Debian GNU/Linux 12" → linux)."""
    found: set[str] = set()
    for name in names:
        folded = {fold(w) for w in words(name)}
        found.update(family for family, known in _FAMILY_WORDS.items() if folded & known)
    return frozenset(found)


def command_family(command: str) -> str | None:
    """The OS family a command line belongs to, by its program, or None when unclear."""
    parts = command.strip().split()
    if not parts:
        return None
    program = parts[1] if parts[0] == "sudo" and len(parts) > 1 else parts[0]
    if _CMDLET.match(program):
        return "windows"
    name = program.rsplit("/", 1)[-1].casefold()
    for family, known in _COMMANDS:
        if name in known:
            return family
    return None


def article_families(os_names: Sequence[str], commands: Sequence[str]) -> frozenset[str]:
    """The families an article is for: its OS names, else what its commands run on."""
    named = os_families(os_names)
    if named:
        return named
    return frozenset(f for f in (command_family(c) for c in commands) if f is not None)


def fits(machine: frozenset[str], article: frozenset[str]) -> bool:
    """False only when both sides are known and share no family."""
    return not machine or not article or bool(machine & article)


def machine_order(
    machine: frozenset[str],
    items: Sequence[tuple[T, frozenset[str], frozenset[str]]],
    installed: frozenset[str] = frozenset(),
) -> list[T]:
    """``items`` (best first, with the OS families each is for and the software it names)
    in groups, each keeping its order: fitting the machine's OS and naming software it has
    (``installed``), fitting, not fitting and naming its software, not fitting."""
    fitting = [(item, names) for item, families, names in items if fits(machine, families)]
    others = [(item, names) for item, families, names in items if not fits(machine, families)]
    return software_first(installed, fitting) + software_first(installed, others)


# Commands that name software as arguments: the program, the verbs after which names follow.
_SERVICE_VERBS: Final = frozenset(
    ("start", "stop", "restart", "reload", "status", "enable", "disable", "try-restart")
)
_PACKAGE_VERBS: Final = frozenset(["install", "reinstall", "remove", "purge", "upgrade", "update"])
_PACKAGERS: Final = frozenset(["apt", "apt-get", "aptitude", "dnf", "yum", "zypper"])
_NAME: Final = re.compile(r"[a-z0-9][a-z0-9@:+._-]{0,99}")


def command_software(command: str) -> frozenset[str]:
    """The packages and services a command line acts on ("systemctl restart cups" → cups,
    "apt-get install --reinstall cups-filters" → cups-filters); none when unclear."""
    parts = command.strip().split()
    if parts[:1] == ["sudo"]:
        parts = parts[1:]
    if not parts:
        return frozenset()
    program = parts[0].rsplit("/", 1)[-1].casefold()
    args = [a.casefold() for a in parts[1:] if not a.startswith("-")]
    if program == "systemctl" and args and args[0] in _SERVICE_VERBS:
        names = args[1:]
    elif program == "service" and len(args) >= 2:
        names = args[:1]
    elif program in _PACKAGERS and args and args[0] in _PACKAGE_VERBS:
        names = args[1:]
    else:
        return frozenset()
    found = {name.removesuffix(".service") for name in names}
    return frozenset(name for name in found if _NAME.fullmatch(name))


def article_software(commands: Sequence[str], tags: Sequence[str]) -> frozenset[str]:
    """The software an article is about: what its commands act on, and its tags (a tag
    ``cups`` is the package and the service of that name)."""
    found = {t.casefold() for t in tags if _NAME.fullmatch(t.casefold())}
    for command in commands:
        found |= command_software(command)
    return frozenset(found)


def software_first(installed: frozenset[str], items: Sequence[tuple[T, frozenset[str]]]) -> list[T]:
    """``items`` (best first, with the software each names) with those naming software the
    machine has moved before the others, each group keeping its order."""
    sharing = [item for item, names in items if installed & names]
    others = [item for item, names in items if not installed & names]
    return sharing + others
