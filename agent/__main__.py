"""``python -m agent``: the same as the ``secondline-agent`` command."""

from agent.cli import main

raise SystemExit(main())
