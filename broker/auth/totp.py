"""Time-based one-time codes (RFC 6238, 30 s, 6 digits) for the console sign-in, pure except
for drawing a new secret: the caller passes the time and the last step used.

Each code works once: a step at or before ``users.totp_last_step`` is refused, so a code seen
over someone's shoulder is useless after its owner signed in with it."""

from __future__ import annotations

import hmac
import re
from typing import Final
from urllib.parse import quote

import pyotp
import segno

STEP_SECONDS: Final = 30
_CODE_RE: Final = re.compile(r"^[0-9]{6}$")
_SECRET_RE: Final = re.compile(r"^[A-Z2-7]{16,64}$")
ISSUER: Final = "Secondline"


def new_secret() -> str:
    """A fresh base32 secret of 160 bits, as authenticator apps expect."""
    return pyotp.random_base32(32)


def normalise_code(text: str | None) -> str | None:
    """The six digits of a typed code (spaces allowed, as apps show "123 456"), or None."""
    if text is None:
        return None
    code = text.replace(" ", "").strip()
    return code if _CODE_RE.fullmatch(code) else None


def step_at(unix_seconds: float) -> int:
    return int(unix_seconds) // STEP_SECONDS


def matched_step(secret: str, code: str | None, unix_seconds: float, last_step: int) -> int | None:
    """The step ``code`` belongs to (now, or one step either side for clock drift), or None
    when it matches none, the secret is malformed, or the step was used already."""
    digits = normalise_code(code)
    if digits is None or not _SECRET_RE.fullmatch(secret):
        return None
    now_step = step_at(unix_seconds)
    try:
        totp = pyotp.TOTP(secret)
        for step in (now_step - 1, now_step, now_step + 1):
            if hmac.compare_digest(totp.at(step * STEP_SECONDS), digits):
                return step if step > last_step else None
    except ValueError:  # a secret shorter than pyotp's minimum (112 bits) never matches
        return None
    return None


def code_at(secret: str, unix_seconds: float) -> str:
    """The code an authenticator app shows at ``unix_seconds`` (for the demo and tests)."""
    return str(pyotp.TOTP(secret).at(int(unix_seconds)))


def provisioning_uri(secret: str, account: str, host: str) -> str:
    """The otpauth:// URI the QR code carries; the label names the broker host and account."""
    label = quote(f"{ISSUER} ({host}):{account}", safe="")
    return f"otpauth://totp/{label}?secret={secret}&issuer={quote(ISSUER)}&digits=6&period=30"


def qr_svg(uri: str) -> str:
    """The QR code of ``uri`` as inline SVG markup (no script, no style attribute)."""
    qr = segno.make(uri, error="m")
    svg: str = qr.svg_inline(
        scale=5, border=3, dark="#111827", light="#ffffff", svgclass="qr", lineclass=None
    )
    return svg
