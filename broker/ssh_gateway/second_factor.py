"""The SSH gateway's second factor (docs/identity.md): after the public key, the staff
member's authenticator code, asked over keyboard-interactive, which OpenSSH and PuTTY show as
a prompt.

asyncssh (2.24) has no "partial success" of its own: a key it has verified ends the sign-in.
``GatewayServer`` therefore stands in front of the connection's ``send_userauth_success``:
while a code is still due it answers the verified key with a partial success (RFC 4252 5.1),
which names keyboard-interactive as the one method left, and lets the success through only
after a good code. What the code is checked with is the console's own mechanism
(``broker.auth.second_factor``: single-use steps, the shared login throttle).
"""

from __future__ import annotations

import datetime as dt
import enum
import time
from dataclasses import dataclass
from typing import Final

from sqlalchemy import select

from broker.auth import second_factor, shift_windows
from broker.db.models_staff import User
from broker.services import Services
from broker.sessions.access import StaffKey

# Code prompts per connection, as OpenSSH's NumberOfPasswordPrompts; a client that opens
# keyboard-interactive again and again (or answers wrongly) is cut off after this many.
MAX_CODE_PROMPTS: Final = 3
PROMPT: Final = "Authenticator code: "
INSTRUCTION: Final = "Secondline: the 6-digit code from your authenticator app."
ASK_BANNER: Final = (
    "key accepted; now the code from your authenticator app. Without a terminal "
    "(BatchMode, scripts): sign in to the console and press "
    '"Allow my key for this shift" (docs/identity.md)'
)
NOT_ENROLLED: Final = (
    "this account needs an authenticator code for SSH and has none yet: sign in to the "
    "console once to set one up"
)
THROTTLED: Final = "too many wrong codes for this account or address; try again later"


@dataclass(frozen=True)
class KeyPolicy:
    """What the gateway asks of one verified key."""

    policy: str  # every-session, per-shift or off
    code_due: bool  # False: off, or a shift window is open for this key
    enrolled: bool  # the account has an authenticator secret


async def key_policy(services: Services, staff: StaffKey) -> KeyPolicy:
    policy = services.config.second_factor_for(staff.role)
    if policy == "off":
        return KeyPolicy(policy, code_due=False, enrolled=True)
    now = services.clock()
    async with services.db() as db:
        secret = (
            await db.execute(select(User.totp_secret).where(User.id == staff.user_id))
        ).scalar_one_or_none()
        window = policy == "per-shift" and await shift_windows.is_open(
            db, staff.user_id, staff.fingerprint, now
        )
    return KeyPolicy(policy, code_due=not window, enrolled=secret is not None)


class CodeResult(enum.Enum):
    ACCEPTED = "accepted"
    REFUSED = "refused"  # wrong, malformed or already used: one answer for all
    THROTTLED = "throttled"


@dataclass(frozen=True)
class CodeOutcome:
    result: CodeResult
    window_until: dt.datetime | None = None


async def check_code(
    services: Services, staff: StaffKey, policy: str, source: str, code: str
) -> CodeOutcome:
    """Check one typed code exactly as the console does; on success under ``per-shift``
    open the key's shift window. Failures count in the shared login throttle."""
    throttle = services.login_throttle
    keys = second_factor.throttle_keys(staff.name, source)
    now_mono = time.monotonic()
    if any(throttle.retry_after(k, now_mono) > 0 for k in keys):
        return CodeOutcome(CodeResult.THROTTLED)
    now = services.clock()
    until = None
    async with services.db() as db, db.begin():
        user = (await db.execute(select(User).where(User.id == staff.user_id))).scalar_one()
        ok = not user.disabled and await second_factor.claim_code(db, user, code[:16], now)
        if ok and policy == "per-shift":
            until = await shift_windows.open_for(
                db,
                staff.user_id,
                [staff.fingerprint],
                now=now,
                hours=services.config.ssh_shift_hours,
                via="ssh",
            )
    if not ok:
        for key in keys:
            throttle.failed(key, now_mono)
        return CodeOutcome(CodeResult.REFUSED)
    return CodeOutcome(CodeResult.ACCEPTED, until)
