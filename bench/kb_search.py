"""Knowledge-base search latency at 10,000 articles, on SQLite and PostgreSQL.

    python -m bench.kb_search [--articles 10000] [--queries 300] [--json FILE] [--skip-pg]

Generates articles from templates (German and English helpdesk text: symptoms as callers
put them, causes, steps, shell commands, tags, OS names), stores them the way the broker
does (the same content checks, search documents and full-text structures from the
migrations), then times what one search request does: the ranked query alone, and the
query with the result snippets. PostgreSQL comes from SECONDLINE_TEST_PG (default
postgresql://postgres@127.0.0.1:5432/test), in a schema of its own that is dropped after.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import secrets
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import insert, text

from broker.db.engine import create_engine, migrate, session_factory
from broker.db.models_kb import KbArticle, KbSearchDoc
from broker.kb.analysis import query_terms
from broker.kb.article import ArticleContent, CommandEntry, check_content
from broker.kb.results import article_results
from broker.kb.search_docs import SearchFilter, doc_values, search
from broker.kb.store import doc_fields

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"

# (title, problem, cause, solution, commands, tags, os) with {slots}.
TEMPLATES_EN = [
    (
        "Printer {printer} queue stuck with '{cups_error}'",
        "Nothing prints on {printer} since {when}. Jobs stay in the queue and the status says "
        "'{cups_error}'. Other users on the floor have the same problem.",
        "The {package} package was left half installed by an interrupted upgrade.",
        "1. Check the queue with lpstat.\n2. Reinstall {package}.\n3. Restart CUPS and print "
        "a test page.",
        ["lpstat -t", "apt-get install --reinstall {package}", "systemctl restart cups"],
        ["printing", "cups"],
        ["Debian GNU/Linux {deb}"],
    ),
    (
        "{app} does not start after update to {version}",
        "After the update to {version}, {app} shows a splash screen and then closes. "
        "The user cannot open any {doc} files.",
        "A stale profile from the previous version is incompatible with {version}.",
        "Rename the profile folder, start {app} once, then copy the bookmarks back.",
        ["mv ~/.config/{appdir} ~/.config/{appdir}.old", "{appdir} --safe-mode"],
        ["desktop", "update"],
        ["Ubuntu {ubu}"],
    ),
    (
        "VPN disconnects every {minutes} minutes",
        "The VPN connection drops every {minutes} minutes while working from home; "
        "reconnecting works for a while. Video calls freeze before it drops.",
        "The home router's MTU is lower than the tunnel expects, so large packets are lost.",
        "Lower the MTU of the tunnel interface to {mtu} and make it persistent.",
        ["ip link set dev wg0 mtu {mtu}", "ping -M do -s {probe} {host}"],
        ["vpn", "network"],
        ["Debian GNU/Linux {deb}", "Windows {win}"],
    ),
    (
        "Disk full on {server}: /var at 100%",
        "Users report that saving fails on {server}. Services stop writing logs; the disk "
        "usage alert shows /var at 100 percent.",
        "Old journal files and rotated logs of {service} were never cleaned up.",
        "Vacuum the journal, delete old {service} logs, enable log rotation.",
        ["df -h /var", "journalctl --vacuum-size=500M", "du -sh /var/log/* | sort -h"],
        ["disk", "logs"],
        ["Debian GNU/Linux {deb}"],
    ),
    (
        "Login fails with '{login_error}'",
        "User cannot sign in on {host}; the login screen says '{login_error}'. "
        "The password was changed {when}.",
        "The cached credentials are out of date after the password change.",
        "Clear the credential cache and sign in while connected to the office network.",
        ["sss_cache -E", "systemctl restart sssd", "id {user}"],
        ["login", "sssd"],
        ["Ubuntu {ubu}"],
    ),
    (
        "Outlook keeps asking for the password",
        "Outlook asks for the password every few minutes since {when}, even though it is "
        "correct. Mail on the phone works.",
        "A stored credential for the old mail server conflicts with modern authentication.",
        "Remove the stored credentials in Credential Manager and restart Outlook.",
        ["cmdkey /list", "cmdkey /delete:MicrosoftOffice16_Data"],
        ["outlook", "mail"],
        ["Windows {win}"],
    ),
]
TEMPLATES_DE = [
    (
        "Drucker {printer} druckt nicht, Aufträge hängen",
        "Seit {when_de} druckt der Drucker {printer} nicht mehr. Die Druckaufträge bleiben in "
        "der Warteschlange hängen, im Status steht '{cups_error}'.",
        "Das Paket {package} war nach einem abgebrochenen Update beschädigt.",
        "1. Warteschlange mit lpstat prüfen.\n2. {package} neu installieren.\n3. CUPS neu "
        "starten und eine Testseite drucken.",
        ["lpstat -t", "apt-get install --reinstall {package}", "systemctl restart cups"],
        ["drucken", "cups"],
        ["Debian GNU/Linux {deb}"],
    ),
    (
        "Netzlaufwerk {drive} nicht erreichbar",
        "Das Netzlaufwerk {drive} lässt sich seit {when_de} nicht mehr verbinden. Beim Öffnen "
        "kommt die Meldung 'Der Netzwerkpfad wurde nicht gefunden'.",
        "Die Freigabe verlangt SMB 3, der Rechner hatte SMB 1 erzwungen.",
        "SMB-Version in der Konfiguration auf 3 setzen und das Laufwerk neu verbinden.",
        ["smbclient -L //{server} -m SMB3", "mount -t cifs //{server}/daten /mnt/daten"],
        ["netzlaufwerk", "smb"],
        ["Ubuntu {ubu}"],
    ),
    (
        "Anmeldung schlägt fehl: '{login_error}'",
        "Die Anmeldung am Rechner {host} klappt nicht, es erscheint '{login_error}'. Das "
        "Kennwort wurde {when_de} geändert.",
        "Die zwischengespeicherten Anmeldedaten waren nach der Kennwortänderung veraltet.",
        "Anmeldecache leeren und im Firmennetz neu anmelden.",
        ["sss_cache -E", "systemctl restart sssd"],
        ["anmeldung", "sssd"],
        ["Ubuntu {ubu}"],
    ),
    (
        "Festplatte auf {server} voll",
        "Auf {server} lassen sich keine Dateien mehr speichern. Die Überwachung meldet, dass "
        "/var zu 100 Prozent belegt ist, Dienste schreiben keine Protokolle mehr.",
        "Alte Journaldateien und Protokolle von {service} wurden nie aufgeräumt.",
        "Journal verkleinern, alte Protokolle löschen, Protokollrotation einrichten.",
        ["df -h /var", "journalctl --vacuum-size=500M"],
        ["festplatte", "protokolle"],
        ["Debian GNU/Linux {deb}"],
    ),
    (
        "VPN-Verbindung bricht alle {minutes} Minuten ab",
        "Im Homeoffice trennt sich das VPN alle {minutes} Minuten. Videokonferenzen frieren "
        "vorher ein, danach lässt sich die Verbindung kurz wieder aufbauen.",
        "Die MTU des Heimrouters ist kleiner als der Tunnel erwartet.",
        "MTU der Tunnelschnittstelle auf {mtu} setzen und dauerhaft speichern.",
        ["ip link set dev wg0 mtu {mtu}"],
        ["vpn", "netzwerk"],
        ["Windows {win}"],
    ),
]
SLOTS = {
    "printer": ["HP-2OG", "Kyocera-EG", "Canon-Lager", "Brother-Empfang", "Ricoh-3OG"],
    "cups_error": ["Filter failed", "Stopped", "Unable to locate printer", "Paused"],
    "package": ["cups-filters", "printer-driver-gutenprint", "hplip", "cups-daemon"],
    "when": ["this morning", "yesterday", "the last update", "Monday"],
    "when_de": ["heute morgen", "gestern", "dem letzten Update", "Montag"],
    "app": ["Firefox", "Thunderbird", "LibreOffice", "Teams"],
    "appdir": ["firefox", "thunderbird", "libreoffice", "teams"],
    "doc": ["PDF", "ODT", "DOCX", "XLSX"],
    "version": ["115.2", "24.1", "7.6", "2.1"],
    "minutes": ["5", "10", "15", "30", "60"],
    "mtu": ["1280", "1380", "1400", "1420"],
    "probe": ["1252", "1352", "1372"],
    "host": ["pc-042", "nb-117", "ws-3", "kasse-2"],
    "server": ["fs01", "app02", "db01", "mail01"],
    "service": ["nginx", "tomcat", "postgresql", "samba"],
    "drive": ["S:", "P:", "T:"],
    "login_error": ["Authentication failure", "Kennwort falsch", "Account locked"],
    "user": ["mmeier", "jschmidt", "akaya"],
    "deb": ["11", "12"],
    "ubu": ["22.04", "24.04"],
    "win": ["10", "11"],
}
FILLER = [
    "The user tried a restart first.",
    "It happens on several machines.",
    "Der Benutzer hat den Rechner bereits neu gestartet.",
    "Es betrifft mehrere Arbeitsplätze im Büro.",
    "The problem started after the weekend.",
    "Ein Kollege hat dasselbe Problem seit gestern.",
    "Ticket came in by phone.",
    "Die Meldung kam per Telefon.",
]
QUERIES = [
    "printer not printing jobs stuck",
    "Drucker druckt nicht",
    "Druckauftrag hängt in der Warteschlange",
    "filter failed cups",
    "vpn keeps dropping home office",
    "VPN trennt sich ständig",
    "cannot log in authentication failure",
    "Anmeldung geht nicht Kennwort",
    "disk full var logs",
    "Festplatte voll Protokolle",
    "outlook password prompt again and again",
    "Netzlaufwerk verbindet nicht",
    "firefox crashes after update",
    "mtu packets lost video call freezes",
    'printer AND NOT "queue',
    "lpstat",
]


@dataclass(frozen=True)
class Figures:
    backend: str
    articles: int
    queries: int
    search_p50_ms: float
    search_p99_ms: float
    full_p50_ms: float
    full_p99_ms: float
    load_seconds: float
    # The same queries without the glossary's expansion, timed alternately with the above
    # so that both see the same load on a shared machine.
    plain_p50_ms: float = 0.0
    plain_p99_ms: float = 0.0


def _fill(template: str, rng: random.Random, chosen: dict[str, str]) -> str:
    for key, values in SLOTS.items():
        token = "{" + key + "}"
        if token in template:
            chosen.setdefault(key, rng.choice(values))
            template = template.replace(token, chosen[key])
    return template


def make_article(rng: random.Random) -> ArticleContent:
    title, problem, cause, solution, commands, tags, oses = rng.choice(
        TEMPLATES_EN if rng.random() < 0.5 else TEMPLATES_DE
    )
    chosen: dict[str, str] = {}
    extra = " ".join(rng.sample(FILLER, 2))
    return check_content(
        ArticleContent(
            title=_fill(title, rng, chosen),
            problem=_fill(problem, rng, chosen) + " " + extra,
            environment="",
            cause=_fill(cause, rng, chosen),
            solution=_fill(solution, rng, chosen),
            commands=tuple(CommandEntry(_fill(c, rng, chosen), 0) for c in commands),
            tags=tuple(tags),
            os=tuple(_fill(o, rng, chosen) for o in oses),
        )
    )


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


async def _load(url: str, schema: str | None, count: int, seed: int) -> float:
    engine = create_engine(url, schema=schema)
    factory = session_factory(engine)
    rng = random.Random(seed)
    now = dt.datetime.now(dt.UTC)
    started = time.perf_counter()
    try:
        for batch_start in range(0, count, 1000):
            articles: list[dict[str, object]] = []
            docs: list[dict[str, object]] = []
            for i in range(batch_start, min(count, batch_start + 1000)):
                content = make_article(rng)
                solved = rng.randint(0, 20)
                articles.append(
                    {
                        "id": i + 1,
                        "status": "published",
                        "title": content.title,
                        "content": content.as_dict(),
                        "version": 2,
                        "author": "bench",
                        "reviewer": "bench",
                        "solved_count": solved,
                        "created_at": now,
                        "updated_at": now,
                        "published_at": now,
                    }
                )
                fields = doc_fields("published", content, solved)
                docs.append({"kind": "article", "ref_id": i + 1, **doc_values(fields, now)})
            async with factory() as db, db.begin():
                await db.execute(insert(KbArticle), articles)
                await db.execute(insert(KbSearchDoc), docs)
        async with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                await conn.execute(text("INSERT INTO kb_fts(kb_fts) VALUES ('optimize')"))
            await conn.execute(text("ANALYZE"))
            await conn.commit()
    finally:
        await engine.dispose()
    return time.perf_counter() - started


async def _measure(
    url: str, schema: str | None, backend: str, count: int, queries: int, seed: int
) -> Figures:
    load_seconds = await _load(url, schema, count, seed)
    engine = create_engine(url, schema=schema)
    factory = session_factory(engine)
    rng = random.Random(seed + 1)
    search_ms: list[float] = []
    full_ms: list[float] = []
    plain_ms: list[float] = []
    try:
        async with factory() as db:
            for n in range(queries + 20):
                q = rng.choice(QUERIES)
                flt = SearchFilter(limit=20)
                if n % 5 == 0:
                    flt = SearchFilter(limit=20, os=rng.choice(["debian", "windows 11", "ubuntu"]))
                elif n % 7 == 0:
                    flt = SearchFilter(limit=20, tag=rng.choice(["cups", "vpn", "smb"]))
                t0 = time.perf_counter()
                terms = query_terms(q)
                hits = await search(db, terms, flt)
                t1 = time.perf_counter()
                await article_results(db, terms, hits)
                t2 = time.perf_counter()
                await search(db, query_terms(q, expand=False), flt)
                t3 = time.perf_counter()
                if n >= 20:  # the first few warm caches and prepared statements
                    search_ms.append((t1 - t0) * 1000)
                    full_ms.append((t2 - t0) * 1000)
                    plain_ms.append((t3 - t2) * 1000)
    finally:
        await engine.dispose()
    return Figures(
        backend=backend,
        articles=count,
        queries=queries,
        search_p50_ms=round(statistics.median(search_ms), 2),
        search_p99_ms=round(percentile(search_ms, 99), 2),
        full_p50_ms=round(statistics.median(full_ms), 2),
        full_p99_ms=round(percentile(full_ms, 99), 2),
        load_seconds=round(load_seconds, 1),
        plain_p50_ms=round(statistics.median(plain_ms), 2),
        plain_p99_ms=round(percentile(plain_ms, 99), 2),
    )


def run_sqlite(count: int, queries: int, seed: int) -> Figures:
    with tempfile.TemporaryDirectory(prefix="kb-bench-") as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'kb.db'}"
        migrate(url)
        return asyncio.run(_measure(url, None, "sqlite", count, queries, seed))


async def _pg_schema(dsn: str, schema: str, create: bool) -> None:
    import asyncpg  # type: ignore[import-untyped]  # no stubs published

    conn = await asyncpg.connect(dsn)
    try:
        if create:
            await conn.execute(f'CREATE SCHEMA "{schema}"')
        else:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


def run_postgresql(dsn: str, count: int, queries: int, seed: int) -> Figures:
    plain = dsn.replace("postgresql+asyncpg://", "postgresql://", 1)
    url = "postgresql+asyncpg://" + plain.removeprefix("postgresql://")
    schema = f"kb_bench_{secrets.token_hex(4)}"
    asyncio.run(_pg_schema(plain, schema, create=True))
    try:
        migrate(url, schema)
        return asyncio.run(_measure(url, schema, "postgresql", count, queries, seed))
    finally:
        asyncio.run(_pg_schema(plain, schema, create=False))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.kb_search", description=__doc__)
    parser.add_argument("--articles", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1042)
    parser.add_argument("--skip-pg", action="store_true", help="measure SQLite only")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    results = [run_sqlite(args.articles, args.queries, args.seed)]
    if not args.skip_pg:
        dsn = os.environ.get("SECONDLINE_TEST_PG", DEFAULT_PG)
        try:
            results.append(run_postgresql(dsn, args.articles, args.queries, args.seed))
        except OSError as exc:
            print(f"PostgreSQL at {dsn} is not reachable ({exc}); skipped", file=sys.stderr)
    print(
        f"{'backend':<11}{'articles':>9}{'queries':>8}  {'search p50':>10}{'p99':>8}"
        f"  {'+snippets p50':>13}{'p99':>8}  {'no glossary p50':>15}{'p99':>8}  {'load s':>7}"
    )
    for f in results:
        print(
            f"{f.backend:<11}{f.articles:>9}{f.queries:>8}  {f.search_p50_ms:>8.2f}ms"
            f"{f.search_p99_ms:>6.2f}ms  {f.full_p50_ms:>11.2f}ms{f.full_p99_ms:>6.2f}ms"
            f"  {f.plain_p50_ms:>13.2f}ms{f.plain_p99_ms:>6.2f}ms  {f.load_seconds:>7.1f}"
        )
    if args.json:
        args.json.write_text(json.dumps([f.__dict__ for f in results], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
