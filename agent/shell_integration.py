"""Prompt marks in the PTY output, so the broker can list commands and their exit status.

The agent starts the user's shell with a small rc script that prints, as terminals' shell
integration does (docs/protocol.md)::

    ESC]133;A BEL          before the prompt
    ESC]133;B BEL          after the prompt (input starts)
    ESC]633;E;<line> BEL   the command line, encoded by :func:`encode_command_line`
    ESC]133;C BEL          just before the command runs
    ESC]133;D;<status> BEL after it finished

* bash (4.4 or later): every mark. ``PS0`` emits E and C once per command line (no DEBUG
  trap, so loops run at full speed); ``PROMPT_COMMAND`` emits D; A and B wrap ``PS1``.
  The command line comes from the history; a line the history did not record (for
  instance one starting with a space under ``HISTCONTROL=ignorespace``) gets C without E.
  Login semantics are kept: the script reads ``/etc/profile`` and the first of
  ``~/.bash_profile``, ``~/.bash_login``, ``~/.profile``, as a login bash would.
* zsh: every mark, from ``preexec`` and ``precmd`` hooks, through a ``ZDOTDIR`` whose
  startup files read the user's own first (see :class:`ZshStartupFiles`).
* POSIX sh (dash, ksh, bash as sh): A, B and D through ``PS1`` and ``ENV``; these shells
  have no hook before a command, so there is no C or E, and the D before the first prompt
  follows no command.
* Other shells start as plain login shells without marks.

The bash and sh scripts reach the shell through an inherited memfd (``/dev/fd/N``), so
nothing is written to disk and the login user can read them whatever the state dir's
permissions.
:class:`ShellMarkParser` reads the marks back (sans-I/O), for tests and for the broker.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

ESC: Final = b"\x1b"
BEL: Final = b"\x07"
OSC_PAYLOAD_MAX: Final = 64 * 1024

_ENCODE_RE: Final = re.compile(r"[\\;\x00-\x1f]")
_DECODE_RE: Final = re.compile(r"\\(\\|x[0-9a-fA-F]{2})")


def encode_command_line(line: str) -> str:
    """Encode a command line for ``OSC 633;E``: ``\\`` -> ``\\\\``, ``;`` and C0 -> ``\\xHH``."""

    def replace(match: re.Match[str]) -> str:
        char = match.group(0)
        return "\\\\" if char == "\\" else f"\\x{ord(char):02x}"

    return _ENCODE_RE.sub(replace, line)


def decode_command_line(encoded: str) -> str:
    """Invert :func:`encode_command_line` (unknown escapes are kept as they are)."""

    def replace(match: re.Match[str]) -> str:
        body = match.group(1)
        return "\\" if body == "\\" else chr(int(body[1:], 16))

    return _DECODE_RE.sub(replace, encoded)


_BASH_RC: Final = r"""# secondline-agent shell integration for bash: prompt marks (OSC 133/633).
builtin exec @FD@<&-
if [ -r /etc/profile ]; then . /etc/profile; fi
if [ -r "$HOME/.bash_profile" ]; then . "$HOME/.bash_profile"
elif [ -r "$HOME/.bash_login" ]; then . "$HOME/.bash_login"
elif [ -r "$HOME/.profile" ]; then . "$HOME/.profile"
fi
builtin shopt -s promptvars
__sl_nil=
__sl_running=
__sl_next_hist=
__sl_encode() {
  local s=$1 c i
  s=${s//\\/\\\\}
  s=${s//;/\\x3b}
  if [[ $s == *[[:cntrl:]]* ]]; then
    for i in 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f \
             10 11 12 13 14 15 16 17 18 19 1a 1b 1c 1d 1e 1f; do
      builtin printf -v c "\\x$i"
      s=${s//"$c"/\\x$i}
    done
  fi
  REPLY=$s
}
__sl_ps0() {
  local line num
  line=$(HISTTIMEFORMAT= builtin history 1)
  line=${line#"${line%%[![:space:]]*}"}
  num=${line%%[!0-9]*}
  if [[ -n $num && $num == "$__sl_next_hist" ]]; then
    line=${line#"$num"}
    line=${line#?}
    line=${line#?}
    __sl_encode "$line"
    builtin printf '\033]633;E;%s\007' "$REPLY"
  fi
  builtin printf '\033]133;C\007'
}
__sl_precmd() {
  local __sl_status=$?
  if [[ -n $__sl_running ]]; then
    builtin printf '\033]133;D;%s\007' "$__sl_status"
    __sl_running=
  fi
  return $__sl_status
}
__sl_postcmd() {
  local __sl_status=$?
  __sl_next_hist=$HISTCMD
  if [[ $PS1 != *'133;B'* ]]; then
    PS1='\[\033]133;A\007\]'"$PS1"'\[\033]133;B\007\]'
  fi
  return $__sl_status
}
PS0='$(__sl_ps0)${__sl_nil[__sl_running=1]-}'"${PS0-}"
if [[ "$(builtin declare -p PROMPT_COMMAND 2>/dev/null)" == "declare -a"* ]]; then
  PROMPT_COMMAND=(__sl_precmd "${PROMPT_COMMAND[@]}" __sl_postcmd)
else
  PROMPT_COMMAND="__sl_precmd${PROMPT_COMMAND:+; $PROMPT_COMMAND}"$'\n'"__sl_postcmd"
fi
"""

_SH_RC: Final = r"""# secondline-agent shell integration for POSIX sh: prompt marks (OSC 133).
exec @FD@<&-
unset ENV
__sl_esc=$(printf '\033')
__sl_bel=$(printf '\007')
__sl_user_ps1=${PS1-'$ '}
PS1='${__sl_esc}]133;D;$?${__sl_bel}${__sl_esc}]133;A${__sl_bel}'"$__sl_user_ps1"
PS1="$PS1"'${__sl_esc}]133;B${__sl_bel}'
"""

_ZSH_FILES: Final = {
    ".zshenv": r"""# secondline-agent shell integration for zsh: wraps the user startup files (1/4).
__sl_zdotdir=$ZDOTDIR
ZDOTDIR=$HOME
[[ -r $ZDOTDIR/.zshenv ]] && builtin source "$ZDOTDIR/.zshenv"
__sl_user_zdotdir=$ZDOTDIR
ZDOTDIR=$__sl_zdotdir
""",
    ".zprofile": r"""# secondline-agent shell integration for zsh (2/4).
ZDOTDIR=$__sl_user_zdotdir
[[ -r $ZDOTDIR/.zprofile ]] && builtin source "$ZDOTDIR/.zprofile"
__sl_user_zdotdir=$ZDOTDIR
ZDOTDIR=$__sl_zdotdir
""",
    ".zshrc": r"""# secondline-agent shell integration for zsh (3/4): the prompt marks.
ZDOTDIR=$__sl_user_zdotdir
[[ -r $ZDOTDIR/.zshrc ]] && builtin source "$ZDOTDIR/.zshrc"
__sl_user_zdotdir=$ZDOTDIR
ZDOTDIR=$__sl_zdotdir
typeset -g __sl_running=
__sl_encode() {
  emulate -L zsh
  local s=$1 i c hex
  s=${s//\\/\\\\}
  s=${s//;/\\x3b}
  if [[ $s == *[[:cntrl:]]* ]]; then
    for i in {1..31}; do
      c=${(#)i}
      hex=${(l:2::0:)$(( [##16] i ))}
      s=${s//$c/\\x${(L)hex}}
    done
  fi
  REPLY=$s
}
__sl_preexec() {
  emulate -L zsh
  if [[ -n $1 ]]; then
    __sl_encode "$1"
    builtin printf '\033]633;E;%s\007' "$REPLY"
  fi
  builtin printf '\033]133;C\007'
  __sl_running=1
}
__sl_precmd() {
  local __sl_status=$?
  if [[ -n $__sl_running ]]; then
    builtin printf '\033]133;D;%s\007' "$__sl_status"
    __sl_running=
  fi
  return $__sl_status
}
__sl_prompt() {
  if [[ $PS1 != *'133;B'* ]]; then
    PS1=$'%{\e]133;A\a%}'"$PS1"$'%{\e]133;B\a%}'
  fi
}
preexec_functions=(__sl_preexec $preexec_functions)
precmd_functions=(__sl_precmd $precmd_functions __sl_prompt)
""",
    ".zlogin": r"""# secondline-agent shell integration for zsh (4/4): give ZDOTDIR back.
ZDOTDIR=$__sl_user_zdotdir
[[ -r $ZDOTDIR/.zlogin ]] && builtin source "$ZDOTDIR/.zlogin"
if [[ $ZDOTDIR == $HOME ]]; then unset ZDOTDIR; fi
unset __sl_zdotdir __sl_user_zdotdir
""",
}

_SH_FAMILY: Final = frozenset(("sh", "dash", "ash", "ksh", "ksh93", "mksh"))


@dataclass(frozen=True, slots=True)
class ShellLaunch:
    """How to start an interactive shell: argv (argv[0] may be ``-name``), env, fds."""

    executable: str
    argv: tuple[str, ...]
    env: dict[str, str]
    pass_fds: tuple[int, ...]

    def close(self) -> None:
        """Close the parent's copy of the inherited fds (after the child started)."""
        for fd in self.pass_fds:
            os.close(fd)


def shell_kind(shell: str) -> str:
    """``bash``, ``zsh``, ``sh`` or ``other``, from the shell's file name."""
    name = os.path.basename(shell)
    if name in ("bash", "zsh"):
        return name
    if name in _SH_FAMILY:
        return "sh"
    return "other"


class ZshStartupFiles:
    """A ``ZDOTDIR`` whose startup files wrap the user's own and add the marks.

    zsh reads its startup files from a directory, so they cannot come through an fd: the
    directory is made on first use (root-owned, 0755, files 0644, under the temp dir)
    and removed by :meth:`close` when the agent stops.
    """

    def __init__(self, parent: str | None = None) -> None:
        self._parent = parent
        self._path: str | None = None

    def directory(self) -> str:
        """The directory to pass as ``ZDOTDIR`` (created on first use)."""
        if self._path is None:
            path = tempfile.mkdtemp(prefix="secondline-zsh-", dir=self._parent)
            for name, text in _ZSH_FILES.items():
                fd = os.open(os.path.join(path, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                with os.fdopen(fd, "w") as handle:
                    handle.write(text)
            # The login user must read it; nobody but us may write.
            os.chmod(path, 0o755)  # noqa: S103
            self._path = path
        return self._path

    def close(self) -> None:
        """Remove the directory."""
        if self._path is not None:
            shutil.rmtree(self._path, ignore_errors=True)
            self._path = None


def _script_fd(text: str) -> int:
    fd = os.memfd_create("secondline-shell-integration", os.MFD_CLOEXEC)
    try:
        os.write(fd, text.replace("@FD@", str(fd)).encode())
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd


def interactive_shell(shell: str, zsh_files: ZshStartupFiles | None = None) -> ShellLaunch:
    """The launch of an interactive login shell with prompt marks where the shell allows."""
    kind = shell_kind(shell)
    name = os.path.basename(shell)
    if kind == "zsh" and zsh_files is not None:
        return ShellLaunch(shell, (f"-{name}",), {"ZDOTDIR": zsh_files.directory()}, ())
    if kind == "bash":
        fd = _script_fd(_BASH_RC)
        return ShellLaunch(shell, (name, "--rcfile", f"/dev/fd/{fd}", "-i"), {}, (fd,))
    if kind == "sh":
        fd = _script_fd(_SH_RC)
        return ShellLaunch(shell, (f"-{name}",), {"ENV": f"/dev/fd/{fd}"}, (fd,))
    return ShellLaunch(shell, (f"-{name}",), {}, ())


def command_shell(shell: str, command: str) -> ShellLaunch:
    """The launch of ``shell -c command`` (what sshd does for an exec request)."""
    return ShellLaunch(shell, (os.path.basename(shell), "-c", command), {}, ())


# -- reading the marks back -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PromptStart:
    """``133;A``: a prompt is about to be drawn."""

    offset: int


@dataclass(frozen=True, slots=True)
class InputStart:
    """``133;B``: the prompt is drawn; what follows is typed input."""

    offset: int


@dataclass(frozen=True, slots=True)
class CommandLine:
    """``633;E``: the command line about to run (decoded)."""

    offset: int
    line: str


@dataclass(frozen=True, slots=True)
class CommandStart:
    """``133;C``: the command's output starts."""

    offset: int


@dataclass(frozen=True, slots=True)
class CommandEnd:
    """``133;D``: the command finished; ``status`` is None when the shell gave none."""

    offset: int
    status: int | None


ShellEvent = PromptStart | InputStart | CommandLine | CommandStart | CommandEnd

_STATUS_RE: Final = re.compile(r"-?[0-9]{1,10}")


class ShellMarkParser:
    """Find the marks in a terminal output stream fed in arbitrary chunks; never raises."""

    def __init__(self) -> None:
        self._offset = 0
        self._state = 0  # 0 text, 1 after ESC, 2 in OSC, 3 in OSC after ESC
        self._payload = bytearray()
        self._overflow = False

    def feed(self, data: bytes) -> list[ShellEvent]:
        """Consume ``data``; return the marks completed in it, in order."""
        return list(self._scan(data))

    def _scan(self, data: bytes) -> Iterator[ShellEvent]:
        index = 0
        size = len(data)
        while index < size:
            state = self._state
            if state == 0:
                found = data.find(0x1B, index)
                if found < 0:
                    index = size
                    break
                index = found + 1
                self._state = 1
                continue
            byte = data[index]
            index += 1
            if state == 1:
                self._state = 2 if byte == 0x5D else (1 if byte == 0x1B else 0)
                self._payload.clear()
                self._overflow = False
            elif state == 2:
                if byte == 0x07:
                    self._state = 0
                    event = self._finish(self._offset + index)
                    if event is not None:
                        yield event
                elif byte == 0x1B:
                    self._state = 3
                elif len(self._payload) < OSC_PAYLOAD_MAX:
                    self._payload.append(byte)
                else:
                    self._overflow = True
            else:  # ESC inside an OSC: ST ends it, anything else aborts it
                if byte == 0x5C:
                    self._state = 0
                    event = self._finish(self._offset + index)
                    if event is not None:
                        yield event
                else:
                    self._state = 2 if byte == 0x5D else (1 if byte == 0x1B else 0)
                    self._payload.clear()
                    self._overflow = False
        self._offset += size

    def _finish(self, offset: int) -> ShellEvent | None:
        if self._overflow:
            return None
        payload = self._payload.decode("utf-8", "replace")
        if payload == "133;A":
            return PromptStart(offset)
        if payload == "133;B":
            return InputStart(offset)
        if payload == "133;C":
            return CommandStart(offset)
        if payload == "133;D" or payload.startswith("133;D;"):
            status_text = payload[6:].split(";", 1)[0]
            status = int(status_text) if _STATUS_RE.fullmatch(status_text) else None
            return CommandEnd(offset, status)
        if payload.startswith("633;E;"):
            return CommandLine(offset, decode_command_line(payload[6:].split(";", 1)[0]))
        return None
