"""Unit tests of the command line: usage, local refusals and their one-sentence errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.cli import main


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_commands_need_an_enrollment(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """status, run and help on an empty state dir say how to enroll."""
    for command in (["status"], ["run"], ["help", "printer"]):
        code, _, err = _run(capsys, *command, "--state-dir", str(tmp_path))
        assert code == 1
        assert err.startswith("secondline-agent: this agent is not enrolled")
        assert err.count("\n") == 1


def test_session_ids_are_checked_before_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """approve, deny and end refuse a malformed id and say how to list the real ones."""
    for command in ("approve", "deny", "end"):
        code, _, err = _run(capsys, command, "s-1; rm -rf /", "--state-dir", str(tmp_path))
        assert code == 1
        assert "is not a session id" in err
        assert "secondline-agent sessions" in err


def test_session_commands_need_a_running_agent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without a running agent the commands say how to start it."""
    code, _, err = _run(capsys, "approve", "s-" + "A" * 22, "--state-dir", str(tmp_path))
    assert code == 1
    assert "the agent is not running" in err
    assert "secondline-agent run" in err


def test_enroll_checks_its_arguments_locally(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad broker URL or name is refused before any network traffic."""
    token = f"sle1.abcdefgh1234.{'A' * 32}.{'0' * 64}"
    code, _, err = _run(capsys, "enroll", "http://broker", token, "--state-dir", str(tmp_path))
    assert (code, "https://" in err) == (1, True)
    code, _, err = _run(
        capsys,
        "enroll",
        "https://broker",
        token,
        "--name",
        "Bad Name",
        "--state-dir",
        str(tmp_path),
    )
    assert (code, "choose another --name" in err) == (1, True)


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    """A missing command is a usage error (exit status 2)."""
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    assert "COMMAND" in capsys.readouterr().err


def test_enroll_from_file_takes_two_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--from-file reads the broker URL and the token, checked as on the command line; a
    file of another shape, or a file beside positional arguments, is refused."""
    token = f"sle1.abcdefgh1234.{'A' * 32}.{'0' * 64}"
    state = ["--state-dir", str(tmp_path / "state")]
    enroll_file = tmp_path / "enroll"
    enroll_file.write_text(f"http://broker\n{token}\n")
    code, _, err = _run(capsys, "enroll", "--from-file", str(enroll_file), *state)
    assert (code, "https://" in err) == (1, True)
    for text in ("", token, f"https://broker\n{token}\nextra\n", "x" * 9000):
        enroll_file.write_text(text)
        code, _, err = _run(capsys, "enroll", "--from-file", str(enroll_file), *state)
        assert (code, "must hold two lines" in err) == (1, True)
    code, _, err = _run(capsys, "enroll", "https://b", "--from-file", str(enroll_file), *state)
    assert (code, "not both" in err) == (1, True)
    code, _, err = _run(capsys, "enroll", *state)
    assert (code, "give BROKER_URL and TOKEN" in err) == (1, True)


def test_root_becomes_the_packaged_agent_only_for_its_state_dir() -> None:
    """Root takes the packaged agent's uid for a dir that account owns; nobody else
    switches, and root keeps its own identity for any other dir."""
    from agent.state_owner import account_to_become

    assert account_to_become(0, dir_uid=998, agent_uid=998) == 998
    assert account_to_become(0, dir_uid=0, agent_uid=998) is None
    assert account_to_become(0, dir_uid=1000, agent_uid=998) is None
    assert account_to_become(0, dir_uid=None, agent_uid=998) is None
    assert account_to_become(0, dir_uid=998, agent_uid=None) is None
    assert account_to_become(1000, dir_uid=998, agent_uid=998) is None
