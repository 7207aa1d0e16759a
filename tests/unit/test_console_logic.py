"""The console's pure decisions: session validity, CSRF comparison, redirect targets, TOTP,
language choice, the CSP and the queue's order and filters."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.auth import totp
from broker.console.language import as_language, choose, from_accept_language
from broker.console.pages_tickets import QueueFilter, queue_order
from broker.console.render import content_security_policy, display_text, multiline_text
from broker.console.web_session import (
    ENROL_SECONDS,
    SessionFacts,
    SessionLimits,
    clip_user_agent,
    needs_touch,
    new_secret,
    safe_next,
    session_id_of,
    tokens_match,
    why_invalid,
)

T0 = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)
LIMITS = SessionLimits(idle_seconds=1800, max_seconds=43200)


def facts(**changes: object) -> SessionFacts:
    base: dict[str, object] = {
        "stage": "active",
        "epoch": 3,
        "created_at": T0,
        "last_seen_at": T0,
        "user_disabled": False,
        "user_epoch": 3,
    }
    base.update(changes)
    return SessionFacts(**base)  # type: ignore[arg-type]


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def test_a_fresh_session_is_valid() -> None:
    """A session used a minute ago on an enabled account with the same epoch is valid."""
    assert why_invalid(facts(), LIMITS, at(60)) is None


@pytest.mark.parametrize(
    ("changes", "now", "reason"),
    [
        ({"stage": "enrol"}, 0, "stage"),
        ({"user_disabled": True}, 0, "disabled"),
        ({"epoch": 2}, 0, "epoch"),
        ({}, 1801, "idle"),
        ({"last_seen_at": at(43000)}, 43201, "expired"),
    ],
)
def test_each_reason_a_session_is_invalid(
    changes: dict[str, object], now: float, reason: str
) -> None:
    """Stage, disable, epoch, idle and absolute timeouts each void a session."""
    assert why_invalid(facts(**changes), LIMITS, at(now)) == reason


def test_enrolment_sessions_expire_on_their_own_clock() -> None:
    """An enrolment stage lives ENROL_SECONDS and is not an active session."""
    enrol = facts(stage="enrol")
    assert why_invalid(enrol, LIMITS, at(ENROL_SECONDS), stage="enrol") is None
    assert why_invalid(enrol, LIMITS, at(ENROL_SECONDS + 1), stage="enrol") == "enrol_expired"
    assert why_invalid(facts(), LIMITS, at(0), stage="enrol") == "stage"


def test_touch_at_most_once_a_minute() -> None:
    """last_seen_at is rewritten only when a minute has passed."""
    assert not needs_touch(T0, at(59))
    assert needs_touch(T0, at(60))


def test_cookie_values_map_to_row_ids() -> None:
    """Only our secret's shape maps to a row id; anything else is no session."""
    secret = new_secret()
    row = session_id_of(secret)
    assert row is not None
    assert len(row) == 64
    assert row != secret
    for bad in (None, "", "short", secret + "x", secret[:-1] + "!", "a" * 43 + "\n"):
        assert session_id_of(bad) is None


@given(st.text(max_size=200))
def test_session_id_of_never_raises(text: str) -> None:
    """Arbitrary cookie text never raises and never maps unless it is 43 URL-safe chars."""
    row = session_id_of(text)
    assert row is None or len(text) == 43


def test_csrf_tokens_compare_exactly() -> None:
    """The same token matches; missing, empty, different or oversized ones do not."""
    token = new_secret()
    assert tokens_match(token, token)
    assert not tokens_match(token, None)
    assert not tokens_match(token, "")
    assert not tokens_match("", "")
    assert not tokens_match(token, token[:-1] + "A" if token[-1] != "A" else token[:-1] + "B")
    assert not tokens_match(token, token * 4)


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/console/tickets/T-1", "/console/tickets/T-1"),
        ("/console/?status=new&level=2", "/console/?status=new&level=2"),
        (None, "/console/"),
        ("", "/console/"),
        ("https://evil.example/", "/console/"),
        ("//evil.example/console/", "/console/"),
        ("/console//evil.example", "/console/"),
        ("/console/../api/v1/me", "/console/"),
        ("/api/v1/me", "/console/"),
        ("/console/\\evil", "/console/"),
        ("/console/" + "a" * 400, "/console/"),
    ],
)
def test_redirects_stay_in_the_console(target: str | None, expected: str) -> None:
    """After sign-in, only console paths are followed."""
    assert safe_next(target) == expected


def test_user_agent_is_clipped_to_printable_ascii() -> None:
    """A User-Agent is stored without controls, at most 200 characters."""
    assert clip_user_agent("Mozilla\x1b[31m\u202e" + "x" * 300) == ("Mozilla[31m" + "x" * 300)[:200]
    assert clip_user_agent(None) == ""


SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"


def test_totp_accepts_the_window_once() -> None:
    """A code of now or one step either side matches once; a used step is refused."""
    now = 1_800_000_000.0
    step = totp.step_at(now)
    for offset in (-1, 0, 1):
        code = totp.code_at(SECRET, (step + offset) * 30)
        assert totp.matched_step(SECRET, code, now, 0) == step + offset
        assert totp.matched_step(SECRET, code, now, step + offset) is None
    assert totp.matched_step(SECRET, totp.code_at(SECRET, (step + 2) * 30), now, 0) is None


@pytest.mark.parametrize("code", [None, "", "12345", "1234567", "abcdef", "12 34 5x"])
def test_totp_refuses_malformed_codes(code: str | None) -> None:
    """Codes are six digits (a space inside is allowed); anything else never matches."""
    assert totp.matched_step(SECRET, code, 1_800_000_000.0, 0) is None


def test_totp_code_with_space_and_bad_secrets() -> None:
    """ "123 456" is read as six digits; malformed or too short secrets never match."""
    now = 1_800_000_000.0
    code = totp.code_at(SECRET, now)
    assert totp.matched_step(SECRET, f"{code[:3]} {code[3:]}", now, 0) is not None
    assert totp.matched_step("not base32!", code, now, 0) is None
    assert totp.matched_step("JBSWY3DPEHPK3PXP", code, now, 0) is None


def test_totp_enrolment_material() -> None:
    """New secrets are 32 base32 characters; the URI and QR code carry no markup of ours."""
    secret = totp.new_secret()
    assert len(secret) == 32
    assert secret.isalnum()
    uri = totp.provisioning_uri(secret, "bob", "broker.example")
    assert uri.startswith("otpauth://totp/Secondline%20%28broker.example%29%3Abob?secret=")
    svg = totp.qr_svg(uri)
    assert svg.startswith("<svg")
    assert "<script" not in svg
    assert "style=" not in svg


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("de-DE,de;q=0.9,en;q=0.8", "de"),
        ("en-US,en;q=0.9,de;q=0.8", "en"),
        ("fr-FR,de;q=0.5,en;q=0.4", "de"),
        ("de;q=0.2,en;q=0.9", "en"),
        ("fr, it", None),
        ("de;q=0, en;q=0", None),
        ("de;q=abc", None),
        ("de;q=7", None),
        ("", None),
        (None, None),
        ("DE_at", "de"),
    ],
)
def test_accept_language(header: str | None, expected: str | None) -> None:
    """The highest-quality console language wins; unknown, zero and malformed ones do not."""
    assert from_accept_language(header) == expected


def test_account_language_wins_and_english_is_the_default() -> None:
    """The account's choice beats the browser; nothing known means English."""
    assert choose("de", "en") == "de"
    assert choose(None, "de") == "de"
    assert choose("xx", "fr") == "en"
    assert as_language(None) is None


@given(st.text(max_size=1000))
def test_accept_language_never_raises(header: str) -> None:
    """Any header text is parsed without error."""
    assert from_accept_language(header) in (None, "de", "en")


def test_csp_has_no_inline_code() -> None:
    """Scripts and styles come from our origin only; the player page adds WebAssembly."""
    plain = content_security_policy()
    assert "script-src 'self';" in plain
    assert "style-src 'self';" in plain
    assert "unsafe" not in plain
    player = content_security_policy(wasm=True)
    assert "script-src 'self' 'wasm-unsafe-eval';" in player
    assert "unsafe-inline" not in player
    assert "'unsafe-eval'" not in player


def test_display_filters_remove_controls_and_bidi() -> None:
    """Outside text loses controls and direction overrides, keeps its words, and is capped."""
    assert display_text("web\u202e01\x1b[31m", 50) == "web01[31m"
    assert display_text(None) == ""
    assert display_text("x" * 100, 10) == "x" * 10
    assert multiline_text("a\r\nb\u202e\nc") == ["a", "b", "c"]
    assert multiline_text(None) == []


def test_queue_filter_checks_every_field() -> None:
    """Unknown statuses and levels, and names outside their syntax, fall back to no filter."""
    good = QueueFilter.from_query(
        {"status": "new", "level": "2", "customer": "acme", "assignee": "bob"}
    )
    assert good == QueueFilter("new", 2, "acme", "bob")
    assert good.query() == {"status": "new", "level": "2", "customer": "acme", "assignee": "bob"}
    bad = QueueFilter.from_query(
        {"status": "<x>", "level": "9", "customer": "../etc", "assignee": "\x00"}
    )
    assert bad == QueueFilter()
    assert bad.query() == {"status": "active"}
    assert QueueFilter.from_query({"assignee": "me"}).assignee == "me"


def test_queue_order_unassigned_mine_others() -> None:
    """Unassigned first, then mine, then colleagues'; higher level and older first within."""
    tickets: list[dict[str, object]] = [
        {"id": "a", "assignee": "ann", "level": 2, "created_at": "2026-01-01"},
        {"id": "b", "assignee": "bob", "level": 1, "created_at": "2026-01-01"},
        {"id": "c", "assignee": None, "level": 1, "created_at": "2026-01-01"},
        {"id": "d", "assignee": None, "level": 2, "created_at": "2026-01-03"},
        {"id": "e", "assignee": None, "level": 2, "created_at": "2026-01-02"},
    ]
    ordered = queue_order(tickets, "bob")  # type: ignore[arg-type]
    assert [t["id"] for t in ordered] == ["e", "d", "c", "b", "a"]
