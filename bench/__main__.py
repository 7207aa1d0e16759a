"""`python -m bench [--quick] [--profile] [--only SCENARIO...] [--targets TARGET...]
[--kex ALGORITHMS]`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from typing import cast

from bench import SshdMissing
from bench.metrics import SCENARIOS, TARGET_KEYS, TargetKey
from bench.openssh import ensure_openssh
from bench.runner import run_bench
from bench.settings import Settings


def _parse(argv: Sequence[str] | None) -> Settings:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Measure Secondline against OpenSSH baselines; see docs/benchmarks.md.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="fewer runs and smaller transfers (≤ 3 min)"
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=SCENARIOS,
        default=(),
        metavar="SCENARIO",
        help=f"run only these scenarios: {', '.join(SCENARIOS)}",
    )
    parser.add_argument(
        "--targets",
        nargs="+",
        choices=TARGET_KEYS,
        default=(),
        metavar="TARGET",
        help=f"measure only these targets: {', '.join(TARGET_KEYS)}",
    )
    parser.add_argument(
        "--kex",
        default=None,
        metavar="ALGORITHMS",
        help="KexAlgorithms for every OpenSSH client (default: OpenSSH's own)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="write a py-spy flame graph of each broker for the throughput and echo scenarios",
    )
    parser.add_argument("--verbose", action="store_true", help="log every step")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="bench: %(message)s",
        stream=sys.stderr,
    )
    return Settings.build(
        quick=args.quick,
        only=tuple(args.only),
        targets=tuple(cast(TargetKey, key) for key in args.targets),
        kex=args.kex,
        profile=args.profile,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the bench; print the table and where the results went."""
    settings = _parse(argv)
    try:
        ensure_openssh()
    except SshdMissing as error:
        print(f"bench: {error}", file=sys.stderr)
        return 2
    result = asyncio.run(run_bench(settings))
    print(result.table_text, end="")
    print(f"\nresults: {result.json_path} (and latest.json, latest.md, latest.png)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
