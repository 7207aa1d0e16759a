"""`python -m bench.kb_eval [--skip-pg] [--skip-latency] [--misses] [--json FILE]`.

Prints recall@3 and MRR of the evaluation set for same-language and cross-language tickets
(tuning and held-out part apart), on SQLite and on PostgreSQL (``SECONDLINE_TEST_PG``, in a
schema of its own that is dropped after), then the search latency at 10,000 articles
(``bench.kb_search``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import tempfile
from pathlib import Path

from bench.kb_eval import SPLITS, Score, evaluate, load, merged
from bench.kb_search import DEFAULT_PG, _pg_schema, run_postgresql, run_sqlite
from broker.db.engine import create_engine, migrate, session_factory


async def _evaluate_url(url: str, schema: str | None, splits: list[str]) -> dict[str, Score]:
    engine = create_engine(url, schema=schema)
    try:
        scores = await evaluate(session_factory(engine), load(splits))
    finally:
        await engine.dispose()
    named = {f"{split}/{pair}": score for (split, pair), score in scores.items()}
    return named | {"all/same": merged(scores, "same"), "all/cross": merged(scores, "cross")}


def quality_sqlite(splits: list[str]) -> dict[str, Score]:
    with tempfile.TemporaryDirectory(prefix="kb-eval-") as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'kb.db'}"
        migrate(url)
        return asyncio.run(_evaluate_url(url, None, splits))


def quality_postgresql(dsn: str, splits: list[str]) -> dict[str, Score]:
    plain = dsn.replace("postgresql+asyncpg://", "postgresql://", 1)
    url = "postgresql+asyncpg://" + plain.removeprefix("postgresql://")
    schema = f"kb_eval_{secrets.token_hex(4)}"
    asyncio.run(_pg_schema(plain, schema, create=True))
    try:
        migrate(url, schema)
        return asyncio.run(_evaluate_url(url, schema, splits))
    finally:
        asyncio.run(_pg_schema(plain, schema, create=False))


def _print_quality(backend: str, scores: dict[str, Score], misses: bool) -> None:
    print(f"{backend:<11}{'queries':>20}{'recall@3':>10}{'MRR':>7}")
    for name in sorted(scores):
        s = scores[name]
        print(f"{'':<11}{name:>20}{s.queries:>8}{s.recall3:>10.3f}{s.mrr:>7.3f}")
        if misses and not name.startswith("all/"):
            for text in s.misses:
                print(f"    miss  {text}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.kb_eval", description=__doc__)
    parser.add_argument("--skip-pg", action="store_true", help="SQLite only")
    parser.add_argument("--skip-latency", action="store_true", help="quality figures only")
    parser.add_argument("--misses", action="store_true", help="list tickets not in the top 3")
    parser.add_argument("--articles", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    splits = [name for name, path in SPLITS.items() if path.exists()]
    dsn = os.environ.get("SECONDLINE_TEST_PG", DEFAULT_PG)
    figures: dict[str, object] = {}
    backends = [("sqlite", lambda: quality_sqlite(splits))]
    if not args.skip_pg:
        backends.append(("postgresql", lambda: quality_postgresql(dsn, splits)))
    for backend, run in backends:
        try:
            scores = run()
        except OSError as exc:
            print(f"{backend} is not reachable ({exc}); skipped", file=sys.stderr)
            continue
        _print_quality(backend, scores, args.misses)
        figures[f"quality_{backend}"] = {
            name: {"queries": s.queries, "recall3": round(s.recall3, 3), "mrr": round(s.mrr, 3)}
            for name, s in scores.items()
        }
    if not args.skip_latency:
        latency = [run_sqlite(args.articles, args.queries, 1042)]
        if not args.skip_pg:
            try:
                latency.append(run_postgresql(dsn, args.articles, args.queries, 1042))
            except OSError as exc:
                print(f"PostgreSQL at {dsn} is not reachable ({exc}); skipped", file=sys.stderr)
        print(
            f"\n{'backend':<11}{'articles':>9}  {'search p50':>10}{'p99':>9}"
            f"  {'no glossary p50':>15}{'p99':>9}"
        )
        for f in latency:
            print(
                f"{f.backend:<11}{f.articles:>9}  {f.search_p50_ms:>8.2f}ms"
                f"{f.search_p99_ms:>7.2f}ms  {f.plain_p50_ms:>13.2f}ms{f.plain_p99_ms:>7.2f}ms"
            )
        figures["latency"] = [f.__dict__ for f in latency]
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
