"""A transcript exported from a real broker verifies on a machine that has neither the broker
nor its data dir: the export carries the public key and its fingerprint, `transcript
public-key` prints them, and a changed file names its first bad event."""

from __future__ import annotations

import re

import pytest

from tests.support.broker import cli_env, secondline
from tests.support.site import Site, new_ticket, ok, sessions_of, start_agent

pytestmark = [pytest.mark.e2e]

FINGERPRINT = re.compile(r"SHA256:[A-Za-z0-9+/]{43}")


def elsewhere(*args: str) -> tuple[int, str, str]:
    """`secondline` with no --data-dir, no SECONDLINE_* variables and no stored login."""
    result = secondline(*args, env=cli_env(None))
    return result.code, result.out, result.err


async def test_export_then_verify_with_no_broker(site: Site) -> None:
    """Export writes the key beside the cast and the bundle; verify works on both with no
    broker and no data dir, with --public-key from `transcript public-key`, and says where
    the key came from; a changed byte names the first bad event and quotes no digest."""
    await start_agent(site, "web01", "unattended")
    site.ticket = new_ticket(site, "web01")
    result = await site.ssh(site.ticket, "echo offline-proof-$((6*7))")
    assert result.code == 0, result.err
    sid = str(sessions_of(site, site.ticket)[0]["id"])

    printed = ok(site.admin("transcript", "public-key"))
    fingerprint = FINGERPRINT.search(printed)
    assert fingerprint is not None, printed
    assert "-----BEGIN PUBLIC KEY-----" in printed
    as_json = site.admin("transcript", "public-key", "--json").json()
    assert isinstance(as_json, dict)
    assert as_json["fingerprint"] == fingerprint.group(0)

    out = site.tmp / "auditor"
    out.mkdir()
    cast, bundle = out / "session.cast", out / "session.json"
    exported = site.admin("transcript", "export", sid, "-o", str(cast))
    assert exported.code == 0, exported
    assert fingerprint.group(0) in exported.err
    ok(site.admin("transcript", "export", sid, "--format", "json", "-o", str(bundle)))
    key_beside = out / "session.cast.pub.pem"
    assert key_beside.read_text().strip().endswith("-----END PUBLIC KEY-----")
    assert fingerprint.group(0) in key_beside.read_text()
    assert (out / "session.json.pub.pem").is_file()

    for target in (cast, bundle):
        code, stdout, stderr = elsewhere("transcript", "verify", str(target))
        assert code == 0, (stdout, stderr)
        assert stdout.startswith("valid: The transcript is authentic and complete"), stdout
        assert "digest " in stdout
        assert fingerprint.group(0) in stdout
        assert "travelled with the transcript" in stdout

    own_key = site.tmp / "broker-key.pem"
    own_key.write_text(printed + "\n")
    key_beside.unlink()
    code, stdout, stderr = elsewhere("transcript", "verify", str(cast))
    assert code != 0
    assert "no public key" in stderr
    assert "--public-key" in stderr
    assert "no broker given" not in stderr
    code, stdout, _ = elsewhere("transcript", "verify", str(cast), "--public-key", str(own_key))
    assert code == 0, stdout
    assert "travelled" not in stdout

    data = bytearray(cast.read_bytes())
    data[data.index(b"offline-proof-42")] = ord("O")
    cast.write_bytes(bytes(data))
    code, stdout, _ = elsewhere("transcript", "verify", str(cast), "--public-key", str(own_key))
    assert code == 1
    assert re.match(r"INVALID, first bad event \d+ \(line \d+\): The transcript", stdout), stdout
    assert "digest" not in stdout
    assert not re.search(r"[.;:][.;:]", stdout), stdout
