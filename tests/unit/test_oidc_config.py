"""OpenID Connect settings: refused when they would weaken the sign-in."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.config import load_config
from broker.errors import ConfigError

GOOD = {
    "SECONDLINE_OIDC_ISSUER": "https://login.example.com/tenant",
    "SECONDLINE_OIDC_CLIENT_ID": "secondline",
    "SECONDLINE_OIDC_CLIENT_SECRET_FILE": "/etc/secondline/oidc.secret",
    "SECONDLINE_OIDC_ROLES": "helpdesk-l2=level2",
}


def test_a_complete_https_provider_is_taken(tmp_path: Path) -> None:
    """An https issuer with a client, a secret file and a role mapping loads."""
    assert load_config(tmp_path, env=GOOD).oidc_issuer == GOOD["SECONDLINE_OIDC_ISSUER"]


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"SECONDLINE_OIDC_ISSUER": "http://login.example.com"}, "https"),
        ({"SECONDLINE_OIDC_CLIENT_ID": ""}, "oidc_client_id"),
        ({"SECONDLINE_OIDC_ROLES": ""}, "oidc_roles"),
        ({"SECONDLINE_OIDC_TIMEOUT_SECONDS": "0"}, "oidc_timeout_seconds"),
    ],
)
def test_weak_or_incomplete_settings_are_refused(
    tmp_path: Path, change: dict[str, str], why: str
) -> None:
    """Plain http to another host, no client, no role mapping: the broker does not start."""
    with pytest.raises(ConfigError, match=why):
        load_config(tmp_path, env={**GOOD, **change})


def test_plain_http_is_allowed_for_a_provider_on_this_machine(tmp_path: Path) -> None:
    """A provider on loopback (a local test or development provider) may use http."""
    env = {**GOOD, "SECONDLINE_OIDC_ISSUER": "http://127.0.0.1:9000"}
    assert load_config(tmp_path, env=env).oidc_issuer == "http://127.0.0.1:9000"
