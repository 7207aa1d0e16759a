"""OpenID Connect sign-in in headless Chromium: the console's sign-in button, the provider's
own page (a provider process on Authlib's server side), the authorization code with PKCE,
and back in the console, signed in. The sign-in page is written to
docs/screenshots/oidc-sign-in.png (docs/identity.md shows it)."""

from __future__ import annotations

from pathlib import Path
from typing import Final

import pytest
from playwright.async_api import Browser

from broker.config import load_config
from tests.support.broker import start_broker
from tests.support.console import build_front_end
from tests.support.oidc_provider import OidcProvider

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

ROOT: Final = Path(__file__).resolve().parents[2]
SHOTS: Final = ROOT / "docs" / "screenshots"
USERS: Final = {
    "olga": {"password": "olga pw", "sub": "sub-olga", "name": "Olga Okta", "amr": ["pwd", "mfa"],
             "groups": ["helpdesk-l2"]},
}  # fmt: skip


async def test_sign_in_with_the_provider_in_chromium(
    sqlite_data_dir: Path, tmp_path: Path, chromium: Browser
) -> None:
    """Olga presses "Sign in with Example SSO", signs in at the provider, and lands on the
    page she asked for, signed in (the provider asserted MFA, so no code is asked)."""
    build_front_end()
    public_url = load_config(sqlite_data_dir, env={}).public_url
    provider = OidcProvider(
        tmp_path / "provider", redirect_uri=f"{public_url}/console/oidc/callback", users=USERS
    )
    await provider.start()
    secret = tmp_path / "client.secret"
    secret.write_text(provider.client_secret)
    with (sqlite_data_dir / "secondline.toml").open("a", encoding="utf-8") as config:
        config.write(
            f'oidc_issuer = "{provider.issuer}"\n'
            f'oidc_client_id = "{provider.client_id}"\n'
            f'oidc_client_secret_file = "{secret}"\n'
            'oidc_name = "Example SSO"\n'
            'oidc_roles = "helpdesk-l2=level2"\n'
        )
    broker = await start_broker(sqlite_data_dir)
    try:
        context = await chromium.new_context(
            ignore_https_errors=True, viewport={"width": 1200, "height": 760}, locale="en-US"
        )
        page = await context.new_page()
        await page.goto(f"{broker.url}/console/login?next=/console/settings")
        button = page.locator("#oidc-sign-in")
        assert (await button.text_content() or "").strip() == "Sign in with Example SSO"
        SHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=SHOTS / "oidc-sign-in.png")
        await button.click()
        await page.wait_for_url(f"{provider.issuer}/authorize?**")
        assert "code_challenge_method=S256" in page.url
        await page.fill("#username", "olga")
        await page.fill("#password", "olga pw")
        await page.click("#provider-sign-in")
        await page.wait_for_url(f"{broker.url}/console/settings**")
        assert "Olga Okta" in await page.content()
        await context.close()
    finally:
        await broker.stop()
        await provider.stop()
