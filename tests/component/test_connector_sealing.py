"""Connector credentials at rest: encrypted in the database under a key derived from the
broker's own keys, readable by the broker, and sealed on start when an older broker stored
one in plain text."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from sqlalchemy import select, update

from broker.connectors.keys import CONNECTORS
from broker.connectors.sealing import CredentialSealer, CredentialUnreadable
from broker.db.models_connectors import Connector
from broker.services import SERVICES
from tests.support.api import Api
from tests.support.console import add_customer

pytestmark = pytest.mark.postgres

TOKEN = "1-14-0123456789abcdef0123456789abcdef"


async def stored_credential(api: Api) -> str:
    async with api.client.app[SERVICES].db() as db:
        value = await db.scalar(select(Connector.credential).where(Connector.name == "rt-acme"))
    assert isinstance(value, str)
    return value


async def add(api: Api) -> None:
    await add_customer(api, "acme")
    body = {
        "name": "rt-acme",
        "kind": "rt",
        "url": "http://127.0.0.1:9",
        "credential": TOKEN,
        "customer": "acme",
    }
    await api.call("POST", "/connectors", body, expect=201)


async def test_the_credential_is_stored_encrypted_and_read_back(api: Api) -> None:
    """The row holds a Fernet token, not the API token; the store hands the token back."""
    await add(api)
    stored = await stored_credential(api)
    assert stored.startswith("fernet:")
    assert TOKEN not in stored
    record = await api.client.app[CONNECTORS].get("rt-acme")
    assert record.credential == TOKEN


async def test_a_plain_text_credential_is_sealed_and_still_works(api: Api) -> None:
    """A credential an older broker stored in plain text is read as it is, and sealed by
    the step every start runs."""
    await add(api)
    app = api.client.app
    async with app[SERVICES].db() as db, db.begin():
        await db.execute(
            update(Connector).where(Connector.name == "rt-acme").values(credential=TOKEN)
        )
    store = app[CONNECTORS]
    assert (await store.get("rt-acme")).credential == TOKEN
    assert await store.seal_plain() == 1
    assert (await stored_credential(api)).startswith("fernet:")
    assert (await store.get("rt-acme")).credential == TOKEN
    assert await store.seal_plain() == 0


def test_another_brokers_keys_cannot_open_it() -> None:
    """Sealed under one key, a credential does not open under another, and says what to do."""
    mine = CredentialSealer(ed25519.Ed25519PrivateKey.generate())
    other = CredentialSealer(ed25519.Ed25519PrivateKey.generate())
    sealed = mine.seal(TOKEN)
    assert mine.open(sealed) == TOKEN
    with pytest.raises(CredentialUnreadable, match="add it again"):
        other.open(sealed)
