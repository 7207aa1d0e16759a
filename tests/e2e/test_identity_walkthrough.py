"""docs/identity.md runs as written: its directory block adds a real slapd (started by the
test) to a real `secondline serve` with the `secondline` CLI, tests it, syncs it, and the
staff list then shows dora from the directory next to the local first admin."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from tests.support.broker import BrokerProcess, cli_env, secondline
from tests.support.site import ok
from tests.support.slapd import Slapd
from tests.support.walkthrough import Walkthrough, blocks, steps

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

ROOT = Path(__file__).resolve().parents[2]


async def test_identity_doc_walkthrough_runs_as_written(
    broker: BrokerProcess, tmp_path: Path
) -> None:
    """The directory commands of docs/identity.md succeed against slapd; `user list`
    shows each account's source."""
    slapd = Slapd(tmp_path / "slapd")
    slapd.prepare()
    await slapd.start()
    try:
        table = [
            ("/var/lib/secondline", str(broker.data_dir)),
            ("ldaps://dc1.example.com", slapd.url),
        ]
        work = tmp_path / "work"
        work.mkdir()
        env = cli_env(tmp_path / "home")
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        found = blocks((ROOT / "docs" / "identity.md").read_text(encoding="utf-8"), "identity")
        assert len(found) == 1
        async with Walkthrough(work, env) as walk:
            for block in found:
                for step in steps(block, table):
                    await walk.run(step)
        listed = ok(secondline("user", "list", data_dir=broker.data_dir))
        lines = {line.split()[0]: line for line in listed.splitlines()[1:] if line.strip()}
        assert "directory:corp" in lines["dora"]
        assert "level2" in lines["dora"]
        assert "local" in lines["admin"]
        shown = json.loads(ok(secondline("directory", "list", "--json", data_dir=broker.data_dir)))
        assert shown[0]["healthy"] is True
        assert "service account secret" not in json.dumps(shown)
    finally:
        await slapd.stop()
