"""The agent's own version: what it reports to the broker and compares offered releases
with. tools/build_agent_deb.py refuses to build a package whose version is not this."""

from typing import Final

VERSION: Final = "0.1.0"
