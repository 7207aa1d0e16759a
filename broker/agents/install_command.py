"""The one-line install command of ``secondline token create --install-command``.

What it does on the customer's machine, as root::

    read /etc/default/secondline-agent if it is there (HTTPS_PROXY, NO_PROXY), download
    the package from the broker with curl, pinned to the broker certificate's
    public key (curl --pinnedpubkey; the certificate is self-signed unless the admin set
    another, so no CA is asked), check its SHA-256, write the broker URL and the token to
    /etc/secondline-agent/enroll (0600), and install it with apt-get, whose postinst
    enrolls (checking the full certificate digest carried in the token) and starts the
    agent.

The script is a constant. Every value (broker URL, package URL, pin, digest, token) is a
positional argument of ``sh -c``, quoted with :func:`shlex.quote` and used only as
``"$N"``: nothing is pasted into the script. Each value is also checked against its exact
form first, so that a value that would break the single line (a newline) or be no URL, pin,
digest or token at all is refused with the field's name instead of being printed.

Pure: no I/O; the caller supplies the values.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from agent.protocol import TOKEN_RE
from broker.errors import InputError

#: Characters a URL may hold here: RFC 3986's unreserved and reserved ones and %, minus
#: the few a shell treats specially even though quoting makes them harmless ($ ' ( ) * !).
_URL_RE: Final = re.compile(r"https://[A-Za-z0-9._~:/?#\[\]@&+,;=%-]{1,2000}")
_PIN_RE: Final = re.compile(r"sha256//[A-Za-z0-9+/]{43}=")
_SHA256_RE: Final = re.compile(r"[0-9a-f]{64}")
_FIELD_MAX: Final = 2048

#: The installer. $1 broker URL, $2 package URL, $3 public-key pin, $4 SHA-256, $5 token.
INSTALL_SCRIPT: Final = "; ".join(
    (
        "set -eu",
        # Behind a proxy: HTTPS_PROXY in the service's settings file serves curl too.
        "if [ -r /etc/default/secondline-agent ]; then set -a;"
        " . /etc/default/secondline-agent; set +a; fi",
        "d=$(mktemp -d)",
        'trap "rm -rf -- \\"\\$d\\"" EXIT',
        'curl -fsS --proto =https --insecure --pinnedpubkey "$3" -o "$d/secondline-agent.deb"'
        ' -- "$2" || { echo "secondline-install: could not download the agent from the broker'
        ' (above: why); nothing was installed" >&2; exit 1; }',
        'echo "$4  $d/secondline-agent.deb" | sha256sum --check --quiet - || {'
        ' echo "secondline-install: the package is not the one this command names;'
        ' nothing was installed. Ask the helpdesk for a new command" >&2; exit 1; }',
        "umask 077",
        "mkdir -p /etc/secondline-agent",
        'printf "%s\\n%s\\n" "$1" "$5" > /etc/secondline-agent/enroll',
        'DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$d/secondline-agent.deb"',
    )
)


@dataclass(frozen=True, slots=True, kw_only=True)
class InstallValues:
    """What the command carries."""

    broker_url: str
    package_url: str
    tls_pin: str
    sha256: str
    token: str


def _check(name: str, value: str, pattern: re.Pattern[str], what: str) -> str:
    if len(value) > _FIELD_MAX:
        raise InputError(
            f"cannot make the install command: the {name} is longer than {_FIELD_MAX} "
            "characters; check the broker's configuration",
            code="install_command_invalid",
            status=422,
        )
    if pattern.fullmatch(value) is None:
        raise InputError(
            f"cannot make the install command: the {name} is not {what}; "
            "check the broker's configuration",
            code="install_command_invalid",
            status=422,
        )
    return value


def shell_line(argv: Sequence[str]) -> str:
    """``argv`` as one shell command line, every word quoted as needed."""
    return " ".join(shlex.quote(word) for word in argv)


def install_command(values: InstallValues) -> str:
    """The command line, for ``sudo``-capable admins of the customer's machine."""
    args = (
        _check("broker URL (public_url)", values.broker_url, _URL_RE, "an https:// URL"),
        _check("package URL", values.package_url, _URL_RE, "an https:// URL"),
        _check("certificate pin", values.tls_pin, _PIN_RE, "a sha256// public-key pin"),
        _check("package digest", values.sha256, _SHA256_RE, "a SHA-256 in hex"),
        _check("token", values.token, TOKEN_RE, "an enrollment token"),
    )
    return shell_line(["sudo", "sh", "-c", INSTALL_SCRIPT, "secondline-install", *args])
