"""`make demo`: a broker, a customer machine and a helpdesk ticket on this computer, ready to
try the web console. Run as ``python -m broker.demo --data-dir ./demo-data``.

On a fresh machine it initialises the data dir, starts ``secondline serve``, enrolls a local
``secondline-agent`` (consent ``attended``: every session is approved on the machine), adds a
customer, a level-1 and a level-2 staff member (each with a password and a TOTP), and a
ticket that level 1 escalated to level 2; then prints the console's address and every
account's sign-in (password and a TOTP code no one has used) and runs until Ctrl-C.
Everything goes through the CLIs and HTTP, as an admin and the staff would do it; nothing
is written into the database directly.

A second run reuses the data dir: what exists already is kept (the sign-in is in
``DIR/demo-login.json``, readable by its owner only)."""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Final
from urllib.parse import urlencode, urlsplit

from broker.auth import totp
from broker.console.feature import WEB_DIST

CUSTOMER: Final = "demo"
AGENT_NAME: Final = "demo-pc"
LEVEL1: Final = "lena"
LEVEL2: Final = "erika"
LOGIN_FILE: Final = "demo-login.json"
READY: Final = re.compile(r"secondline: serving https://\S+ \(ssh (\d+)\), public URL (\S+)")
_CSRF: Final = re.compile(r'name="_csrf" value="([^"]+)"')
_SECRET: Final = re.compile(r'id="totp-secret">([A-Z2-7 ]+)<')


class DemoError(Exception):
    """The demo cannot go on; the message says what to do."""


def _cli(data_dir: Path, *args: str, stdin: str | None = None, token: str | None = None) -> str:
    argv = [sys.executable, "-m", "broker.cli.main", "--data-dir", str(data_dir)]
    if token is not None:
        argv += ["--token", token]
    proc = subprocess.run(
        [*argv, *args], input=stdin, capture_output=True, text=True, check=False, timeout=120
    )
    if proc.returncode != 0:
        raise DemoError(f"`secondline {' '.join(args[:3])}` failed: {proc.stderr.strip()}")
    return proc.stdout


def _agent_cli(state_dir: Path, *args: str) -> str:
    argv = [sys.executable, "-m", "agent", *args[:1], "--state-dir", str(state_dir), *args[1:]]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
    if proc.returncode != 0:
        raise DemoError(f"`secondline-agent {args[0]}` failed: {proc.stderr.strip()}")
    return proc.stdout


@dataclass
class Process:
    """A child process whose output lines are read by a thread, so its pipe never fills."""

    popen: subprocess.Popen[str]
    lines: list[str]
    changed: threading.Condition

    @classmethod
    def start(cls, argv: Sequence[str], *, on_line: Callable[[str], None] | None = None) -> Process:
        popen = subprocess.Popen(
            list(argv),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            # Own process group: Ctrl-C reaches the demo, which then stops its children in order.
            start_new_session=True,
        )
        proc = cls(popen, [], threading.Condition())
        threading.Thread(target=proc._read, args=(on_line,), daemon=True).start()
        return proc

    def _read(self, on_line: Callable[[str], None] | None) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            with self.changed:
                self.lines.append(line.rstrip("\n"))
                self.changed.notify_all()
            if on_line is not None:
                on_line(line.rstrip("\n"))
        with self.changed:
            self.changed.notify_all()

    def wait_for(self, pattern: re.Pattern[str], timeout: float = 60.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        seen = 0
        with self.changed:
            while True:
                for line in self.lines[seen:]:
                    match = pattern.search(line)
                    if match:
                        return match
                seen = len(self.lines)
                if self.popen.poll() is not None:
                    tail = "\n".join(self.lines[-15:])
                    raise DemoError(f"a child process stopped:\n{tail}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise DemoError(f"timed out waiting for {pattern.pattern!r}")
                self.changed.wait(left)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(30)
            except subprocess.TimeoutExpired:
                self.popen.kill()


_CONSENT: Final = re.compile(r"session (s-[A-Za-z0-9]{22}): (\S+) asks for consent")


def consent_prompter(approve: str) -> Callable[[str], None]:
    """Tell the person at the demo when the agent waits for their approval, and how."""

    def on_line(line: str) -> None:
        match = _CONSENT.search(line)
        if match:
            print(
                f"\n>>> {match.group(2)} asks to open a shell on {AGENT_NAME} (attended "
                f"consent).\n>>> Approve it as the end user with:\n"
                f"    {approve} {match.group(1)}\n",
                flush=True,
            )

    return on_line


class ConsoleBrowser:
    """Just enough of a browser to set up a TOTP the way a person does in the console."""

    def __init__(self, public_url: str, ca_file: Path) -> None:
        parts = urlsplit(public_url)
        self.origin = public_url.rstrip("/")
        self.host = parts.hostname or "localhost"
        self.port = parts.port or 443
        self.context = ssl.create_default_context(cafile=str(ca_file))
        self.cookies: dict[str, str] = {}

    def request(
        self, method: str, path: str, form: dict[str, str] | None = None
    ) -> tuple[int, str, str]:
        conn = http.client.HTTPSConnection(self.host, self.port, context=self.context, timeout=30)
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
        body = None
        if form is not None:
            body = urlencode(form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            headers["Origin"] = self.origin
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            text = response.read().decode("utf-8", "replace")
            for header in response.headers.get_all("Set-Cookie") or []:
                jar: SimpleCookie = SimpleCookie()
                jar.load(header)
                for name, morsel in jar.items():
                    if morsel["max-age"] == "0" or not morsel.value:
                        self.cookies.pop(name, None)
                    else:
                        self.cookies[name] = morsel.value
            return response.status, response.headers.get("Location", ""), text
        finally:
            conn.close()

    def enrol_totp(self, user: str, password: str) -> str:
        """Sign in with the password, set up a TOTP in the console, return its secret."""
        status, _, page = self.request("GET", "/console/login")
        token = _CSRF.search(page)
        if status != 200 or token is None:
            raise DemoError(f"the console's sign-in page answered {status}")
        fields = {"_csrf": token.group(1), "user": user, "password": password, "code": ""}
        status, location, _ = self.request("POST", "/console/login", fields)
        if status != 303 or not location.startswith("/console/totp-setup"):
            raise DemoError(f"signing in as {user} did not lead to the TOTP set-up ({status})")
        _, _, page = self.request("GET", location)
        secret, token = _SECRET.search(page), _CSRF.search(page)
        if secret is None or token is None:
            raise DemoError("the TOTP set-up page showed no secret")
        plain = secret.group(1).replace(" ", "")
        code = totp.code_at(plain, time.time())
        fields = {"_csrf": token.group(1), "code": code, "next": "/console/"}
        status, _, _ = self.request("POST", "/console/totp-setup", fields)
        if status != 303:
            raise DemoError(f"confirming the TOTP failed ({status})")
        return plain


def _write_private(path: Path, data: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(data)


def _exists(data_dir: Path, *show: str) -> bool:
    try:
        _cli(data_dir, *show)
    except DemoError:
        return False
    return True


ACCOUNTS: Final = (
    (LEVEL2, "level2", "Erika Mustermann"),
    (LEVEL1, "level1", "Lena Berg"),
)


def _add_staff(data_dir: Path, public_url: str, name: str, role: str, display: str) -> Account:
    """A staff account with a password and a TOTP set up in the console, as a person would."""
    password = secrets.token_urlsafe(12)
    _cli(
        data_dir,
        "user",
        "add",
        name,
        "--role",
        role,
        "--display-name",
        display,
        "--customer",
        CUSTOMER,
        "--password-stdin",
        stdin=password + "\n",
    )
    secret = ConsoleBrowser(public_url, data_dir / "keys" / "tls.crt").enrol_totp(name, password)
    # The enrolment spent the code of this step: no code of it or before is handed out.
    return Account(name, role, password, secret, totp.step_at(time.time()))


def prepare(data_dir: Path, public_url: str, agent_dir: Path) -> DemoLogin:
    """Customer, agent, staff (each with a password and TOTP) and ticket; returns the
    sign-ins."""
    if not _exists(data_dir, "customer", "show", CUSTOMER):
        _cli(data_dir, "customer", "add", CUSTOMER, "--display-name", "Demo GmbH")
    if not (agent_dir / "state.json").exists():
        token = _cli(data_dir, "token", "create", "--customer", CUSTOMER, "--consent", "attended")
        _agent_cli(agent_dir, "enroll", public_url, token.strip(), "--name", AGENT_NAME)
    login_path = data_dir / LOGIN_FILE
    if login_path.exists():
        return DemoLogin.load(login_path)
    accounts = [_add_staff(data_dir, public_url, *account) for account in ACCOUNTS]
    level1 = _cli(data_dir, "user", "token", LEVEL1, "--ttl", "1h", "--json")
    lena = str(json.loads(level1)["token"])
    ticket = _cli(
        data_dir,
        "ticket",
        "create",
        "--title",
        "Drucker im Büro 2 druckt nicht",
        "--customer",
        CUSTOMER,
        "--requester",
        "Max Muster",
        "--description",
        "Seit dem Update gestern bleiben alle Druckaufträge in der Warteschlange hängen.\n"
        "Neustart des Druckers hat nicht geholfen.",
        "--agent",
        AGENT_NAME,
        token=lena,
    ).strip()
    _cli(
        data_dir,
        "ticket",
        "escalate",
        ticket,
        "--to",
        "2",
        "--reason",
        "CUPS-Warteschlange hängt; braucht eine Shell auf dem Rechner",
        token=lena,
    )
    login = DemoLogin(ticket, {a.user: a for a in accounts})
    login.save(login_path)
    return login


@dataclass(frozen=True)
class Account:
    """A demo staff member's sign-in; ``enrol_step``: the TOTP step the set-up spent."""

    user: str
    role: str
    password: str
    totp_secret: str
    enrol_step: int

    def code(self, now: float) -> str:
        """The code of this step, or of the next when this one is the step the set-up
        spent (each code works once; the broker accepts the next step's code already)."""
        step = max(totp.step_at(now), self.enrol_step + 1)
        return totp.code_at(self.totp_secret, step * totp.STEP_SECONDS)


@dataclass(frozen=True)
class DemoLogin:
    ticket: str
    accounts: dict[str, Account]

    @classmethod
    def load(cls, path: Path) -> DemoLogin:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if "accounts" not in raw:  # written by an older demo: the level-2 sign-in only
            step = int(raw.get("enrol_step", "0"))
            old = Account(LEVEL2, "level2", raw["password"], raw["totp_secret"], step)
            return cls(str(raw["ticket"]), {LEVEL2: old})
        accounts = {name: Account(**fields) for name, fields in raw["accounts"].items()}
        return cls(str(raw["ticket"]), accounts)

    def save(self, path: Path) -> None:
        data = {"ticket": self.ticket, "accounts": {n: vars(a) for n, a in self.accounts.items()}}
        _write_private(path, json.dumps(data, indent=2) + "\n")


def agent_command() -> str:
    """How to run `secondline-agent` here: its name when it is on PATH, else its path
    (the demo usually runs from the project's virtualenv, which is not on PATH)."""
    script = Path(sys.executable).parent / "secondline-agent"
    if shutil.which("secondline-agent") == str(script) or not script.exists():
        return "secondline-agent"
    return str(script)


def banner(public_url: str, login: DemoLogin, agent_dir: Path, data_dir: Path) -> str:
    now = time.time()
    host = urlsplit(public_url).hostname or ""
    lines = [
        "",
        "Secondline demo is running. Open the web console:",
        f"  {public_url}/console/   (self-signed certificate: accept it in the browser)",
        "",
    ]
    for account in login.accounts.values():
        lines += [
            f"  user:      {account.user}  ({account.role.replace('level', 'level ')})",
            f"  password:  {account.password}",
            f"  TOTP code: {account.code(now)}  (each code works once)",
            f"  TOTP key:  {totp.provisioning_uri(account.totp_secret, account.user, host)}",
            "",
        ]
    if LEVEL1 not in login.accounts:
        lines += [f"  ({LEVEL1} has no password in demo data made by an older demo.)", ""]
    lines += [
        "  A fresh code: add the TOTP key to an authenticator app, or run",
        f"    {sys.executable} -m broker.demo --data-dir {data_dir} --code [--user NAME]",
        f"  Admin: the CLI, e.g. `secondline --data-dir {data_dir} user list`",
        "",
        f"  ticket {login.ticket} is escalated to level 2, with machine {AGENT_NAME}.",
        "  The machine asks for consent: approve as its end user with",
        f"    {agent_command()} approve --state-dir {agent_dir} SESSION",
        "  (the demo prints the exact command when someone asks).",
        "",
        "Press Ctrl-C to stop.",
    ]
    return "\n".join(lines)


def run(data_dir: Path, https_port: int | None, ssh_port: int | None) -> int:
    data_dir = data_dir.resolve()
    if not (WEB_DIST / ".built").exists() and not (WEB_DIST / "console.js").exists():
        print("demo: the console's front end is not built; run `make web` first", file=sys.stderr)
        return 1
    if not (data_dir / "secondline.toml").exists():
        args = ["init", "--listen-host", "127.0.0.1"]
        if https_port:
            args += ["--public-url", f"https://localhost:{https_port}"]
            args += ["--https-port", str(https_port)]
        if ssh_port:
            args += ["--ssh-port", str(ssh_port)]
        _cli(data_dir, *args)
        print(f"initialised {data_dir}", flush=True)
    serve = [sys.executable, "-m", "broker.cli.main", "--data-dir", str(data_dir), "serve"]
    if https_port:
        serve += ["--https-port", str(https_port)]
    if ssh_port:
        serve += ["--ssh-port", str(ssh_port)]
    broker = Process.start(serve)
    agent: Process | None = None
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        ready = broker.wait_for(READY)
        public_url = ready.group(2).rstrip("/")
        agent_dir = data_dir / "agent-state"
        agent_dir.mkdir(mode=0o700, exist_ok=True)
        approve = f"{agent_command()} approve --state-dir {agent_dir}"
        login = prepare(data_dir, public_url, agent_dir)
        agent = Process.start(
            [sys.executable, "-m", "agent", "run", "--state-dir", str(agent_dir)],
            on_line=consent_prompter(approve),
        )
        agent.wait_for(re.compile(r"connected to the broker"))
        print(banner(public_url, login, agent_dir, data_dir), flush=True)
        stop.wait()
    except DemoError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    finally:
        print("\nstopping the demo…", flush=True)
        if agent is not None:
            agent.stop()
        broker.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m broker.demo", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--data-dir", default="./demo-data", type=Path)
    parser.add_argument("--https-port", type=int, default=None)
    parser.add_argument("--ssh-port", type=int, default=None)
    parser.add_argument("--code", action="store_true", help="print a fresh TOTP code and exit")
    parser.add_argument("--user", default=LEVEL2, help=f"whose code (default {LEVEL2})")
    args = parser.parse_args(argv)
    if args.code:
        login_path = Path(args.data_dir) / LOGIN_FILE
        if not login_path.exists():
            print("demo: no demo sign-in yet; run the demo first", file=sys.stderr)
            return 1
        login = DemoLogin.load(login_path)
        if args.user not in login.accounts:
            known = ", ".join(login.accounts)
            print(f"demo: no demo account {args.user!r}; there are: {known}", file=sys.stderr)
            return 1
        print(login.accounts[args.user].code(time.time()))
        return 0
    return run(args.data_dir, args.https_port, args.ssh_port)


if __name__ == "__main__":
    sys.exit(main())
