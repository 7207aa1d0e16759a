"""Machine fit: OS families from OS names and commands, and the order it gives suggestions."""

from __future__ import annotations

from broker.kb.machine_fit import (
    article_families,
    command_family,
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
    items = [
        ("cups", frozenset({"linux"})),
        ("spooler", frozenset({"windows"})),
        ("generic", frozenset()),
        ("lpd", frozenset({"linux"})),
    ]
    assert machine_order(frozenset({"windows"}), items) == ["spooler", "generic", "cups", "lpd"]
    assert machine_order(frozenset(), items) == ["cups", "spooler", "generic", "lpd"]
