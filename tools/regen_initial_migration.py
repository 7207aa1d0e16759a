"""Regenerate migration 0001 from the models while no release exists yet.

Once Secondline is released, migrations are append-only and this tool is retired:
`alembic revision --autogenerate` writes the next one instead.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from alembic import command

from broker.db.engine import MIGRATIONS_DIR, alembic_config

TARGET = MIGRATIONS_DIR / "versions" / "0001_initial.py"


def main() -> None:
    versions = MIGRATIONS_DIR / "versions"
    if TARGET.exists():
        TARGET.unlink()
    # Later hand-written migrations point at 0001; Alembic refuses to load them while 0001
    # is missing, so they wait outside the versions folder until 0001 exists again.
    with tempfile.TemporaryDirectory() as tmp:
        parked = []
        for later in sorted(versions.glob("0*.py")):
            if not later.name.startswith("0001"):
                parked.append((later, Path(tmp) / later.name))
                later.rename(Path(tmp) / later.name)
        try:
            url = f"sqlite+aiosqlite:///{Path(tmp) / 'empty.db'}"
            command.revision(
                alembic_config(url), message="initial", autogenerate=True, rev_id="0001"
            )
        finally:
            for original, parked_at in parked:
                parked_at.rename(original)
    produced = next((MIGRATIONS_DIR / "versions").glob("0001_*.py"))
    if produced != TARGET:
        produced.rename(TARGET)
    print(f"wrote {TARGET}")


if __name__ == "__main__":
    main()
