"""Which desktop is asked (loginctl's sessions), and what the windows say."""

from __future__ import annotations

import pytest

from agent.consent import ConsentRequest
from agent.desktop import (
    consent_text,
    indicator_text,
    parse_show_session,
    pick_session,
    session_env,
)
from agent.protocol import SessionEnv
from agent.session_log import LiveChannel

SHOWN = """Id=4
Name=alice
User=1000
Type=wayland
Class=user
State=active
Active=yes
Remote=no
Seat=seat0
Display=
"""


def session(**change: str) -> dict[str, str]:
    props = parse_show_session(SHOWN)
    props.update(change)
    return props


def test_show_session_output_parses() -> None:
    """loginctl's Key=value lines become a dict (empty values kept, other lines skipped)."""
    props = parse_show_session(SHOWN + "garbage line\n")
    assert props["Name"] == "alice"
    assert props["Display"] == ""
    assert "garbage line" not in props


def test_the_active_session_on_the_seat_is_asked() -> None:
    """Of two desktops, the one active on seat0 is asked, not the one in the background;
    on another seat only when seat0 has none."""
    background = session(Id="2", Name="bob", State="online", Active="no")
    front = session(Id="4")
    assert pick_session([background, front]) == front
    other_seat = session(Id="7", Name="carol", Seat="seat1")
    assert pick_session([other_seat, front]) == front
    assert pick_session([other_seat, background]) == other_seat


@pytest.mark.parametrize(
    "change",
    [
        {"Type": "tty"},
        {"Class": "greeter"},  # the login screen
        {"Remote": "yes"},  # an SSH or remote-desktop login: nobody at the screen
        {"Active": "no"},
        {"State": "closing"},
        {"Seat": ""},
        {"Name": "bad name"},
    ],
)
def test_sessions_nobody_sees_are_not_asked(change: dict[str, str]) -> None:
    """Text logins, greeters, remote and inactive sessions get no window."""
    assert pick_session([session(**change)]) is None


def test_session_env_points_at_the_users_display() -> None:
    """A Wayland session gets its socket; an X11 one its DISPLAY; both the runtime dir."""
    wayland = session_env(session(), 1000, "/nonexistent")
    assert wayland["WAYLAND_DISPLAY"] == "wayland-0"
    assert wayland["XDG_RUNTIME_DIR"] == "/run/user/1000"
    assert "DISPLAY" not in wayland
    x11 = session_env(session(Type="x11", Display=":0"), 1000, "/nonexistent")
    assert x11["DISPLAY"] == ":0"
    assert "WAYLAND_DISPLAY" not in x11


def test_window_texts_name_staff_level_ticket_and_what_they_may_do() -> None:
    """The consent window names everything the end user decides on, inert; the indicator
    names who is connected."""
    env = SessionEnv(
        session="s-" + "A" * 22,
        staff="bob",
        staff_level=2,
        ticket="T-7",
        ticket_title="Printer\x1b[31m jam",
        role="observer",
    )
    text = consent_text(ConsentRequest(env=env, requested_at=0.0, deadline=120.0), "support")
    assert (
        text["heading"]
        == "bob (support level 2) asks to watch a running session (they see the screen)."
    )
    lines = text["lines"]
    assert isinstance(lines, list)
    assert "\x1b" not in lines[0]
    assert lines[0].startswith("Ticket T-7: Printer")
    assert "cannot type" in lines[1]
    assert text["deadline"] == 120.0
    owner = consent_text(
        ConsentRequest(
            env=SessionEnv(session=env.session, staff="bob", staff_level=2, ticket="T-7"),
            requested_at=0,
            deadline=1,
        ),
        "support",
    )
    assert "shell as the account 'support'" in str(owner["lines"])
    channel = LiveChannel(
        env=env,
        kind="shell",
        command=None,
        login_user="support",
        started_at=0.0,
        close=lambda: None,
    )
    assert indicator_text([channel])["heading"] == "bob (support) connected for ticket T-7"
