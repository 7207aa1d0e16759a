"""The agent package stays small: importing all of it never loads the broker's stack."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import agent

FORBIDDEN = ("broker", "aiohttp", "sqlalchemy", "pydantic", "alembic", "asyncpg", "jinja2")


def test_agent_modules_never_load_the_broker_stack() -> None:
    """Importing every agent module in a fresh interpreter loads none of the broker's packages."""
    modules = sorted(f"agent.{info.name}" for info in pkgutil.iter_modules(agent.__path__))
    modules.remove("agent.__main__")  # running it would start the CLI
    assert {"agent.cli", "agent.tunnel", "agent.enrollment", "agent.runner"} <= set(modules)
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = set(json.loads(result.stdout))
    assert "asyncssh" in loaded
    assert loaded.isdisjoint(FORBIDDEN), sorted(loaded & set(FORBIDDEN))
