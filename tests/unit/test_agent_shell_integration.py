"""Unit tests of the prompt marks: command-line encoding, the mark parser, shell launches."""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.shell_integration import (
    CommandEnd,
    CommandLine,
    CommandStart,
    InputStart,
    PromptStart,
    ShellMarkParser,
    ZshStartupFiles,
    command_shell,
    decode_command_line,
    encode_command_line,
    interactive_shell,
    shell_kind,
)


@pytest.mark.parametrize(
    ("line", "encoded"),
    [
        ("echo hi", "echo hi"),
        ("a;b", "a\\x3bb"),
        ("back\\slash", "back\\\\slash"),
        ("tab\there", "tab\\x09here"),
        ("multi\nline", "multi\\x0aline"),
        ("\x1b]52;c;evil\x07", "\\x1b]52\\x3bc\\x3bevil\\x07"),
        ("ünïcödé", "ünïcödé"),
        ("del\x7f", "del\x7f"),
    ],
)
def test_encoding_examples(line: str, encoded: str) -> None:
    """Backslash doubles; ';' and every control below 0x20 become \\xHH."""
    assert encode_command_line(line) == encoded
    assert decode_command_line(encoded) == line


@given(st.text())
def test_encoding_round_trips_and_is_inert(line: str) -> None:
    """Any command line decodes back to itself; the encoding holds no ';' and no C0."""
    encoded = encode_command_line(line)
    assert decode_command_line(encoded) == line
    assert ";" not in encoded
    assert all(ord(char) >= 0x20 for char in encoded)


def test_decoding_keeps_unknown_escapes() -> None:
    """Escapes the encoder never writes are kept as they are."""
    assert decode_command_line("\\q \\x4") == "\\q \\x4"


STREAM = (
    b"\x1b]133;A\x07$ \x1b]133;B\x07echo hi\r\n"
    b"\x1b]633;E;echo hi\\x3b ok\x07\x1b]133;C\x07hi\r\n\x1b]133;D;0\x07"
    b"\x1b]6973;echo;off\x07Password: \x1b]6973;echo;on\x1b\\"
    b"\x1b]0;title\x07\x1b[31mred\x1b]133;D\x07"
)


def _kinds(events: Sequence[object]) -> list[str]:
    return [type(event).__name__ for event in events]


def test_parser_finds_every_mark_in_order() -> None:
    """All marks come out in order with their payloads; other escapes are ignored."""
    events = ShellMarkParser().feed(STREAM)
    assert _kinds(events) == [
        "PromptStart", "InputStart", "CommandLine", "CommandStart", "CommandEnd",
        "CommandEnd",
    ]  # fmt: skip
    assert events[2] == CommandLine(events[2].offset, "echo hi; ok")
    assert isinstance(events[4], CommandEnd)
    assert events[4].status == 0
    # The former in-band echo marker is no mark: echo is reported out of band.
    assert events[5] == CommandEnd(len(STREAM), None)


def test_parser_offsets_point_after_each_mark() -> None:
    """Each event's offset is the stream position just after its terminator."""
    events = ShellMarkParser().feed(STREAM)
    assert events[0] == PromptStart(len(b"\x1b]133;A\x07"))
    assert STREAM[: events[1].offset].endswith(b"\x1b]133;B\x07")
    assert isinstance(events[1], InputStart)
    assert isinstance(events[3], CommandStart)


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=12))
def test_parser_is_independent_of_chunking(cuts: list[int]) -> None:
    """Feeding the stream in any chunks yields the same events as feeding it whole."""
    parser = ShellMarkParser()
    bounds = [0, *sorted(cuts), len(STREAM)]
    events = []
    for start, end in itertools.pairwise(bounds):
        events += parser.feed(STREAM[start:end])
    assert events == ShellMarkParser().feed(STREAM)


@given(st.binary(max_size=4000))
def test_parser_never_raises(data: bytes) -> None:
    """Arbitrary terminal output never makes the parser raise."""
    ShellMarkParser().feed(data)


def test_parser_drops_oversized_and_interrupted_sequences() -> None:
    """An OSC beyond the payload cap, or cut by another escape, yields no event."""
    parser = ShellMarkParser()
    oversized = b"\x1b]133;D;" + b"1" * 70_000 + b"\x07"
    interrupted = b"\x1b]133;A\x1b[0m\x1b]133;B\x07"
    assert parser.feed(oversized) == []
    assert parser.feed(interrupted) == [InputStart(len(oversized) + len(interrupted))]
    end = len(oversized) + len(interrupted) + len(b"\x1b]133;D;nan\x07")
    assert parser.feed(b"\x1b]133;D;nan\x07") == [CommandEnd(end, None)]


def test_shell_kinds() -> None:
    """bash and zsh get full marks, the POSIX family the PS1 marks, others none."""
    assert shell_kind("/bin/bash") == "bash"
    assert shell_kind("/usr/bin/dash") == "sh"
    assert shell_kind("/bin/sh") == "sh"
    assert shell_kind("/usr/bin/zsh") == "zsh"
    assert shell_kind("/usr/bin/fish") == "other"


def test_bash_launch_passes_the_rc_through_a_memfd() -> None:
    """bash starts with --rcfile /dev/fd/N -i; N is an inherited memfd holding the script."""
    launch = interactive_shell("/bin/bash")
    try:
        (fd,) = launch.pass_fds
        assert launch.argv == ("bash", "--rcfile", f"/dev/fd/{fd}", "-i")
        script = os.pread(fd, 100_000, 0).decode()
        assert f"builtin exec {fd}<&-" in script
        assert "PS0=" in script
        assert "133;D" in script
    finally:
        launch.close()


def test_sh_launch_uses_env_and_other_shells_start_plain() -> None:
    """POSIX sh gets ENV=/dev/fd/N as a login shell; other shells start as plain login shells."""
    launch = interactive_shell("/bin/dash")
    try:
        assert launch.argv == ("-dash",)
        assert launch.env == {"ENV": f"/dev/fd/{launch.pass_fds[0]}"}
    finally:
        launch.close()
    fish = interactive_shell("/usr/bin/fish")
    assert (fish.argv, fish.pass_fds) == (("-fish",), ())
    assert command_shell("/bin/bash", "ls -l").argv == ("bash", "-c", "ls -l")


def test_zsh_startup_files_live_in_a_readable_temporary_dir(tmp_path: Path) -> None:
    """zsh gets ZDOTDIR: a 0755 dir of 0644 wrappers, made once and removed on close."""
    files = ZshStartupFiles(parent=str(tmp_path))
    launch = interactive_shell("/usr/bin/zsh", files)
    directory = Path(launch.env["ZDOTDIR"])
    assert launch.argv == ("-zsh",)
    assert files.directory() == str(directory)
    assert directory.stat().st_mode & 0o777 == 0o755
    names = sorted(path.name for path in directory.iterdir())
    assert names == [".zlogin", ".zprofile", ".zshenv", ".zshrc"]
    assert all((directory / name).stat().st_mode & 0o777 == 0o644 for name in names)
    assert "precmd_functions" in (directory / ".zshrc").read_text()
    files.close()
    assert not directory.exists()
    assert interactive_shell("/usr/bin/zsh").argv == ("-zsh",)
