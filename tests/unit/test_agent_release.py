"""The self-update core: release manifests, their signature, the package digest, the decision."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.errors import MessageError, ReleaseError
from agent.release import (
    ROLLBACK_AFTER_SECONDS,
    ReleaseManifest,
    UpdateQuery,
    UpdateReport,
    Verdict,
    check_package,
    decide_update,
    install_command,
    rollback_due,
    sign_manifest,
    verify_manifest,
    version_key,
)

PACKAGE = b"!<arch>\ndebian-binary   a package's bytes"


def manifest(version: str = "0.2.0", data: bytes = PACKAGE) -> ReleaseManifest:
    return ReleaseManifest(
        file=f"secondline-agent_{version}_amd64.deb",
        version=version,
        arch="amd64",
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
    )


def raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def test_signed_manifest_verifies_and_round_trips() -> None:
    """A manifest signed by the release key verifies and parses back to itself."""
    key = Ed25519PrivateKey.generate()
    body = manifest().serialize()
    assert verify_manifest(raw_public(key), body, sign_manifest(key, body)) == manifest()


def test_signature_by_another_key_is_refused() -> None:
    """A manifest signed by any key but the pinned release key is refused."""
    body = manifest().serialize()
    signature = sign_manifest(Ed25519PrivateKey.generate(), body)
    with pytest.raises(ReleaseError, match="does not verify"):
        verify_manifest(raw_public(Ed25519PrivateKey.generate()), body, signature)


def test_edited_manifest_is_refused() -> None:
    """Changing the manifest after signing (here, its digest) breaks the signature."""
    key = Ed25519PrivateKey.generate()
    body = manifest().serialize()
    signature = sign_manifest(key, body)
    edited = manifest(data=b"other bytes").serialize()
    with pytest.raises(ReleaseError, match="does not verify"):
        verify_manifest(raw_public(key), edited, signature)


@pytest.mark.parametrize("signature", ["", "not base64", "A" * 86 + "==\nX", "A" * 200])
def test_malformed_signature_is_refused(signature: str) -> None:
    """A signature file that is not one base64 Ed25519 signature is refused."""
    with pytest.raises(ReleaseError):
        verify_manifest(raw_public(Ed25519PrivateKey.generate()), b"{}", signature)


def test_signed_but_malformed_manifest_is_refused() -> None:
    """Even a correctly signed manifest must be well formed."""
    key = Ed25519PrivateKey.generate()
    body = b'{"file":"x","version":"1","arch":"amd64","sha256":"00","size":1}'
    with pytest.raises(ReleaseError, match="file does not name"):
        verify_manifest(raw_public(key), body, sign_manifest(key, body))


@pytest.mark.parametrize(
    "body",
    [
        b"[]",
        b'{"file":"a"}',
        b'{"file":"secondline-agent_1_amd64.deb","version":"1","arch":"amd64",'
        b'"sha256":"' + b"0" * 64 + b'","size":true}',
        b'{"file":"secondline-agent_1_amd64.deb","version":"1","arch":"amd64",'
        b'"sha256":"' + b"0" * 64 + b'","size":0}',
        b'{"file":"secondline-agent_1;rm_amd64.deb","version":"1;rm","arch":"amd64",'
        b'"sha256":"' + b"0" * 64 + b'","size":1}',
    ],
)
def test_manifest_parser_refuses_bad_input(body: bytes) -> None:
    """Wrong keys, types, sizes and versions are MessageErrors."""
    with pytest.raises(MessageError):
        ReleaseManifest.parse(body)


def test_package_with_wrong_digest_or_size_is_refused() -> None:
    """Bytes other than the manifest's are refused, by size first and then by SHA-256."""
    check_package(manifest(), PACKAGE)
    with pytest.raises(ReleaseError, match="SHA-256"):
        check_package(manifest(), PACKAGE[:-1] + b"X")
    with pytest.raises(ReleaseError, match="bytes"):
        check_package(manifest(), PACKAGE + b"X")


def test_versions_compare_as_numbers() -> None:
    """0.10 is newer than 0.9, and 1.0 is 1.0.0."""
    assert version_key("0.10") > version_key("0.9")
    assert version_key("1.0") == version_key("1.0.0")
    with pytest.raises(MessageError):
        version_key("1.0-rc1")


def test_newer_release_installs_when_quiet() -> None:
    """A newer version installs when no session is live."""
    got = decide_update(installed="0.1.0", arch="amd64", offered=manifest("0.2.0"), live_sessions=0)
    assert got.verdict is Verdict.INSTALL


def test_newer_release_waits_for_live_sessions() -> None:
    """A live session postpones the install."""
    got = decide_update(installed="0.1.0", arch="amd64", offered=manifest("0.2.0"), live_sessions=1)
    assert got.verdict is Verdict.WAIT


def test_downgrade_is_refused_and_same_version_is_nothing() -> None:
    """An older version is refused; the same version (1.0 vs 1.0.0) is no update."""
    down = decide_update(installed="0.3", arch="amd64", offered=manifest("0.2.9"), live_sessions=0)
    assert down.verdict is Verdict.REFUSE
    assert "downgrade" in down.reason
    same = decide_update(installed="0.2", arch="amd64", offered=manifest("0.2.0"), live_sessions=0)
    assert same.verdict is Verdict.NOTHING


def test_other_architecture_is_refused() -> None:
    """A package for another architecture is never installed."""
    got = decide_update(installed="0.1", arch="arm64", offered=manifest("0.2"), live_sessions=0)
    assert got.verdict is Verdict.REFUSE


def test_install_command_passes_the_path_as_one_argument() -> None:
    """The path cannot become an option or shell syntax."""
    assert install_command("/var/lib/x/-$(rm).deb") == [
        "dpkg",
        "--install",
        "--",
        "/var/lib/x/-$(rm).deb",
    ]


def test_rollback_only_after_two_minutes_without_reconnect() -> None:
    """A version that reconnected stays; one that did not goes after two minutes."""
    assert not rollback_due(installed_at=100.0, reconnected=False, now=100.0 + 119)
    assert rollback_due(installed_at=100.0, reconnected=False, now=100.0 + ROLLBACK_AFTER_SECONDS)
    assert not rollback_due(installed_at=100.0, reconnected=True, now=100.0 + 1000)


def test_update_messages_round_trip_and_refuse_bad_input() -> None:
    """Query and report parse what they serialize; bad versions, outcomes, reasons refused."""
    assert UpdateQuery.parse(UpdateQuery("0.1.0", "amd64").serialize()) == UpdateQuery(
        "0.1.0", "amd64"
    )
    report = UpdateReport("unknown", "refused", "the release signature is malformed")
    assert UpdateReport.parse(report.serialize()) == report
    for bad in (
        b'{"version":"1;rm","arch":"amd64"}',
        b'{"version":"1","arch":"AMD64"}',
        b'{"version":"1","arch":"amd64","x":1}',
    ):
        with pytest.raises(MessageError):
            UpdateQuery.parse(bad)
    for bad in (
        b'{"version":"1","outcome":"deleted","reason":""}',
        b'{"version":"1","outcome":"refused","reason":"a\\nb"}',
        b'{"version":"1","outcome":"refused","reason":"' + b"x" * 301 + b'"}',
    ):
        with pytest.raises(MessageError):
            UpdateReport.parse(bad)
