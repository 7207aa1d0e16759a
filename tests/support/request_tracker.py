"""A real Request Tracker 5 for the connector tests: Debian's packages (`.ci/run` installs
them), on a private copy of the SQLite database the packages set up, served by the real
`rt-server` on a free loopback port.

The test process binds the listening socket itself and hands it to `rt-server` (Starlet
takes a socket from ``SERVER_STARTER_PORT``): the port is known before RT starts, the first
request simply waits in the socket's backlog until RT accepts it (no polling, no sleeps),
and :meth:`RequestTracker.stop` / :meth:`start` take RT away and bring it back on the same
port, as an outage does. Before the first start a Perl script run against the same
database creates the level queues and an auth token for root, as an admin would in RT's
UI (Logged in as → Settings → Auth Tokens), the RT user ``bob`` (staff ``bob`` there),
who may own tickets of those queues, and the ticket custom field ``Customer`` on every
queue (what a connector of all customers reads). :meth:`RequestTracker.merge` merges two
tickets the same way, as REST 2 cannot; :meth:`RequestTracker.add_history` gives a ticket a
huge history cheaply, as rows of RT's own tables.

:class:`RtApi` is the test's own REST 2 client: it plays RT's users (creating tickets,
moving them between queues) and reads the ticket history the connector wrote.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

RT_SHARE: Final = Path("/usr/share/request-tracker5")
RT_SERVER: Final = RT_SHARE / "libexec" / "rt-server"
# The database Debian's rt5-db-sqlite set up (user root, password "password").
RT_DATABASE: Final = Path("/var/lib/dbconfig-common/sqlite3/request-tracker5/rtdb")
LEVEL_QUEUES: Final = ("Level 1", "Level 2", "Level 3")
WAIT: Final = 90.0  # failure bound for RT to start and answer (it takes about 5 s)

SETUP_SCRIPT: Final = r"""
use strict; use warnings;
use lib '/usr/share/request-tracker5/lib';
use RT;
RT::LoadConfig();
RT::Init();
my $root = RT::User->new(RT->SystemUser);
$root->Load('root') or die "no root user\n";
for my $name (@ARGV) {
    my $queue = RT::Queue->new(RT->SystemUser);
    $queue->Load($name);
    next if $queue->Id;
    my ($ok, $msg) = $queue->Create(Name => $name);
    die "queue $name: $msg\n" unless $ok;
}
# A staff member who is also an RT user, so tickets can be given to them from Secondline.
my $bob = RT::User->new(RT->SystemUser);
$bob->Load('bob');
unless ($bob->Id) {
    my ($ok, $msg) = $bob->Create(
        Name => 'bob', Privileged => 1, EmailAddress => 'bob@example.com');
    die "user bob: $msg\n" unless $ok;
}
my $privileged = RT::Group->new(RT->SystemUser);
$privileged->LoadSystemInternalGroup('Privileged');
for my $name (@ARGV) {
    my $queue = RT::Queue->new(RT->SystemUser);
    $queue->Load($name);
    $privileged->PrincipalObj->GrantRight(Right => 'OwnTicket', Object => $queue);
}
# The ticket custom field a connector of all customers reads ours from, on every queue.
my $cf = RT::CustomField->new(RT->SystemUser);
$cf->LoadByName(Name => 'Customer', LookupType => 'RT::Queue-RT::Ticket');
unless ($cf->Id) {
    my ($ok, $msg) = $cf->Create(
        Name => 'Customer', Type => 'Freeform', MaxValues => 1,
        LookupType => 'RT::Queue-RT::Ticket');
    die "custom field: $msg\n" unless $ok;
    ($ok, $msg) = $cf->AddToObject(RT::Queue->new(RT->SystemUser));
    die "custom field on every queue: $msg\n" unless $ok;
}
my $token = RT::AuthToken->new(RT::CurrentUser->new($root));
my ($id, $msg, $auth) = $token->Create(Owner => $root->Id, Description => 'secondline');
die "token: $msg\n" unless $id;
print "$auth\n";
"""


MERGE_SCRIPT: Final = r"""
use strict; use warnings;
use lib '/usr/share/request-tracker5/lib';
use RT;
RT::LoadConfig();
RT::Init();
my $root = RT::User->new(RT->SystemUser);
$root->Load('root') or die "no root user\n";
my $ticket = RT::Ticket->new(RT::CurrentUser->new($root));
$ticket->Load($ARGV[0]) or die "no ticket $ARGV[0]\n";
my ($ok, $msg) = $ticket->MergeInto($ARGV[1]);
die "merge: $msg\n" unless $ok;
print "$msg\n";
"""


def rt_installed() -> bool:
    return RT_SERVER.exists() and RT_DATABASE.exists()


@dataclass
class RequestTracker:
    """One private RT: its directory, port, token and server process."""

    root: Path
    port: int = 0
    token: str = ""
    process: subprocess.Popen[bytes] | None = None
    _listener: socket.socket | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def database(self) -> Path:
        return self.root / "rtdb"

    @property
    def config_dir(self) -> Path:
        return self.root / "RT_SiteConfig.d"

    def _env(self) -> dict[str, str]:
        # RT reads its site config from this directory instead of /etc's.
        return {**os.environ, "RT_SITE_CONFIG_DIR": str(self.config_dir)}

    def prepare(self) -> None:
        """Copy the database, write the config, create the queues and the token."""
        assert rt_installed(), "Request Tracker 5 is not installed: run .ci/run"
        self.root.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(RT_DATABASE, self.database)
        self._listener = self._listen(0)
        self.port = int(self._listener.getsockname()[1])
        self.config_dir.mkdir(exist_ok=True)
        (self.config_dir / "50-secondline-test.pm").write_text(
            "\n".join(
                [
                    "Set($rtname, 'secondline-test');",
                    "Set($Organization, 'secondline-test');",
                    "Set($Timezone, 'UTC');",
                    "Set($DatabaseType, 'SQLite');",
                    f"Set($DatabaseName, '{self.database}');",
                    "Set($WebPath, '');",
                    "Set($WebDomain, '127.0.0.1');",
                    f"Set($WebPort, {self.port});",
                    f"Set($WebBaseURL, 'http://127.0.0.1:{self.port}');",
                    "Set($LogToSTDERR, 'error');",
                    "Set($LogToSyslog, undef);",
                    "1;",
                ]
            )
            + "\n"
        )
        script = self.root / "setup.pl"
        script.write_text(SETUP_SCRIPT)
        done = subprocess.run(
            ["perl", str(script), *LEVEL_QUEUES],
            env=self._env(),
            capture_output=True,
            text=True,
            timeout=WAIT,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        self.token = done.stdout.strip().splitlines()[-1]

    def _listen(self, port: int) -> socket.socket:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(128)
        return listener

    def start(self) -> None:
        """Start `rt-server` on the port (again, after :meth:`stop`)."""
        if self._listener is None:
            self._listener = self._listen(self.port)
        fd = self._listener.fileno()
        with open(self.root / "rt-server.log", "ab") as log:
            self.process = subprocess.Popen(
                [str(RT_SERVER), "--max-workers", "2"],
                env={**self._env(), "SERVER_STARTER_PORT": f"127.0.0.1:{self.port}={fd}"},
                pass_fds=[fd],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        # The server holds the socket now; ours closes, so a stop really refuses connections.
        self._listener.close()
        self._listener = None

    def stop(self) -> None:
        """Stop `rt-server`: from now on connections to the port are refused."""
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=WAIT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=WAIT)
            self.process = None

    def api(self) -> RtApi:
        return RtApi(self.url, self.token)

    async def merge(self, source: str, target: str) -> None:
        """Merge ticket ``source`` into ``target`` as root does in RT's UI (Links → Merge
        into); REST 2 has no call for it, so RT's own Perl API does it."""
        script = self.root / "merge.pl"
        script.write_text(MERGE_SCRIPT)
        done = await asyncio.to_thread(
            subprocess.run,
            ["perl", str(script), source, target],
            env=self._env(),
            capture_output=True,
            text=True,
            timeout=WAIT,
            check=False,
        )
        assert done.returncode == 0, done.stderr

    def add_history(self, ticket: str, comments: int, attachment_bytes: int) -> None:
        """Give ``ticket`` ``comments`` comments, the last with a file of
        ``attachment_bytes``, written straight into RT's database as RT itself stores a
        comment (a ``Comment`` transaction whose ``Data`` is the subject, its attachment
        rows: a ``multipart/mixed`` parent, the text, the base64 file). Ten thousand
        comments through REST take many minutes; these rows take a second or two."""
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
        # A file RT keeps base64-encoded, as it does binary content on SQLite.
        encoded = base64.b64encode(b"\0" * attachment_bytes).decode("ascii")
        with contextlib.closing(sqlite3.connect(self.database, timeout=WAIT)) as db, db:
            (root,) = db.execute("SELECT id FROM Users WHERE Name = 'root'").fetchone()
            for i in range(comments):
                subject = f"customer mail {i}"
                tx = db.execute(
                    "INSERT INTO Transactions (ObjectType, ObjectId, Type, Data, Creator, "
                    "Created) VALUES ('RT::Ticket', ?, 'Comment', ?, ?, ?)",
                    (int(ticket), subject, root, now),
                ).lastrowid
                rows: list[tuple[str, str, str, str | None]] = [
                    ("text/plain", "none", f"comment {i}", None)
                ]
                if i == comments - 1:
                    rows = [
                        ("multipart/mixed", "none", "", None),
                        ("text/plain", "none", "the dump, attached", None),
                        ("application/octet-stream", "base64", encoded, "core.dump"),
                    ]
                parent = 0
                for n, (kind, encoding, content, filename) in enumerate(rows):
                    row = db.execute(
                        "INSERT INTO Attachments (TransactionId, Parent, Subject, Filename, "
                        "ContentType, ContentEncoding, Content, Headers, Creator, Created) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            tx,
                            parent,
                            subject if n == 0 else "",
                            filename,
                            kind,
                            encoding,
                            content,
                            f"Content-Type: {kind}\n",
                            root,
                            now,
                        ),
                    ).lastrowid
                    if n == 0 and len(rows) > 1:
                        parent = int(row or 0)


@dataclass
class RtApi:
    """The test's REST 2 client (blocking; call it through :meth:`call`)."""

    url: str
    token: str

    def request(self, method: str, path: str, body: object = None) -> object:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.url}/REST/2.0{path}", data=data, method=method)  # noqa: S310 - loopback
        req.add_header("Authorization", f"token {self.token}")
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=WAIT) as resp:  # noqa: S310 - loopback
            return json.loads(resp.read() or b"null")

    async def call(self, method: str, path: str, body: object = None) -> object:
        return await asyncio.to_thread(self.request, method, path, body)

    async def create_ticket(
        self, queue: str, subject: str, requester: str = "", fields: dict[str, str] | None = None
    ) -> str:
        body: dict[str, object] = {"Queue": queue, "Subject": subject, "Content": subject}
        if requester:
            body["Requestor"] = requester
        if fields:
            body["CustomFields"] = fields
        created = await self.call("POST", "/ticket", body)
        assert isinstance(created, dict), created
        return str(created["id"])

    async def move(self, ticket: str, queue: str) -> None:
        await self.call("PUT", f"/ticket/{ticket}", {"Queue": queue})

    async def set_fields(self, ticket: str, fields: dict[str, str]) -> None:
        await self.call("PUT", f"/ticket/{ticket}", {"CustomFields": fields})

    async def comments(self, ticket: str) -> list[dict[str, object]]:
        """The ticket's comment transactions: subject (``Data``) and attachments."""
        history = await self.call("GET", f"/ticket/{ticket}/history?per_page=100&fields=Type,Data")
        assert isinstance(history, dict)
        found: list[dict[str, object]] = []
        for tx in history["items"]:
            if tx.get("Type") != "Comment":
                continue
            parts = await self.call(
                "GET",
                f"/transaction/{tx['id']}/attachments?fields=Filename,ContentType,Content",
            )
            assert isinstance(parts, dict)
            files: dict[str, bytes] = {}
            text = b""
            for part in parts["items"]:
                # RT hands text parts out as they are (the note and both files are text).
                content = str(part.get("Content") or "").encode()
                if part.get("Filename"):
                    files[str(part["Filename"])] = content
                elif str(part.get("ContentType", "")).startswith("text/plain"):
                    text += content
            found.append({"subject": tx.get("Data"), "text": text.decode(), "files": files})
        return found
