"""An OpenID provider for the tests, built on Authlib's server side (Flask integration), run
as its own process: ``python -m tests.support.oidc_provider CONFIG.json``.

It does what a real provider does for the authorization code flow: discovery, its signing
keys (RS256), a sign-in form, PKCE (S256, required), single-use codes, client
authentication by secret, and ID tokens with ``nonce``, ``amr`` and a ``groups`` claim.

For the refusal tests it can be told to misbehave on the next ID tokens (``POST
/test/mode`` with ``{"mode": …}``): ``wrong-issuer``, ``wrong-audience``, ``expired``,
``alg-none`` (the signature dropped), ``nonce`` (another nonce), ``replay`` (the previous
ID token again). The mutation is applied to the token Authlib issued, re-signed with the
provider's key (``alg-none`` aside), so only the named property is wrong.

:class:`OidcProvider` starts and stops the process from a test.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from agent.reaping import reap
from tests.support.broker import free_port
from tests.support.processes import stop_process

WAIT: Final = 30.0
READY: Final = b"oidc provider ready"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def build_app(config: dict[str, Any]) -> Any:  # pragma: no cover - runs in the provider process
    from authlib.integrations.flask_oauth2 import AuthorizationServer
    from authlib.oauth2.rfc6749 import ClientMixin, grants
    from authlib.oauth2.rfc7636 import CodeChallenge
    from authlib.oidc.core import UserInfo
    from authlib.oidc.core.grants import OpenIDCode
    from flask import Flask, jsonify, request
    from joserfc import jwt
    from joserfc.jwk import RSAKey

    issuer: str = config["issuer"]
    key = RSAKey.generate_key(2048, parameters={"kid": "k1", "use": "sig", "alg": "RS256"})
    users: dict[str, dict[str, Any]] = config["users"]
    codes: dict[str, Any] = {}
    state: dict[str, Any] = {"mode": "ok", "last_id_token": None, "tokens": 0}

    class Client(ClientMixin):  # type: ignore[misc]
        def get_client_id(self) -> str:
            return str(config["client_id"])

        def get_default_redirect_uri(self) -> str:
            return str(config["redirect_uri"])

        def get_allowed_scope(self, scope: str) -> str:
            return " ".join(s for s in scope.split() if s in ("openid", "profile", "email"))

        def check_redirect_uri(self, redirect_uri: str) -> bool:
            return bool(redirect_uri == config["redirect_uri"])

        def check_client_secret(self, client_secret: str) -> bool:
            return bool(client_secret == config["client_secret"])

        def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
            return method == "client_secret_basic" if endpoint == "token" else True

        def check_response_type(self, response_type: str) -> bool:
            return response_type == "code"

        def check_grant_type(self, grant_type: str) -> bool:
            return grant_type == "authorization_code"

    client = Client()

    @dataclass
    class Code:
        code: str
        client_id: str
        redirect_uri: str
        scope: str
        user: str
        nonce: str | None
        code_challenge: str | None
        code_challenge_method: str | None
        auth_time: int

        def get_redirect_uri(self) -> str:
            return self.redirect_uri

        def get_scope(self) -> str:
            return self.scope

        def get_nonce(self) -> str | None:
            return self.nonce

        def get_auth_time(self) -> int:
            return self.auth_time

        def get_acr(self) -> None:
            return None

        def get_amr(self) -> list[str]:
            return list(users[self.user]["amr"])

    class CodeGrant(grants.AuthorizationCodeGrant):  # type: ignore[misc]
        TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic"]

        def save_authorization_code(self, code: str, request: Any) -> None:
            payload = request.payload
            codes[code] = Code(
                code=code,
                client_id=client.get_client_id(),
                redirect_uri=payload.redirect_uri,
                scope=payload.scope,
                user=request.user,
                nonce=payload.data.get("nonce"),
                code_challenge=payload.data.get("code_challenge"),
                code_challenge_method=payload.data.get("code_challenge_method"),
                auth_time=int(time.time()),
            )

        def query_authorization_code(self, code: str, client: Any) -> Code | None:
            return codes.get(code)

        def delete_authorization_code(self, authorization_code: Code) -> None:
            codes.pop(authorization_code.code, None)  # single use

        def authenticate_user(self, authorization_code: Code) -> str:
            return authorization_code.user

    class Oidc(OpenIDCode):  # type: ignore[misc]
        def resolve_client_private_key(self, client: Any) -> Any:
            return key

        def get_client_algorithm(self, client: Any) -> str:
            return "RS256"

        def get_encode_header(self, client: Any) -> dict[str, str]:
            return {"alg": "RS256", "kid": "k1"}

        def get_client_claims(self, client: Any) -> dict[str, Any]:
            return {"iss": issuer, "aud": [client.get_client_id()]}

        def exists_nonce(self, nonce: str, request: Any) -> bool:
            return any(
                c.nonce == nonce
                for c in codes.values()
                if c.code != request.payload.data.get("code")
            )

        def generate_user_info(self, user: str, scope: str) -> Any:
            info = users[user]
            return UserInfo(
                sub=info["sub"], name=info["name"], preferred_username=user, groups=info["groups"]
            )

        def process_token(self, grant: Any, response: Any) -> Any:
            token = super().process_token(grant, response)
            token["id_token"] = misbehave(token["id_token"])
            return token

    def misbehave(id_token: str) -> str:
        mode = state["mode"]
        previous = state["last_id_token"]
        state["last_id_token"] = id_token
        state["tokens"] += 1
        if mode == "replay" and previous is not None:
            return str(previous)
        claims = json.loads(base64.urlsafe_b64decode(id_token.split(".")[1] + "=="))
        if mode == "wrong-issuer":
            claims["iss"] = issuer + "/other"
        elif mode == "wrong-audience":
            claims["aud"] = ["someone-else"]
        elif mode == "expired":
            claims["iat"], claims["exp"] = int(time.time()) - 7200, int(time.time()) - 3600
        elif mode == "nonce":
            claims["nonce"] = "not-the-nonce-of-this-sign-in"
        elif mode == "alg-none":
            header = _b64(json.dumps({"alg": "none"}).encode())
            return f"{header}.{_b64(json.dumps(claims).encode())}."
        else:
            return id_token
        return str(jwt.encode({"alg": "RS256", "kid": "k1"}, claims, key))

    app = Flask(__name__)
    server = AuthorizationServer(
        app,
        query_client=lambda cid: client if cid == client.get_client_id() else None,
        save_token=lambda token, request: None,
    )
    server.register_grant(CodeGrant, [CodeChallenge(required=True), Oidc(require_nonce=True)])

    @app.get("/.well-known/openid-configuration")
    def discovery() -> Any:
        return jsonify(
            issuer=issuer,
            authorization_endpoint=issuer + "/authorize",
            token_endpoint=issuer + "/token",
            jwks_uri=issuer + "/jwks",
            response_types_supported=["code"],
            subject_types_supported=["public"],
            id_token_signing_alg_values_supported=["RS256"],
            code_challenge_methods_supported=["S256"],
        )

    @app.get("/jwks")
    def jwks() -> Any:
        return jsonify(keys=[key.as_dict(private=False)])

    @app.route("/authorize", methods=["GET", "POST"])
    def authorize() -> Any:
        if request.method == "GET":
            server.get_consent_grant(end_user=None)  # refuses a bad request before the form
            return (
                "<!doctype html><title>Example provider</title><h1>Example identity provider</h1>"
                '<form method="post"><label>User <input name="username" id="username"></label>'
                '<label>Password <input name="password" id="password" type="password"></label>'
                '<button type="submit" id="provider-sign-in">Sign in</button></form>'
            )
        name = request.form.get("username", "")
        user = users.get(name)
        if user is None or request.form.get("password") != user["password"]:
            return "wrong user name or password", 401
        return server.create_authorization_response(grant_user=name)

    @app.post("/token")
    def issue_token() -> Any:
        return server.create_token_response()

    @app.post("/test/mode")
    def set_mode() -> Any:
        state["mode"] = (request.get_json() or {}).get("mode", "ok")
        return jsonify(mode=state["mode"])

    @app.get("/test/state")
    def get_state() -> Any:
        return jsonify(mode=state["mode"], tokens=state["tokens"], codes=len(codes))

    return app


def main() -> None:  # pragma: no cover - the provider process
    from werkzeug.serving import make_server

    config = json.loads(Path(sys.argv[1]).read_text())
    server = make_server("127.0.0.1", int(config["port"]), build_app(config), threaded=True)
    print(READY.decode(), flush=True)
    server.serve_forever()


@dataclass
class OidcProvider:
    """The provider process, for one test."""

    root: Path
    redirect_uri: str
    port: int = field(default_factory=free_port)
    client_id: str = "secondline-console"
    client_secret: str = "provider client secret"
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    proc: asyncio.subprocess.Process | None = None

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.root / "provider.json"
        config.write_text(
            json.dumps(
                {
                    "port": self.port,
                    "issuer": self.issuer,
                    "client_id": self.client_id,
                    "client_secret": self.client_secret,
                    "redirect_uri": self.redirect_uri,
                    "users": self.users,
                }
            )
        )
        # Authlib refuses plain http unless told: the provider listens on loopback only.
        env = {**os.environ, "AUTHLIB_INSECURE_TRANSPORT": "1"}
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.support.oidc_provider", str(config),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env,
        )  # fmt: skip
        assert self.proc.stdout is not None
        seen = b""
        try:
            async with asyncio.timeout(WAIT):
                while READY not in seen:
                    line = await self.proc.stdout.readline()
                    if not line:
                        said = seen.decode(errors="replace")
                        raise RuntimeError(f"the provider exited: {said}")
                    seen += line
        except BaseException:
            # A provider that never got ready is nobody's to stop: end it here.
            await reap(self.proc)
            self.proc = None
            raise
        self._drain = asyncio.get_running_loop().create_task(self._discard())

    async def _discard(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        while await self.proc.stdout.read(65536):
            pass

    async def stop(self) -> None:
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        await stop_process(proc)
        with contextlib.suppress(asyncio.CancelledError):
            await self._drain


if __name__ == "__main__":  # pragma: no cover
    main()
