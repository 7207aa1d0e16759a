"""Component tests of `enroll` and `help` against a small HTTPS server on loopback."""

from __future__ import annotations

import http.server
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh
import pytest

from agent.cli import main
from agent.enrollment import EnrollmentAnswer, EnrollmentRequest, EnrollmentToken, ErrorBody
from agent.protocol import (
    AGENT_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Ed25519PublicKey,
    cert_fingerprint,
)
from agent.signing import HelpAnswer, HelpRequest, verify_request
from agent.state import EnrolledState, StatePaths
from tests.component.test_agent_harness import SelfSignedCert, make_cert

BROKER_KEY = asyncssh.generate_private_key("ssh-ed25519")


@dataclass
class Broker:
    """What the test broker saw and how it answers."""

    cert: SelfSignedCert
    answer_cert: SelfSignedCert | None = None
    error: tuple[int, ErrorBody] | None = None
    requests: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    enrolled_key: Ed25519PublicKey | None = None
    url: str = ""

    def answer(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        self.requests.append((path, headers, body))
        if self.error is not None:
            return self.error[0], self.error[1].serialize()
        if path == "/agent/v1/enroll":
            request = EnrollmentRequest.parse(body)
            self.enrolled_key = request.public_key
            answer = EnrollmentAnswer(
                agent_id="ag-0123456789abcdef",
                name=request.name,
                customer="acme",
                consent="attended",
                broker_ssh_key=Ed25519PublicKey.parse(BROKER_KEY.export_public_key().decode()),
                tunnel_url=self.url.replace("https://", "wss://") + "/agent/v1/tunnel",
                tls_cert_pem=(self.answer_cert or self.cert).cert_pem,
            )
            return 200, answer.serialize()
        if path == "/agent/v1/help" and self.enrolled_key is not None:
            verify_request(
                self.enrolled_key,
                timestamp=headers.get(TIMESTAMP_HEADER.lower()),
                signature=headers.get(SIGNATURE_HEADER.lower()),
                body=body,
                now=time.time(),
            )
            HelpRequest.parse(body)
            return 200, HelpAnswer("T-7").serialize()
        return 404, ErrorBody("not_found", "no such path").serialize()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    state = Broker(cert=make_cert())

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            headers = {key.lower(): value for key, value in self.headers.items()}
            status, answer = state.answer(self.path, headers, body)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = state.cert.server_context(tmp_path).wrap_socket(server.socket, server_side=True)
    state.url = f"https://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
    thread.join()


def _token(cert: SelfSignedCert) -> str:
    return EnrollmentToken.generate(cert_fingerprint(cert.der)).serialize()


def test_enroll_pins_the_certificate_and_writes_the_state(
    broker: Broker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`enroll` talks to the pinned broker and leaves a complete, private state dir."""
    state_dir = tmp_path / "state"
    code = main(
        [
            "enroll",
            broker.url,
            _token(broker.cert),
            "--name",
            "web01",
            "--state-dir",
            str(state_dir),
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert "enrolled as web01 (ag-0123456789abcdef)" in capsys.readouterr().out
    paths = StatePaths(state_dir)
    for path in (paths.agent_key, paths.broker_pem, paths.state_json):
        assert path.stat().st_mode & 0o777 == 0o600
    assert state_dir.stat().st_mode & 0o777 == 0o700
    state = EnrolledState.parse(paths.state_json.read_bytes())
    assert (state.name, state.consent, state.broker_url) == ("web01", "attended", broker.url)
    assert paths.broker_pem.read_text().strip() == broker.cert.cert_pem.strip()
    key = asyncssh.import_private_key(paths.agent_key.read_bytes())
    assert broker.enrolled_key == Ed25519PublicKey.parse(key.export_public_key().decode())
    [(request_path, headers, _)] = broker.requests
    assert request_path == "/agent/v1/enroll"
    assert headers["content-type"] == "application/json"


def test_a_mismatching_certificate_is_refused_before_sending(
    broker: Broker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A broker whose certificate is not the token's gets no request at all."""
    code = main(["enroll", broker.url, _token(make_cert()), "--state-dir", str(tmp_path / "s")])
    assert code == 1
    assert "certificate does not match the token" in capsys.readouterr().err
    assert broker.requests == []
    assert not (tmp_path / "s" / "state.json").exists()


def test_an_answer_naming_another_certificate_is_refused(
    broker: Broker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An answer whose tls_cert_pem is not the pinned certificate does not enroll."""
    broker.answer_cert = make_cert()
    code = main(["enroll", broker.url, _token(broker.cert), "--state-dir", str(tmp_path / "s")])
    assert code == 1
    assert "other than the token's" in capsys.readouterr().err
    assert not (tmp_path / "s" / "state.json").exists()


def test_the_brokers_refusal_is_shown(
    broker: Broker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An error body from the broker becomes the one-line message, exit status 1."""
    broker.error = (409, ErrorBody("token_used", "This token was already used.\x1b[31m"))
    code = main(["enroll", broker.url, _token(broker.cert), "--state-dir", str(tmp_path / "s")])
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("secondline-agent: the broker refused: This token was already used.")
    assert "\x1b" not in err


def test_a_malformed_token_never_reaches_the_network(
    broker: Broker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A token that does not parse is refused locally."""
    code = main(["enroll", broker.url, "sle1.short", "--state-dir", str(tmp_path / "s")])
    assert code == 1
    assert "not a Secondline enrollment token" in capsys.readouterr().err
    assert broker.requests == []


def test_enrolling_twice_is_refused(
    broker: Broker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A second enrollment into the same state dir is refused and names the dir to remove."""
    state_dir = str(tmp_path / "state")
    assert main(["enroll", broker.url, _token(broker.cert), "--state-dir", state_dir]) == 0
    code = main(["enroll", broker.url, _token(broker.cert), "--state-dir", state_dir])
    assert code == 1
    assert "already enrolled" in capsys.readouterr().err
    assert len(broker.requests) == 1


def test_help_sends_a_signed_request_and_prints_the_ticket(
    broker: Broker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`help` signs its POST with the agent key; the broker verifies it and the ticket prints."""
    state_dir = str(tmp_path / "state")
    assert main(["enroll", broker.url, _token(broker.cert), "--state-dir", state_dir]) == 0
    capsys.readouterr()
    assert main(["help", "the printer does not print", "--state-dir", state_dir]) == 0
    assert capsys.readouterr().out == "T-7\n"
    request_path, headers, body = broker.requests[-1]
    assert request_path == "/agent/v1/help"
    assert headers[AGENT_ID_HEADER.lower()] == "ag-0123456789abcdef"
    assert json.loads(body) == {"text": "the printer does not print"}


def test_help_text_is_checked_locally(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An empty help text is refused before anything else."""
    assert main(["help", "   ", "--state-dir", str(tmp_path)]) == 1
    assert "the help text is empty" in capsys.readouterr().err


def test_unreachable_broker_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A broker that does not answer gives a sentence about the URL and the network."""
    cert = make_cert()
    code = main(["enroll", "https://127.0.0.1:1", _token(cert), "--state-dir", str(tmp_path / "s")])
    assert code == 1
    assert "cannot reach the broker at https://127.0.0.1:1" in capsys.readouterr().err


def test_pinning_uses_tls(broker: Broker) -> None:
    """The test broker really speaks TLS (so the pinning tests mean something)."""
    context = ssl.create_default_context(cadata=broker.cert.cert_pem)
    context.check_hostname = False
    host, port = broker.url.removeprefix("https://").split(":")
    with context.wrap_socket(socket.create_connection((host, int(port)))) as sock:
        assert sock.getpeercert(binary_form=True) == broker.cert.der
