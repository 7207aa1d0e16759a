"""A webhook receiver as a helpdesk would write one, run as its own process by the tests:
standard library only, nothing of Secondline imported, so it checks the documented wire
format rather than our code's idea of it.

It verifies each request's ``Secondline-Signature`` (HMAC-SHA256 of ``<t>.<body>`` under
the shared secret, at most 300 s old), dedupes on the event id (409 for one it took
already), and prints one line per request on standard output for the test to wait on:

    listening PORT
    refused STATUS REASON                a signature it does not accept
    failing EVENT_ID TRY                 answered 503 (--fail-first)
    dropped EVENT_ID                     taken, then the connection closed unanswered
    duplicate EVENT_ID TRY               had it already: 409
    event {"id":…,"type":…,"tries":N,"event":{…}}    taken (2xx)
    fetched NAME SHA256-OK|SHA256-BAD    a session.ended attachment fetched by its link

Options: ``--fail-first N`` answers 503 to the first N tries of every event (not pings);
``--drop-first`` takes the first event and closes the connection without an answer, as a
receiver that crashed after its commit would; ``--token-file`` and ``--cafile`` let it fetch
the attachments of ``session.ended`` with a Secondline API token.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import ssl
import sys
import threading
import time
import urllib.request
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

WINDOW = 300


class State:
    def __init__(self, args: argparse.Namespace) -> None:
        self.secret = Path(args.secret_file).read_text().strip().encode()
        self.fail_first = args.fail_first
        self.drop_first = args.drop_first
        self.token = Path(args.token_file).read_text().strip() if args.token_file else None
        self.cafile = args.cafile
        self.seen: set[str] = set()
        self.tries: Counter[str] = Counter()
        self.lock = threading.Lock()


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def verify(secret: bytes, header: str, body: bytes) -> str | None:
    """None when the signature is good, else why not."""
    parts = dict(item.split("=", 1) for item in header.split(",") if "=" in item)
    if not parts.get("t", "").isdigit() or "v1" not in parts:
        return "malformed"
    mac = hmac.new(secret, parts["t"].encode() + b"." + body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(mac, parts["v1"]):
        return "mismatch"
    if abs(time.time() - int(parts["t"])) > WINDOW:
        return "expired"
    return None


def fetch(state: State, attachment: dict[str, object]) -> None:
    req = urllib.request.Request(str(attachment["url"]))  # noqa: S310 - the broker's https URL
    req.add_header("Authorization", f"Bearer {state.token}")
    context = ssl.create_default_context(cafile=state.cafile)
    with urllib.request.urlopen(req, context=context, timeout=10) as resp:  # noqa: S310
        data = resp.read()
    good = hashlib.sha256(data).hexdigest() == attachment["sha256"]
    say(f"fetched {attachment['name']} {'SHA256-OK' if good else 'SHA256-BAD'}")


class Handler(BaseHTTPRequestHandler):
    state: State

    def log_message(self, format: str, *args: object) -> None:
        pass

    def answer(self, status: int, text: str = "") -> None:
        body = json.dumps({"status": status, "message": text}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        state = self.state
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        why = verify(state.secret, self.headers.get("Secondline-Signature", ""), body)
        if why is not None:
            say(f"refused 401 {why}")
            self.answer(401, f"signature {why}")
            return
        event = json.loads(body)
        event_id, kind = str(event["id"]), str(event["type"])
        if kind == "ping":
            self.answer(200, "pong")
            return
        with state.lock:
            state.tries[event_id] += 1
            tries = state.tries[event_id]
            if tries <= state.fail_first:
                say(f"failing {event_id} {tries}")
                self.answer(503, "try again later")
                return
            if event_id in state.seen:
                say(f"duplicate {event_id} {tries}")
                self.answer(409, "had it already")
                return
            state.seen.add(event_id)
            say(
                "event "
                + json.dumps({"id": event_id, "type": kind, "tries": tries, "event": event})
            )
            if state.drop_first:
                state.drop_first = False
                say(f"dropped {event_id}")
                self.close_connection = True
                return  # no answer: the sender cannot tell that it arrived
        self.answer(200, "ok")
        if kind == "session.ended" and state.token:
            for attachment in event["data"]["attachments"]:
                fetch(state, attachment)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--secret-file", required=True)
    parser.add_argument("--fail-first", type=int, default=0)
    parser.add_argument("--drop-first", action="store_true")
    parser.add_argument("--token-file")
    parser.add_argument("--cafile")
    args = parser.parse_args()
    Handler.state = State(args)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    say(f"listening {server.server_address[1]}")
    server.serve_forever()


if __name__ == "__main__":
    main()
