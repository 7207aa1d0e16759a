"""Unit tests of the one-line install command: every value reaches the shell as one
argument, verbatim, and values that are not what they claim are refused by name."""

from __future__ import annotations

import shlex
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.agents.install_command import (
    INSTALL_SCRIPT,
    InstallValues,
    install_command,
    shell_line,
)
from broker.agents.packages import newest, parse_package_name
from broker.errors import InputError

GOOD = InstallValues(
    broker_url="https://support.example.com:8443",
    package_url="https://support.example.com:8443/agent/packages/0.1.0/secondline-agent_0.1.0_amd64.deb",
    tls_pin="sha256//" + "A" * 43 + "=",
    sha256="0" * 64,
    token=f"sle1.abcdefgh1234.{'A' * 32}.{'0' * 64}",
)
HOSTILE = [
    "it's",
    '"double"',
    "$(touch /tmp/owned)",
    "`id`",
    "a\nb",
    "x; rm -rf /",
    "\\'",
    "a" * 4096,
]


def _through_sh(values: list[str]) -> list[str]:
    out = subprocess.run(
        ["sh", "-c", shell_line(["printf", "%s\\0", *values])],
        capture_output=True,
        check=True,
        timeout=10,
    ).stdout
    return out.decode().split("\0")[:-1]


def test_hostile_words_reach_the_shell_verbatim() -> None:
    """Quotes, $(), backticks, newlines and 4 KB each arrive as one argument, unchanged."""
    assert _through_sh(HOSTILE) == HOSTILE


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        # No NUL and no lone surrogate: neither can be in a command-line word at all (a
        # surrogate has no UTF-8 form; Hypothesis found '\ud800' once).
        st.text(st.characters(codec="utf-8", blacklist_characters="\0"), max_size=200),
        min_size=1,
        max_size=5,
    )
)
def test_any_words_reach_the_shell_verbatim(values: list[str]) -> None:
    """Whatever the text, sh sees exactly the words shell_line was given."""
    assert _through_sh(values) == values


def test_the_command_is_one_line_of_the_fixed_script_and_its_values() -> None:
    """The values are arguments of the constant script, never part of it."""
    command = install_command(GOOD)
    assert "\n" not in command
    assert shlex.split(command) == [
        "sudo",
        "sh",
        "-c",
        INSTALL_SCRIPT,
        "secondline-install",
        GOOD.broker_url,
        GOOD.package_url,
        GOOD.tls_pin,
        GOOD.sha256,
        GOOD.token,
    ]


@pytest.mark.parametrize(
    ("field", "name"),
    [
        ("broker_url", "broker URL"),
        ("package_url", "package URL"),
        ("tls_pin", "certificate pin"),
        ("sha256", "package digest"),
        ("token", "token"),
    ],
)
def test_hostile_values_are_refused_naming_the_field(field: str, name: str) -> None:
    """A field holding quotes, $(), a newline or 4 KB is refused, the error naming it."""
    for bad in HOSTILE:
        good = getattr(GOOD, field)
        for value in (bad, good + bad, bad + good):
            fields = {f: getattr(GOOD, f) for f in InstallValues.__dataclass_fields__}
            fields[field] = value
            with pytest.raises(InputError, match=f"the {name}"):
                install_command(InstallValues(**fields))


def test_package_names_and_the_newest_version() -> None:
    """Only secondline-agent_VERSION_ARCH.deb names count; versions compare as numbers."""
    names = [
        parse_package_name(n)
        for n in (
            "secondline-agent_0.9.0_amd64.deb",
            "secondline-agent_0.10.0_amd64.deb",
            "secondline-agent_1.0.0_arm64.deb",
        )
    ]
    assert all(n is not None for n in names)
    found = newest([n for n in names if n is not None], "amd64")
    assert found is not None
    assert (found.version, found.path) == (
        "0.10.0",
        "/agent/packages/0.10.0/secondline-agent_0.10.0_amd64.deb",
    )
    assert newest([n for n in names if n is not None], "i386") is None
    for bad in (
        "secondline-agent_0.1_amd64.deb.sha",
        "x_0.1_amd64.deb",
        "secondline-agent_1.0-$(id)_amd64.deb",
        "../secondline-agent_0.1_amd64.deb",
    ):
        assert parse_package_name(bad) is None
