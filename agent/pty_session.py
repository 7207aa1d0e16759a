"""The processes behind session channels: a shell in a PTY, or a command on pipes.

Each process starts in a new session (``setsid``), as the login account, with a clean
environment. Its lifetime is tied to the channel:

* the channel closes first: every process of the session gets SIGHUP, then SIGKILL
  after :data:`KILL_GRACE` seconds;
* the leader exits first: its output is drained, stragglers holding the terminal or the
  pipes get SIGHUP (at once for a PTY, whose terminal is gone; after
  :data:`DRAIN_GRACE` for pipes, whose background writers may still finish), then
  SIGKILL, and :meth:`ProcessEvents.process_finished` reports the exit status.

Output is read at most :data:`READ_MAX` bytes at a time (a PTY until the kernel has no
more, a pipe in one read), one quantum of :mod:`agent.send_turns`: a fast producer
becomes large channel writes, and its channel goes back in line for the tunnel after
each. Input is written to the PTY as it comes; the terminal's ECHO flag is read just
before each write and reported with the byte count (:meth:`ProcessEvents.input_written`),
so the broker records typed input only when the terminal echoed it, whatever the session
prints (docs/protocol.md, "Input reports"). Input to a command on pipes is reported as not
echoed: no terminal shows it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import termios
from collections.abc import Callable, Mapping
from typing import Final, Protocol

from agent.errors import SpawnError
from agent.login import LoginAccount
from agent.send_turns import QUANTUM
from agent.session_signals import session_members, signal_session
from agent.shell_integration import ShellLaunch
from agent.terminal_modes import PtyRequest, apply_terminal_modes

logger = logging.getLogger(__name__)

KILL_GRACE: Final = 2.0
DRAIN_GRACE: Final = 1.0
READ_MAX: Final = QUANTUM
INPUT_HIGH_WATER: Final = 64 * 1024


class ProcessEvents(Protocol):
    """What a session process reports to its channel."""

    def process_output(self, data: bytes) -> None:
        """Bytes from stdout or the PTY."""

    def process_stderr(self, data: bytes) -> None:
        """Bytes from stderr (never for a PTY)."""

    def process_finished(self, returncode: int) -> None:
        """The leader exited and its output is drained (negative: killed by a signal)."""

    def input_paused(self, paused: bool) -> None:
        """True: stop feeding input until called with False."""

    def input_written(self, count: int, echo: bool) -> None:
        """``count`` bytes of input reached the terminal (or the pipe), in order; ``echo``:
        whether the terminal echoed them (its ECHO flag at the moment of the write)."""


def _acquire_controlling_tty() -> None:
    # Runs in the child between fork and exec, after setsid: only a syscall, no Python
    # state is touched, which keeps preexec_fn safe next to asyncio's watcher threads.
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class _ExitWatcher(asyncio.SubprocessProtocol):
    def __init__(self, owner: SessionProcess) -> None:
        self._owner = owner

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Before subprocess_exec returns: a fast child may exit before it does.
        if isinstance(transport, asyncio.SubprocessTransport):
            self._owner._transport = transport
            self._owner.pid = transport.get_pid()
            for fd in (1, 2):
                pipe = transport.get_pipe_transport(fd)
                if pipe is not None and hasattr(pipe, "max_size"):
                    # asyncio reads 256 KiB at a time; one quantum keeps the turns fair.
                    pipe.max_size = READ_MAX

    def pipe_data_received(self, fd: int, data: bytes | bytearray) -> None:
        self._owner._pipe_data(fd, bytes(data))

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        self._owner._pipe_closed(fd)

    def pause_writing(self) -> None:
        self._owner._input_pressure(True)

    def resume_writing(self) -> None:
        self._owner._input_pressure(False)

    def process_exited(self) -> None:
        self._owner._leader_exited()


class SessionProcess:
    """The process of one channel; create with :meth:`start_pty` or :meth:`start_pipes`."""

    def __init__(
        self,
        events: ProcessEvents,
        *,
        use_pty: bool,
        on_released: Callable[[SessionProcess], None] | None = None,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._events: ProcessEvents | None = events
        self._pty = use_pty
        self._transport: asyncio.SubprocessTransport | None = None
        self._master = -1
        self._open_outputs = 1 if use_pty else 2
        self._returncode: int | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._finished = False
        self._releasing = False
        self._on_released = on_released
        #: Set once nothing of the process is left to free.
        self.released = asyncio.Event()
        self._input = bytearray()
        self._writing = False
        self._reading = False
        self._input_paused = False
        self.pid = 0

    # -- starting -----------------------------------------------------------------

    @classmethod
    async def start_pty(
        cls,
        launch: ShellLaunch,
        account: LoginAccount,
        env: Mapping[str, str],
        pty: PtyRequest,
        events: ProcessEvents,
        on_released: Callable[[SessionProcess], None] | None = None,
    ) -> SessionProcess:
        """Start ``launch`` on a new PTY of the requested size and modes."""
        self = cls(events, use_pty=True, on_released=on_released)
        master, slave = os.openpty()
        try:
            fcntl.ioctl(slave, termios.TIOCSWINSZ, pty.winsize())
            if pty.modes:
                attrs = apply_terminal_modes(termios.tcgetattr(slave), pty.modes)
                termios.tcsetattr(slave, termios.TCSANOW, attrs)
            os.set_blocking(master, False)
            await self._spawn(launch, account, env, slave, _acquire_controlling_tty)
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        self._master = master
        self._loop.add_reader(master, self._pty_readable)
        self._reading = True
        return self

    @classmethod
    async def start_pipes(
        cls,
        launch: ShellLaunch,
        account: LoginAccount,
        env: Mapping[str, str],
        events: ProcessEvents,
        on_released: Callable[[SessionProcess], None] | None = None,
    ) -> SessionProcess:
        """Start ``launch`` with stdin, stdout and stderr on separate pipes."""
        self = cls(events, use_pty=False, on_released=on_released)
        await self._spawn(launch, account, env, asyncio.subprocess.PIPE, None)
        return self

    async def _spawn(
        self,
        launch: ShellLaunch,
        account: LoginAccount,
        env: Mapping[str, str],
        stdio: int,
        preexec: Callable[[], None] | None,
    ) -> None:
        switch = account.switches_user
        try:
            await self._loop.subprocess_exec(
                lambda: _ExitWatcher(self),
                *launch.argv,
                executable=launch.executable,
                stdin=stdio,
                stdout=stdio,
                stderr=stdio,
                env={**env, **launch.env},
                cwd=account.working_dir,
                start_new_session=True,
                pass_fds=launch.pass_fds,
                preexec_fn=preexec,
                user=account.uid if switch else None,
                group=account.gid if switch else None,
                extra_groups=list(account.groups) if switch else None,
            )
        except OSError as exc:
            raise SpawnError(
                f"cannot start {launch.executable} as {account.name} ({exc.strerror})"
            ) from None
        finally:
            launch.close()

    # -- input from the channel ---------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Feed the process's stdin or the terminal."""
        if self._finished or not data:
            return
        if not self._pty:
            pipe = self._pipe(0)
            if isinstance(pipe, asyncio.WriteTransport) and not pipe.is_closing():
                pipe.write(data)
                self._report_input(len(data), False)
            return
        if self._master < 0:
            return
        if not self._input:
            echo = self._echo_on()
            try:
                written = os.write(self._master, data)
            except BlockingIOError:
                written = 0
            except OSError:
                return  # the terminal is gone; the exit will be reported
            self._report_input(written, echo)
            data = data[written:]
        if data:
            self._input += data
            if not self._writing:
                self._loop.add_writer(self._master, self._pty_writable)
                self._writing = True
            if len(self._input) > INPUT_HIGH_WATER:
                self._input_pressure(True)

    def write_eof(self) -> None:
        """The client sent EOF: close stdin (a terminal has no EOF of its own; ignored)."""
        pipe = self._pipe(0)
        if pipe is not None and not pipe.is_closing():
            pipe.close()

    def resize(self, pty: PtyRequest) -> None:
        """Set the terminal size (the kernel sends SIGWINCH to the foreground job)."""
        if self._master >= 0:
            with contextlib.suppress(OSError):
                fcntl.ioctl(self._master, termios.TIOCSWINSZ, pty.winsize())

    def send_signal(self, signum: int) -> None:
        """Signal the foreground job of the terminal, or the command's process group."""
        if self._finished or not self.pid:
            return
        group = self.pid
        if self._master >= 0:
            with contextlib.suppress(OSError):
                group = os.tcgetpgrp(self._master)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signum)

    # -- output flow control ----------------------------------------------------------

    def pause_output(self) -> None:
        """Stop reading output (the channel's window is full)."""
        if self._pty:
            if self._reading and self._master >= 0:
                self._loop.remove_reader(self._master)
                self._reading = False
        else:
            for fd in (1, 2):
                pipe = self._pipe(fd)
                if isinstance(pipe, asyncio.ReadTransport) and pipe.is_reading():
                    pipe.pause_reading()

    def resume_output(self) -> None:
        """Read output again."""
        if self._pty:
            if not self._reading and self._master >= 0:
                self._loop.add_reader(self._master, self._pty_readable)
                self._reading = True
        else:
            for fd in (1, 2):
                pipe = self._pipe(fd)
                if isinstance(pipe, asyncio.ReadTransport) and not pipe.is_reading():
                    pipe.resume_reading()

    # -- ending -----------------------------------------------------------------------

    def terminate(self) -> None:
        """The channel closed: hang the session up now, kill what is left shortly after."""
        self._events = None
        if self._finished:
            return
        self._finished = True
        signal_session(self.pid, signal.SIGHUP)
        self._cancel_timer()
        if self._returncode is not None and not session_members(self.pid):
            self._kill_and_release()
        else:
            self._timer = self._loop.call_later(KILL_GRACE, self._kill_and_release)

    def _kill_and_release(self) -> None:
        self._timer = None
        signal_session(self.pid, signal.SIGKILL)
        self._release()

    def _leader_exited(self) -> None:
        transport = self._transport
        returncode = transport.get_returncode() if transport is not None else None
        self._returncode = -signal.SIGKILL if returncode is None else returncode
        if self._releasing:
            self._close_transport()
        elif self._finished:
            # Terminated: once the whole session is gone there is nothing left to kill.
            if not session_members(self.pid):
                self._kill_and_release()
        elif self._open_outputs == 0:
            self._finish()
        elif self._pty:
            self._escalate()
        else:
            self._timer = self._loop.call_later(DRAIN_GRACE, self._escalate)

    def _escalate(self) -> None:
        """Hang up what still holds the terminal or the pipes; kill it if it insists."""
        self._timer = None
        signal_session(self.pid, signal.SIGHUP)
        self._timer = self._loop.call_later(KILL_GRACE, self._escalate_kill)

    def _escalate_kill(self) -> None:
        signal_session(self.pid, signal.SIGKILL)
        # A process that left the session may still hold the output: stop waiting for it.
        self._timer = self._loop.call_later(KILL_GRACE, self._finish)

    def _output_closed(self) -> None:
        self._open_outputs -= 1
        if self._open_outputs == 0 and self._returncode is not None and not self._finished:
            self._finish()

    def _finish(self) -> None:
        self._timer = None
        if self._finished:
            return
        self._finished = True
        returncode = self._returncode if self._returncode is not None else -signal.SIGKILL
        events = self._events
        self._release()
        if events is not None:
            events.process_finished(returncode)

    def _release(self) -> None:
        """Free the terminal now, and the process transport once the leader is reaped."""
        self._cancel_timer()
        self._releasing = True
        if self._master >= 0:
            if self._reading:
                self._loop.remove_reader(self._master)
            if self._writing:
                self._loop.remove_writer(self._master)
            os.close(self._master)
            self._master = -1
            self._reading = self._writing = False
        if self._returncode is not None:
            self._close_transport()

    def _close_transport(self) -> None:
        # Only after the leader was reaped: closing earlier would make asyncio kill and
        # reap it behind the child watcher's back.
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        if not self.released.is_set():
            self.released.set()
            if self._on_released is not None:
                self._on_released(self)

    def force_release(self) -> None:
        """Give up waiting for the leader (shutdown): kill and close everything now."""
        self._events = None
        self._finished = True
        self._kill_and_release()
        self._close_transport()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- I/O callbacks ----------------------------------------------------------------

    def _pipe(self, fd: int) -> asyncio.BaseTransport | None:
        return self._transport.get_pipe_transport(fd) if self._transport is not None else None

    def _pipe_data(self, fd: int, data: bytes) -> None:
        if self._events is None:
            return
        if fd == 1:
            self._events.process_output(data)
        elif fd == 2:
            self._events.process_stderr(data)

    def _pipe_closed(self, fd: int) -> None:
        if fd in (1, 2):
            self._output_closed()

    def _input_pressure(self, paused: bool) -> None:
        if paused != self._input_paused:
            self._input_paused = paused
            if self._events is not None:
                self._events.input_paused(paused)

    def _pty_writable(self) -> None:
        echo = self._echo_on()
        try:
            written = os.write(self._master, self._input)
        except BlockingIOError:
            return
        except OSError:
            written = len(self._input)
            echo = False  # never reached the terminal: nothing to record as typed
        self._report_input(written, echo)
        del self._input[:written]
        if not self._input:
            self._loop.remove_writer(self._master)
            self._writing = False
        if len(self._input) <= INPUT_HIGH_WATER // 2:
            self._input_pressure(False)

    def _pty_readable(self) -> None:
        chunks: list[bytes] = []
        total = 0
        ended = False
        while total < READ_MAX:
            try:
                data = os.read(self._master, READ_MAX - total)
            except BlockingIOError:
                break
            except OSError:
                # EIO: every holder of the terminal closed it; other errors end it too.
                ended = True
                break
            if not data:
                ended = True
                break
            chunks.append(data)
            total += len(data)
        if chunks and self._events is not None:
            self._events.process_output(b"".join(chunks))
        if ended:
            if self._reading:
                self._loop.remove_reader(self._master)
                self._reading = False
            self._output_closed()

    def _echo_on(self) -> bool:
        # Read at the moment of the write: the line discipline echoes (or not) as it takes
        # the bytes in. An unreadable flag counts as off, so a doubt never records a secret.
        try:
            return bool(termios.tcgetattr(self._master)[3] & termios.ECHO)
        except termios.error:
            return False

    def _report_input(self, count: int, echo: bool) -> None:
        if count > 0 and self._events is not None:
            self._events.input_written(count, echo)


class ProcessTable:
    """The processes of all channels, so that shutting down leaves none behind."""

    def __init__(self) -> None:
        self._processes: set[SessionProcess] = set()

    def add(self, process: SessionProcess) -> None:
        """Track ``process`` until it is released."""
        if not process.released.is_set():
            self._processes.add(process)

    def discard(self, process: SessionProcess) -> None:
        """Stop tracking ``process`` (it was released)."""
        self._processes.discard(process)

    def __len__(self) -> int:
        return len(self._processes)

    async def shutdown(self) -> None:
        """Terminate every process; wait for them, past the kill grace at most."""
        processes = list(self._processes)
        for process in processes:
            process.terminate()
        waits = [asyncio.ensure_future(process.released.wait()) for process in processes]
        if waits:
            _, late = await asyncio.wait(waits, timeout=KILL_GRACE + 1.0)
            for wait in late:
                wait.cancel()
        for process in processes:
            if not process.released.is_set():
                process.force_release()
        self._processes.clear()
