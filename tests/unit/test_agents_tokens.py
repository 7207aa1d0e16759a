"""Enrollment token rules: what a token may carry, its status, why a claim failed (pure)."""

from __future__ import annotations

import datetime as dt

import pytest

from broker.agents.tokens import claim_refusal, token_spec, token_status
from broker.db.models_agents import EnrollmentToken
from broker.errors import InputError

NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)


def spec_args(**changes: object) -> dict[str, object]:
    args: dict[str, object] = {
        "customer": "acme",
        "labels": {"env": "prod", "site": "Berlin 2"},
        "consent": "attended",
        "ttl_seconds": 3600,
        "uses": 1,
    }
    args.update(changes)
    return args


def test_a_good_spec_is_returned_with_sorted_labels() -> None:
    """Customer, labels, consent, lifetime and uses pass through; labels are sorted."""
    spec = token_spec(**spec_args(labels={"z": "1", "a": ""}))  # type: ignore[arg-type]
    assert spec.customer == "acme"
    assert list(spec.labels) == ["a", "z"]
    assert (spec.consent, spec.ttl_seconds, spec.uses) == ("attended", 3600, 1)


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"customer": "Acme"}, "customer name"),
        ({"labels": {"Env": "x"}}, "label key"),
        ({"labels": {"env": "a;b"}}, "label value"),
        ({"labels": {f"k{i}": "v" for i in range(33)}}, "at most 32 labels"),
        ({"consent": "maybe"}, "attended"),
        ({"ttl_seconds": 59}, "between 1 minute and 30 days"),
        ({"ttl_seconds": 31 * 86400}, "between 1 minute and 30 days"),
        ({"ttl_seconds": True}, "between 1 minute and 30 days"),
        ({"uses": 0}, "--uses"),
        ({"uses": 10_001}, "--uses"),
        ({"uses": False}, "--uses"),
    ],
)
def test_bad_specs_are_refused(changes: dict[str, object], needle: str) -> None:
    """Every field is checked against its character set and range."""
    with pytest.raises(InputError, match=needle):
        token_spec(**spec_args(**changes))  # type: ignore[arg-type]


def row(**changes: object) -> EnrollmentToken:
    values: dict[str, object] = {
        "id": "abcdefghijkl",
        "secret_hash": "0" * 64,
        "customer_id": 1,
        "labels": {},
        "consent": "attended",
        "uses_left": 1,
        "max_uses": 1,
        "created_by": "admin",
        "created_at": NOW - dt.timedelta(minutes=5),
        "expires_at": NOW + dt.timedelta(hours=1),
        "revoked_at": None,
    }
    values.update(changes)
    return EnrollmentToken(**values)


@pytest.mark.parametrize(
    ("changes", "status"),
    [
        ({}, "active"),
        ({"revoked_at": NOW, "uses_left": 0}, "revoked"),
        ({"uses_left": 0, "expires_at": NOW}, "used"),
        ({"expires_at": NOW}, "expired"),
    ],
)
def test_token_status(changes: dict[str, object], status: str) -> None:
    """Revoked beats used beats expired; a token expiring now is expired."""
    assert token_status(row(**changes), NOW) == status


@pytest.mark.parametrize(
    ("token", "secret_ok", "code"),
    [
        (None, False, "token_invalid"),
        (row(), False, "token_invalid"),
        (row(revoked_at=NOW), True, "token_revoked"),
        (row(expires_at=NOW), True, "token_expired"),
        (row(uses_left=0), True, "token_used"),
        (row(), True, "token_used"),
    ],
)
def test_claim_refusals_say_why(token: EnrollmentToken | None, secret_ok: bool, code: str) -> None:
    """Unknown ids and wrong secrets look alike; otherwise the reason is named."""
    refused = claim_refusal(token, secret_ok, NOW)
    assert refused.code == code
    assert refused.http_status == 403
    assert "helpdesk" in refused.message
