"""Unit tests of the state dir: layout, permissions, atomic writes, enrollment, local config."""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

import pytest

from agent.errors import ConfigError, MessageError, NotEnrolledError, StateError
from agent.protocol import Ed25519PublicKey
from agent.state import (
    EnrolledState,
    LocalConfig,
    StatePaths,
    atomic_write,
    check_private,
    default_state_dir,
    ensure_state_dir,
    load_config,
    load_enrolled_state,
    parse_config,
)

KEY = Ed25519PublicKey(raw=bytes(range(32)))
STATE = EnrolledState(
    broker_url="https://broker.example:8443",
    tunnel_url="wss://broker.example:8443/agent/v1/tunnel",
    agent_id="ag-0123456789abcdef",
    name="web01",
    customer="acme",
    consent="attended",
    broker_ssh_key=KEY,
    enrolled_at="2024-05-01T12:00:00Z",
)


def test_default_state_dir() -> None:
    """Root uses /var/lib; users use XDG_STATE_HOME or ~/.local/state."""
    assert default_state_dir(0, {}) == Path("/var/lib/secondline-agent")
    assert default_state_dir(1000, {"XDG_STATE_HOME": "/x/state", "HOME": "/home/a"}) == Path(
        "/x/state/secondline-agent"
    )
    assert default_state_dir(1000, {"XDG_STATE_HOME": "relative", "HOME": "/home/a"}) == Path(
        "/home/a/.local/state/secondline-agent"
    )


def test_paths_layout() -> None:
    """Every file of the contract lives directly in the state dir."""
    paths = StatePaths(Path("/s"))
    names = [
        paths.agent_key, paths.broker_pem, paths.state_json, paths.config,
        paths.sessions_log, paths.status_json, paths.control_sock,
    ]  # fmt: skip
    assert [path.name for path in names] == [
        "agent_key", "broker.pem", "state.json", "agent.toml",
        "sessions.jsonl", "status.json", "control.sock",
    ]  # fmt: skip


def test_ensure_state_dir_creates_0700_and_refuses_open_dirs(tmp_path: Path) -> None:
    """The dir is created 0700; a dir others can reach is refused with the chmod to run."""
    paths = StatePaths(tmp_path / "a" / "state")
    ensure_state_dir(paths)
    assert paths.root.stat().st_mode & 0o777 == 0o700
    paths.root.chmod(0o755)
    with pytest.raises(StateError, match="chmod 700"):
        ensure_state_dir(paths)


def test_atomic_write_replaces_whole_files_with_0600(tmp_path: Path) -> None:
    """atomic_write leaves the new content, mode 0600, and no temporary files."""
    target = tmp_path / "file"
    target.write_bytes(b"old")
    target.chmod(0o644)
    atomic_write(target, b"new")
    assert target.read_bytes() == b"new"
    assert target.stat().st_mode & 0o777 == 0o600
    assert os.listdir(tmp_path) == ["file"]


def test_check_private_refuses_group_or_world_access(tmp_path: Path) -> None:
    """A 0644 file is refused with the exact chmod command."""
    target = tmp_path / "agent_key"
    target.write_bytes(b"k")
    target.chmod(0o644)
    with pytest.raises(StateError, match=f"chmod 600 {target}"):
        check_private(target)
    target.chmod(0o600)
    check_private(target)
    with pytest.raises(StateError, match="cannot read"):
        check_private(tmp_path / "missing")


def test_enrolled_state_round_trips(tmp_path: Path) -> None:
    """state.json written and read back gives the same state."""
    paths = StatePaths(tmp_path)
    atomic_write(paths.state_json, STATE.serialize())
    assert load_enrolled_state(paths) == STATE


def test_enrolled_state_keeps_the_release_key(tmp_path: Path) -> None:
    """The pinned release key is written and read back; state without it means None."""
    paths = StatePaths(tmp_path)
    pinned = dataclasses.replace(STATE, release_key=Ed25519PublicKey(raw=bytes(32)))
    atomic_write(paths.state_json, pinned.serialize())
    assert load_enrolled_state(paths) == pinned


def test_missing_state_means_not_enrolled(tmp_path: Path) -> None:
    """Without state.json the agent is not enrolled, and the message says how to enroll."""
    with pytest.raises(NotEnrolledError, match="secondline-agent enroll"):
        load_enrolled_state(StatePaths(tmp_path))


@pytest.mark.parametrize(
    "data",
    [
        b"{}",
        STATE.serialize().replace(b"attended", b"sometimes"),
        STATE.serialize().replace(b"2024-05-01T12:00:00Z", b"yesterday"),
        STATE.serialize().replace(b"https://", b"http://"),
    ],
)
def test_damaged_state_is_refused(tmp_path: Path, data: bytes) -> None:
    """A damaged state.json is a StateError telling the user to enroll again."""
    paths = StatePaths(tmp_path)
    atomic_write(paths.state_json, data)
    with pytest.raises(StateError, match="enroll the agent again"):
        load_enrolled_state(paths)


def test_state_parse_requires_the_time() -> None:
    """enrolled_at must be present."""
    with pytest.raises(MessageError):
        EnrolledState.parse(STATE.serialize().replace(b'"enrolled_at"', b'"other"'))


def test_config_defaults_and_values() -> None:
    """An empty config gives the defaults; known keys are read."""
    assert parse_config("") == LocalConfig()
    config = parse_config(
        'login_user = "support"\nconsent_timeout_seconds = 30\nshell = "/bin/bash"\n'
    )
    assert config.login_user == "support"
    assert config.consent_timeout_seconds == 30.0
    assert config.shell == "/bin/bash"
    update = parse_config(
        'update_command = "/usr/local/sbin/hook"\nupdate_check_interval_seconds = 600\n'
        "rollback_after_seconds = 5\n"
    )
    assert update.update_command == "/usr/local/sbin/hook"
    assert LocalConfig().desktop_windows
    assert not parse_config("desktop_windows = false\n").desktop_windows
    assert (update.update_check_interval_seconds, update.rollback_after_seconds) == (600.0, 5.0)
    assert (LocalConfig().update_check_interval_seconds, LocalConfig().rollback_after_seconds) == (
        3600.0,
        120.0,
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("colour = 'blue'\n", "unknown key 'colour'"),
        ("login_user = 'bad user'\n", "login_user"),
        ("login_user = 5\n", "login_user"),
        ("consent_timeout_seconds = 0\n", "consent_timeout_seconds"),
        ("consent_timeout_seconds = 99999\n", "consent_timeout_seconds"),
        ("consent_timeout_seconds = true\n", "consent_timeout_seconds"),
        ("consent_timeout_seconds = '5'\n", "consent_timeout_seconds"),
        ("shell = 'bash'\n", "shell must be an absolute path"),
        ("login_user = \n", "not valid TOML"),
        ("update_command = 'hook'\n", "update_command must be the absolute path"),
        ("update_command = ['/bin/hook']\n", "update_command"),
        ("update_check_interval_seconds = 5\n", "update_check_interval_seconds"),
        ("rollback_after_seconds = 0\n", "rollback_after_seconds"),
        ("rollback_after_seconds = 'soon'\n", "rollback_after_seconds"),
        ("desktop_windows = 'no'\n", "desktop_windows must be true or false"),
    ],
)
def test_config_errors_name_the_key(text: str, message: str) -> None:
    """Every invalid config is a ConfigError naming the key or the syntax problem."""
    with pytest.raises(ConfigError, match=message):
        parse_config(text)


def test_load_config_reads_the_private_file(tmp_path: Path) -> None:
    """agent.toml is optional, must be 0600 like every state file, and UTF-8."""
    paths = StatePaths(tmp_path)
    assert load_config(paths) == LocalConfig()
    atomic_write(paths.config, b"consent_timeout_seconds = 5\n")
    assert load_config(paths).consent_timeout_seconds == 5.0
    paths.config.chmod(0o644)
    with pytest.raises(StateError, match="chmod 600"):
        load_config(paths)
    atomic_write(paths.config, b"\xff\xfe")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(paths)


def test_docs_agent_toml_example_is_a_valid_config() -> None:
    """docs/agent.md's agent.toml example, every key in it, is what parse_config takes."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "agent.md").read_text(encoding="utf-8")
    [example] = re.findall(r"```toml\n(.*?)```", doc, re.DOTALL)
    config = parse_config(example)
    assert config.update_command == "/usr/local/sbin/install-secondline-agent"
    assert config.rollback_after_seconds == 120.0
    assert config.desktop_windows
