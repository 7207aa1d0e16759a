"""The broker's configuration file and variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.config import BrokerConfig, load_config, write_config
from broker.errors import ConfigError


def test_defaults_without_file(tmp_path: Path) -> None:
    """With no file and no variables the embedded defaults apply."""
    config = load_config(tmp_path, env={})
    assert config == BrokerConfig(data_dir=tmp_path)
    assert config.db_url.endswith("secondline.db")
    assert config.https_port == 8443


def test_file_then_environment(tmp_path: Path) -> None:
    """Variables override the file, and the file overrides defaults."""
    write_config(tmp_path, "https://broker.example:9443", {"https_port": 9443, "ssh_port": 2022})
    config = load_config(tmp_path, env={"SECONDLINE_SSH_PORT": "2200", "SECONDLINE_URL": "x"})
    assert (config.public_url, config.https_port, config.ssh_port) == (
        "https://broker.example:9443",
        9443,
        2200,
    )


def test_unknown_file_key_is_named(tmp_path: Path) -> None:
    """An unknown key in the file is an error that names it."""
    (tmp_path / "secondline.toml").write_text('public_url = "https://a"\nhttp_port = 1\n')
    with pytest.raises(ConfigError, match="unknown key 'http_port'"):
        load_config(tmp_path, env={})


def test_unknown_variable_is_named(tmp_path: Path) -> None:
    """An unknown SECONDLINE_ variable is an error that names it."""
    with pytest.raises(ConfigError, match="SECONDLINE_HTTP_PORT"):
        load_config(tmp_path, env={"SECONDLINE_HTTP_PORT": "1"})


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('https_port = "many"\n', "whole number"),
        ("https_port = true\n", "whole number"),
        ("https_port = -1\n", "out of range"),
        ("public_url = 5\n", "must be a string"),
        ('public_url = "http://plain"\n', "https://"),
        ("this is = not toml\n", "cannot be read"),
    ],
)
def test_bad_values_are_refused(tmp_path: Path, text: str, match: str) -> None:
    """Wrong types, ranges, schemes and syntax each get a clear error."""
    (tmp_path / "secondline.toml").write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_config(tmp_path, env={})


def test_bad_variable_value(tmp_path: Path) -> None:
    """A variable that is not a number where one is needed is refused."""
    with pytest.raises(ConfigError, match="whole number"):
        load_config(tmp_path, env={"SECONDLINE_HTTPS_PORT": "eighty"})


def test_legacy_kex_setting_is_a_boolean(tmp_path: Path) -> None:
    """ssh_allow_legacy_kex is off by default, true or false in the file and the
    environment, and anything else is refused with a clear error."""
    assert load_config(tmp_path, env={}).ssh_allow_legacy_kex is False
    write_config(tmp_path, "https://broker.example", {"ssh_allow_legacy_kex": True})
    assert load_config(tmp_path, env={}).ssh_allow_legacy_kex is True
    off = {"SECONDLINE_SSH_ALLOW_LEGACY_KEX": "false"}
    assert load_config(tmp_path, env=off).ssh_allow_legacy_kex is False
    for bad in ("maybe", "", "2"):
        with pytest.raises(ConfigError, match="must be true or false"):
            load_config(tmp_path, env={"SECONDLINE_SSH_ALLOW_LEGACY_KEX": bad})
    (tmp_path / "secondline.toml").write_text("ssh_allow_legacy_kex = 1\n")
    with pytest.raises(ConfigError, match="must be true or false"):
        load_config(tmp_path, env={})


def test_ssh_second_factor_per_deployment_and_role(tmp_path: Path) -> None:
    """per-shift for everyone by default; a role override wins for that role only."""
    assert load_config(tmp_path, env={}).second_factor_for("level2") == "per-shift"
    config = load_config(
        tmp_path,
        env={
            "SECONDLINE_SSH_SECOND_FACTOR": "off",
            "SECONDLINE_SSH_SECOND_FACTOR_ROLES": " admin=every-session , level1=per-shift",
        },
    )
    assert [config.second_factor_for(r) for r in ("level1", "level2", "admin")] == [
        "per-shift",
        "off",
        "every-session",
    ]


@pytest.mark.parametrize(
    ("env", "match"),
    [
        ({"SECONDLINE_SSH_SECOND_FACTOR": "sometimes"}, "must be one of every-session"),
        ({"SECONDLINE_SSH_SECOND_FACTOR_ROLES": "root=off"}, "'root=off' is not ROLE=POLICY"),
        ({"SECONDLINE_SSH_SECOND_FACTOR_ROLES": "admin"}, "'admin' is not ROLE=POLICY"),
        ({"SECONDLINE_SSH_SECOND_FACTOR_ROLES": "admin=maybe"}, "roles are level1"),
        ({"SECONDLINE_SSH_SHIFT_HOURS": "0"}, "ssh_shift_hours must be from 1 to 24"),
        ({"SECONDLINE_SSH_SHIFT_HOURS": "25"}, "ssh_shift_hours must be from 1 to 24"),
    ],
)
def test_bad_ssh_second_factor_settings_are_named(
    tmp_path: Path, env: dict[str, str], match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(tmp_path, env=env)
