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
    if TARGET.exists():
        TARGET.unlink()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'empty.db'}"
        command.revision(alembic_config(url), message="initial", autogenerate=True, rev_id="0001")
    produced = next((MIGRATIONS_DIR / "versions").glob("0001_*.py"))
    if produced != TARGET:
        produced.rename(TARGET)
    print(f"wrote {TARGET}")


if __name__ == "__main__":
    main()
