"""The gateway's algorithms, judged from outside: the independent auditor `ssh-audit` (run as
a process, JSON output) against a real `secondline serve`, and the gateway's real KEXINIT
against the list in docs/security.md ("Algorithms the gateway offers")."""

from __future__ import annotations

import asyncio
import json
import re
import sys
import tomllib
from pathlib import Path
from typing import Final

import pytest
from asyncssh.kex import get_kex_algs

from tests.support.broker import BrokerProcess, start_broker
from tests.support.processes import communicate
from tests.support.raw_ssh import KexInit, RawSshClient, client_kexinit

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]

BOUND: Final = 60.0  # failure bound for a run of ssh-audit on a shared machine
DOCS: Final = Path(__file__).resolve().parents[2] / "docs" / "security.md"
NO_POST_QUANTUM: Final = "does not provide protection against post-quantum attacks"
# The one place the accepted findings are listed (docs/security.md says the same, and why):
# the classical key exchanges kept for clients without a post-quantum one.
DOCUMENTED_FINDINGS: Final = frozenset(
    {
        ("kex", "curve25519-sha256", "warn", NO_POST_QUANTUM),
        ("kex", "curve25519-sha256@libssh.org", "warn", NO_POST_QUANTUM),
        ("kex", "diffie-hellman-group16-sha512", "warn", NO_POST_QUANTUM),
        ("kex", "diffie-hellman-group18-sha512", "warn", NO_POST_QUANTUM),
    }
)
# Offered only where asyncssh has them (marked so in the docs).
WHERE_AVAILABLE: Final = "‡"


def ssh_port(data_dir: Path) -> int:
    config = tomllib.loads((data_dir / "secondline.toml").read_text(encoding="utf-8"))
    return int(config["ssh_port"])


async def ssh_audit(port: int) -> dict[str, object]:
    """Run ssh-audit against 127.0.0.1:port; its JSON report. The DHEat rate test is
    skipped: it measures connection throttling, not algorithms, and only adds a note."""
    tool = Path(sys.executable).with_name("ssh-audit")
    proc = await asyncio.create_subprocess_exec(
        str(tool), "-j", "--skip-rate-test", "-p", str(port), "127.0.0.1",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await communicate(proc, BOUND)
    # 0: nothing found, 2: warnings; 1 (connection error) and 3 (failures) are not taken.
    assert proc.returncode in (0, 2), (proc.returncode, out[-2000:], err[-2000:])
    report = json.loads(out)
    assert isinstance(report, dict)
    return report


def findings(report: dict[str, object]) -> set[tuple[str, str, str, str]]:
    """Every warning and failure in the report: (section, algorithm, level, text)."""
    found: set[tuple[str, str, str, str]] = set()
    for section in ("kex", "key", "enc", "mac"):
        entries = report.get(section, [])
        assert isinstance(entries, list)
        for entry in entries:
            notes = entry.get("notes", {})
            for level in ("warn", "fail"):
                for text in notes.get(level, []):
                    found.add((section, entry["algorithm"], level, text))
    return found


def documented_algorithms() -> dict[str, list[str]]:
    """The table under "Algorithms the gateway offers" in docs/security.md: kind -> names
    in order (a name ending in ‡ is offered where asyncssh has it, and dropped if not)."""
    text = DOCS.read_text(encoding="utf-8")
    section = text.split("#### Algorithms the gateway offers", 1)[1].split("\n#", 1)[0]
    table: dict[str, list[str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 2 or not cells[1].startswith("`"):
            continue
        names = []
        for name, mark in re.findall(r"`([^`]+)`(‡?)", cells[1]):
            if mark == WHERE_AVAILABLE and name.encode() not in get_kex_algs():
                continue
            names.append(name)
        table[cells[0]] = names
    return table


async def served_kexinit(port: int) -> KexInit:
    client = await RawSshClient.connect("127.0.0.1", port)
    try:
        async with asyncio.timeout(BOUND):
            return await client.start(client_kexinit())
    finally:
        await client.close()


async def test_ssh_audit_finds_no_failure_and_only_the_documented_warnings(
    data_dir: Path,
) -> None:
    """ssh-audit against the gateway as shipped, then with the legacy setting on (so the
    auditor's own key exchanges complete and it checks the host key too): no failure, no
    warning but the documented ones, no CVE, no compression."""
    reports = []
    for legacy in (False, True):
        if legacy:
            with (data_dir / "secondline.toml").open("a", encoding="utf-8") as config:
                config.write("ssh_allow_legacy_kex = true\n")
        broker = await start_broker(data_dir)
        try:
            reports.append(await ssh_audit(ssh_port(data_dir)))
        finally:
            await broker.stop()
    for report in reports:
        assert findings(report) <= DOCUMENTED_FINDINGS, findings(report) - DOCUMENTED_FINDINGS
        assert report["cves"] == []
        assert report["compression"] == ["none"]
        kex = [entry["algorithm"] for entry in report["kex"]]  # type: ignore[attr-defined]
        assert "kex-strict-s-v00@openssh.com" in kex
    # Refused, the auditor saw no host key; let in, it did.
    fingerprints = [{f["hostkey"] for f in r["fingerprints"]} for r in reports]  # type: ignore[attr-defined]
    assert fingerprints == [set(), {"ssh-ed25519"}]
    documented = DOCS.read_text(encoding="utf-8").split("#### Algorithms the gateway offers")[1]
    accepted = documented.split("Accepted ssh-audit findings", 1)[1].split("*Tests*", 1)[0]
    for _, algorithm, _, text in DOCUMENTED_FINDINGS:
        assert f"`{algorithm}`" in accepted, algorithm
        assert text in " ".join(accepted.split()), text


async def test_the_gateways_kexinit_is_the_documented_algorithm_list(
    broker: BrokerProcess,
) -> None:
    """What the gateway's KEXINIT offers, in order, is the list in docs/security.md."""
    offered = await served_kexinit(ssh_port(broker.data_dir))
    table = documented_algorithms()
    assert table == {
        "key exchange": list(offered.kex_algorithms),
        "host key": list(offered.host_key_algorithms),
        "cipher": list(offered.ciphers_c2s),
        "MAC": list(offered.macs_c2s),
        "compression": list(offered.compression_c2s),
    }
    assert offered.ciphers_s2c == offered.ciphers_c2s
    assert offered.macs_s2c == offered.macs_c2s
    assert offered.compression_s2c == offered.compression_c2s
