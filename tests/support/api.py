"""The broker app in-process on a real loopback socket, with helpers to call it as an admin
or as a staff member."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from aiohttp.test_utils import TestClient

from broker.config import load_config


@dataclass
class Api:
    client: TestClient  # type: ignore[type-arg]
    admin_token: str

    @staticmethod
    def headers(token: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"} if token else {}

    async def call(
        self,
        method: str,
        path: str,
        body: object | None = None,
        *,
        token: str | None = "admin",  # noqa: S107 - "admin" selects the admin token
        expect: int | None = None,
    ) -> tuple[int, object]:
        tok = self.admin_token if token == "admin" else token
        resp = await self.client.request(
            method, "/api/v1" + path, json=body, headers=self.headers(tok)
        )
        data = await resp.json() if resp.content_type == "application/json" else None
        if expect is not None:
            assert resp.status == expect, (resp.status, data)
        return resp.status, data

    async def staff_token(
        self,
        name: str,
        role: str,
        customers: list[str] | None = None,
        scopes: list[str] | None = None,
    ) -> str:
        await self.call(
            "POST", "/users", {"name": name, "role": role, "customers": customers or []}, expect=201
        )
        _, data = await self.call("POST", f"/users/{name}/tokens", {"scopes": scopes}, expect=201)
        assert isinstance(data, dict)
        return str(data["token"])


def admin_token(data_dir: Path) -> str:
    return (data_dir / "admin.token").read_text().strip()


def app_config(data_dir: Path) -> object:
    return load_config(data_dir, env={})


def refusals_of(events: Sequence[Mapping[str, object]], action: str) -> int:
    """How many refusals of ``action`` the audit events record: one per event of that
    action, plus those counted into anonymous summaries (``anonymous.refused``)."""
    total = 0
    for event in events:
        if event["action"] == action:
            total += 1
        elif event["action"] == "anonymous.refused":
            details = event["details"]
            assert isinstance(details, dict)
            kinds = details["kinds"]
            assert isinstance(kinds, dict)
            total += sum(int(n) for kind, n in kinds.items() if kind.startswith(f"{action}: "))
    return total
