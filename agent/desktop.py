"""Consent and the running-session indicator on the end user's desktop.

When a graphical session runs for the machine's user, each attended request opens the
consent window (agent.consent_window, GTK, run as that user) and each running session
shows the indicator with "End session". Without a desktop, or without GTK, nothing
changes: the terminal prompt and the commands (``approve``, ``deny``, ``end``) work as
before, and they work alongside the windows.

Which desktop: as root, the graphical session (X11 or Wayland) that is active on a seat,
as ``loginctl`` reports it, so with two people logged in the one at the screen is asked.
Otherwise (or where logind reports none), the desktop the agent itself runs in
(``DISPLAY`` / ``WAYLAND_DISPLAY`` of its environment), as when a user starts
``secondline-agent run`` in their own session.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import pwd
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from agent.consent import ConsentKey, ConsentRequest, ConsentService, Decision
from agent.consent_prompt import asks_to
from agent.protocol import LOCAL_USER_RE, sanitize_text
from agent.reaping import reap
from agent.session_log import LiveChannel, SessionRegistry

logger = logging.getLogger(__name__)

#: Debian's interpreter, which has PyGObject (python3-gi); not the agent's own, which
#: need not have it (a virtualenv from a checkout).
DESKTOP_PYTHON: Final = "/usr/bin/python3"
WINDOW_PROGRAM: Final = Path(__file__).with_name("consent_window.py")
#: What the window's program prints when GTK or the display is missing (consent_window).
EXIT_NO_GTK: Final = 3
#: How long ``loginctl`` may take to list or show the sessions.
LOGINCTL_TIMEOUT_SECONDS: Final = 5.0
_SESSION_PROPERTIES: Final = ("Id", "Name", "User", "Type", "Class", "State", "Active",
                              "Remote", "Seat", "Display")  # fmt: skip
#: Variables the window needs from a desktop; nothing else of the agent's environment.
_DESKTOP_VARS: Final = ("DISPLAY", "WAYLAND_DISPLAY", "XAUTHORITY", "XDG_RUNTIME_DIR",
                        "DBUS_SESSION_BUS_ADDRESS", "LANG", "LC_ALL")  # fmt: skip


@dataclass(frozen=True, slots=True)
class Desktop:
    """A graphical session the windows open on: its user and its display's variables."""

    user: str
    uid: int
    gid: int
    env: dict[str, str] = field(hash=False)


def parse_show_session(text: str) -> dict[str, str]:
    """``loginctl show-session ID -p ...`` output (``Key=value`` lines) as a dict."""
    props: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            props[key] = value
    return props


def pick_session(sessions: list[dict[str, str]]) -> dict[str, str] | None:
    """The graphical session to ask: local, of a user, X11 or Wayland, active on a seat.

    Two desktops on one machine (fast user switching, or two seats): the active one on
    ``seat0`` wins, then an active one on any seat; a session that is only open in the
    background (``State=online``) is never asked: nobody would see the window in time.
    """
    candidates = [
        s
        for s in sessions
        if s.get("Type") in ("x11", "wayland")
        and s.get("Class") == "user"
        and s.get("Remote") == "no"
        and s.get("Active") == "yes"
        and s.get("State") == "active"
        and s.get("Seat")
        and LOCAL_USER_RE.fullmatch(s.get("Name", "")) is not None
    ]
    candidates.sort(key=lambda s: (s.get("Seat") != "seat0", s.get("Id", "")))
    return candidates[0] if candidates else None


def session_env(session: dict[str, str], uid: int, home: str) -> dict[str, str]:
    """The display variables for a logind session of ``uid``."""
    runtime = f"/run/user/{uid}"
    env = {
        "XDG_RUNTIME_DIR": runtime,
        "DBUS_SESSION_BUS_ADDRESS": f"unix:path={runtime}/bus",
    }
    if session.get("Type") == "wayland":
        env["WAYLAND_DISPLAY"] = "wayland-0"
    if session.get("Display"):
        env["DISPLAY"] = session["Display"]
    # Where display managers keep the X cookie (GDM, then the classic file).
    for candidate in (f"{runtime}/gdm/Xauthority", f"{home}/.Xauthority"):
        if os.path.isfile(candidate):
            env["XAUTHORITY"] = candidate
            break
    return env


async def _loginctl(*args: str) -> str | None:
    try:
        proc = await asyncio.create_subprocess_exec(
            "loginctl", "--no-pager", *args,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
    except OSError:
        return None
    try:
        async with asyncio.timeout(LOGINCTL_TIMEOUT_SECONDS):
            out, _ = await proc.communicate()
    except TimeoutError:
        return None
    finally:
        # The lookup is cancelled whenever its request is decided or its session ends,
        # often while loginctl still runs: it is killed and waited for on every path.
        await reap(proc)
    return out.decode("utf-8", "replace") if proc.returncode == 0 else None


async def find_desktop(environ: Mapping[str, str]) -> Desktop | None:
    """The desktop to ask on now, or None (module docstring)."""
    if os.geteuid() == 0:
        listing = await _loginctl("list-sessions", "--no-legend")
        sessions = []
        for line in (listing or "").splitlines():
            sid = line.split()[0] if line.split() else ""
            shown = await _loginctl("show-session", sid, *(f"-p{p}" for p in _SESSION_PROPERTIES))
            if shown is not None:
                sessions.append(parse_show_session(shown))
        chosen = pick_session(sessions)
        if chosen is not None:
            try:
                account = pwd.getpwnam(chosen["Name"])
            except KeyError:
                return None
            env = session_env(chosen, account.pw_uid, account.pw_dir)
            return Desktop(account.pw_name, account.pw_uid, account.pw_gid, env)
    if not environ.get("DISPLAY") and not environ.get("WAYLAND_DISPLAY"):
        return None
    own = pwd.getpwuid(os.geteuid())
    env = {k: environ[k] for k in _DESKTOP_VARS if environ.get(k)}
    return Desktop(own.pw_name, own.pw_uid, own.pw_gid, env)


def consent_text(request: ConsentRequest, login_user: str) -> dict[str, object]:
    """What the consent window shows (inert text only)."""
    env = request.env
    title = sanitize_text(env.ticket_title, 200)
    may = {
        "owner": f"They get a shell as the account {login_user!r} on this machine and may run "
        "commands and read and write files there. Everything is recorded.",
        "participant": "They join the running session and may type in it. Everything is recorded.",
        "observer": "They see the screen of the running session; they cannot type.",
    }[env.asked_role]
    return {
        "title": "Secondline: support request",
        "heading": (
            f"{env.staff} (support level {env.staff_level}) asks to {asks_to(env.asked_role)}."
        ),
        "lines": [
            f"Ticket {env.ticket}" + (f": {title}" if title else ""),
            may,
            "You can end the session at any time.",
        ],
        "deadline": request.deadline,
    }


def indicator_text(channels: list[LiveChannel]) -> dict[str, object]:
    """What the indicator of one session shows."""
    staff = sorted({c.env.staff for c in channels})
    first = channels[0].env
    return {
        "title": "Secondline: session running",
        "heading": f"{', '.join(staff)} (support) connected for ticket {first.ticket}",
    }


class DesktopPrompt:
    """Opens the windows for consent requests and running sessions; closes them when
    the request is decided elsewhere or the session ends."""

    def __init__(
        self,
        consent: ConsentService,
        registry: SessionRegistry,
        *,
        login_user: str,
        environ: Mapping[str, str],
        python: str = DESKTOP_PYTHON,
    ) -> None:
        self._consent = consent
        self._registry = registry
        self._login_user = login_user
        self._environ = dict(environ)
        self._python = python
        self._asking: dict[ConsentKey, asyncio.Task[None]] = {}
        self._indicators: dict[str, asyncio.Task[None]] = {}

    def start(self) -> None:
        self._consent.add_listener(self._on_consent)
        self._registry.add_listener(self._on_sessions)

    async def close(self) -> None:
        tasks = [*self._asking.values(), *self._indicators.values()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    # -- consent ------------------------------------------------------------------------

    def _on_consent(self, event: ConsentRequest | Decision) -> None:
        if isinstance(event, ConsentRequest):
            if event.key not in self._asking:
                self._asking[event.key] = asyncio.get_running_loop().create_task(self._ask(event))
            return
        # Decided (here, at a terminal, by timeout) or withdrawn: its window goes.
        task = self._asking.pop(event.key, None)
        if task is not None:
            task.cancel()

    async def _ask(self, request: ConsentRequest) -> None:
        desktop = await find_desktop(self._environ)
        if desktop is None:
            return
        text = consent_text(request, self._login_user)
        answer = await self._window(desktop, "ask", text)
        self._asking.pop(request.key, None)
        if answer not in ("allow", "deny"):
            return  # closed at the deadline or by the agent: the consent timer decides
        with contextlib.suppress(Exception):  # decided meanwhile elsewhere: nothing to do
            self._consent.decide(request.key, approved=answer == "allow", by=desktop.user)
            logger.info(
                "session %s: %s on the desktop by %s",
                request.key.session, "allowed" if answer == "allow" else "denied", desktop.user,
            )  # fmt: skip

    # -- the indicator ------------------------------------------------------------------

    def _on_sessions(self) -> None:
        by_session: dict[str, list[LiveChannel]] = {}
        for channel in self._registry.live():
            by_session.setdefault(channel.env.session, []).append(channel)
        for session, task in list(self._indicators.items()):
            if session not in by_session:
                task.cancel()
                del self._indicators[session]
        for session, channels in by_session.items():
            if session not in self._indicators:
                task = asyncio.get_running_loop().create_task(
                    self._indicate(session, indicator_text(channels))
                )
                self._indicators[session] = task

    async def _indicate(self, session: str, text: dict[str, object]) -> None:
        desktop = await find_desktop(self._environ)
        if desktop is None:
            return
        answer = await self._window(desktop, "indicator", text)
        if answer == "end":
            logger.info("session %s: ended on the desktop by %s", session, desktop.user)
            self._registry.end_session(session)

    # -- the window program ---------------------------------------------------------------

    async def _window(self, desktop: Desktop, mode: str, text: dict[str, object]) -> str | None:
        """Run the window program as the desktop's user until it answers; its first line."""
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": pwd.getpwuid(desktop.uid).pw_dir,
            "USER": desktop.user,
            "LOGNAME": desktop.user,
            **desktop.env,
        }
        as_user: dict[str, object] = {}
        if os.geteuid() == 0 and desktop.uid != 0:
            as_user = {"user": desktop.uid, "group": desktop.gid, "extra_groups": []}
        try:
            proc = await asyncio.create_subprocess_exec(
                self._python, "-I", "-B", str(WINDOW_PROGRAM), mode,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, env=env, cwd="/", start_new_session=True,
                **as_user,  # type: ignore[arg-type]
            )  # fmt: skip
        except OSError as exc:
            logger.warning("cannot open a window on %s's desktop: %s", desktop.user, exc)
            return None
        assert proc.stdin is not None  # piped above
        assert proc.stdout is not None
        try:
            proc.stdin.write(json.dumps(text).encode())
            proc.stdin.close()
            line = await proc.stdout.readline()
            if not line:
                await proc.wait()
                if proc.returncode == EXIT_NO_GTK:
                    err = await proc.stderr.read() if proc.stderr else b""
                    logger.warning(
                        "no window on %s's desktop: %s", desktop.user,
                        sanitize_text(err.decode("utf-8", "replace"), 200).strip(),
                    )  # fmt: skip
                return None
            return line.decode("ascii", "replace").strip()
        finally:
            # Closed at the deadline, by a decision elsewhere or by the agent's stop (a
            # cancel): the window goes, and is waited for before the cancel goes on.
            await reap(proc, term_first=True)
