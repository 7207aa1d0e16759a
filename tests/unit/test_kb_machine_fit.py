"""Machine fit: OS families from OS names and commands, and the order it gives suggestions."""

from __future__ import annotations

from broker.kb.machine_fit import (
    article_families,
    article_software,
    command_family,
    command_software,
    fits,
    machine_order,
    os_families,
)


def test_os_families_from_names() -> None:
    """Distribution and product names map to their family; unknown names to none."""
    assert os_families(["Debian GNU/Linux 12", "Ubuntu 24.04"]) == {"linux"}
    assert os_families(["Windows 11", "Windows Server 2022"]) == {"windows"}
    assert os_families(["macOS 14"]) == {"macos"}
    assert os_families(["FreeDOS", ""]) == frozenset()


def test_command_family_by_program() -> None:
    """The program decides (after sudo); cmdlets are Windows; shell builtins are unclear."""
    assert command_family("sudo systemctl restart cups") == "linux"
    assert command_family("/usr/bin/lpstat -t") == "linux"
    assert command_family("ipconfig /flushdns") == "windows"
    assert command_family("Unlock-ADAccount -Identity jdoe") == "windows"
    assert command_family("echo hello") is None
    assert command_family("   ") is None


def test_article_families_prefer_os_names() -> None:
    """OS names win; without them the commands tell."""
    assert article_families(["Windows 11"], ["apt-get update"]) == {"windows"}
    assert article_families([], ["lpstat -t", "systemctl restart cups"]) == {"linux"}
    assert article_families([], ["echo hi"]) == frozenset()


def test_fit_needs_both_sides_known_to_refuse() -> None:
    """Unknown on either side fits; known and disjoint does not."""
    assert fits(frozenset(), frozenset({"linux"}))
    assert fits(frozenset({"windows"}), frozenset())
    assert fits(frozenset({"windows", "linux"}), frozenset({"linux"}))
    assert not fits(frozenset({"windows"}), frozenset({"linux"}))


def test_machine_order_moves_misfits_last_keeping_order() -> None:
    """Articles for another OS go after the fitting ones; each group keeps its ranking."""
    none: frozenset[str] = frozenset()
    items = [
        ("cups", frozenset({"linux"}), none),
        ("spooler", frozenset({"windows"}), none),
        ("generic", none, none),
        ("lpd", frozenset({"linux"}), none),
    ]
    assert machine_order(frozenset({"windows"}), items) == ["spooler", "generic", "cups", "lpd"]
    assert machine_order(frozenset(), items) == ["cups", "spooler", "generic", "lpd"]


def test_command_software_names_what_commands_act_on() -> None:
    """Services of systemctl and service, packages of the package managers; options and
    other programs name nothing."""
    assert command_software("sudo systemctl restart cups.service") == {"cups"}
    assert command_software("systemctl --no-pager status cups cups-browsed") == {
        "cups",
        "cups-browsed",
    }
    assert command_software("service smbd restart") == {"smbd"}
    assert command_software("apt-get install --reinstall cups-filters") == {"cups-filters"}
    assert command_software("dnf -y remove PackageKit") == {"packagekit"}
    assert command_software("systemctl daemon-reload") == frozenset()
    assert command_software("lpstat -t") == frozenset()
    assert command_software("apt-get install '<x>'") == frozenset()
    assert command_software("") == frozenset()


def test_article_software_from_commands_and_tags() -> None:
    """Every tag counts: it matters only if the machine has software of that name."""
    assert article_software(["systemctl restart cupsd"], ["CUPS"]) == {"cups", "cupsd"}
    assert article_software(["net stop spooler"], ["windows"]) == {"windows"}


def test_articles_naming_installed_software_go_first_among_those_that_fit() -> None:
    """On a Debian machine with cups: the article whose session restarted cups moves up
    past a better text match for Linux without it; an article for Windows stays last even
    if it names something installed."""
    linux, windows = frozenset({"linux"}), frozenset({"windows"})
    items = [
        ("lpd", linux, frozenset({"lpd"})),
        ("spooler", windows, frozenset({"spooler", "cups"})),
        ("cups", linux, frozenset({"cups"})),
        ("generic", frozenset(), frozenset()),
    ]
    installed = frozenset({"cups", "openssh-server"})
    assert machine_order(linux, items, installed) == ["cups", "lpd", "generic", "spooler"]
    # An older agent reports no software: the order is the OS order alone.
    assert machine_order(linux, items) == ["lpd", "cups", "generic", "spooler"]
