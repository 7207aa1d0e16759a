"""What every console page handler shares: the signed-in person, the language, rendering with
the layout's context, form CSRF checks, calls into the REST API, and error pages.

Handlers are written as ``async def handler(page: Page) -> web.StreamResponse`` and wrapped
with :func:`page_handler`, which signs the person in (or sends them to the sign-in form),
checks the CSRF token and origin of every POST, and turns errors into pages."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from urllib.parse import quote

from aiohttp import web
from multidict import MultiDict, MultiDictProxy

from broker.console.api_calls import Json
from broker.console.auth import check_state_change, console_user
from broker.console.errors import SignInRequired
from broker.console.language import Language, choose
from broker.console.messages import CODE_MESSAGES, DONE_MESSAGES
from broker.console.render import page_response
from broker.console.session_store import ConsoleUser
from broker.console.state import CONSOLE, ConsoleState
from broker.console.web_session import CSRF_FIELD
from broker.errors import BrokerError, InputError

log = logging.getLogger(__name__)

MAX_FIELD = 20_000


def request_language(request: web.Request, user: ConsoleUser | None) -> Language:
    return choose(user.language if user else None, request.headers.get("Accept-Language"))


def render_page(
    request: web.Request,
    lang: Language,
    template: str,
    context: Mapping[str, object],
    *,
    status: int = 200,
    wasm: bool = False,
) -> web.Response:
    html = request.app[CONSOLE].renderer.render(lang, template, context)
    return page_response(html, status=status, wasm=wasm)


@dataclass(frozen=True)
class Page:
    request: web.Request
    user: ConsoleUser
    lang: Language
    state: ConsoleState
    form: MultiDictProxy[str] | None

    def gettext(self, message: str) -> str:
        return self.state.renderer.gettext(self.lang, message)

    def field(self, name: str, *, cap: int = MAX_FIELD) -> str:
        """A form field's text, at most ``cap`` characters ('' when absent)."""
        value = self.form.get(name, "") if self.form is not None else ""
        return value[:cap] if isinstance(value, str) else ""

    def render(
        self, template: str, *, status: int = 200, wasm: bool = False, **context: object
    ) -> web.Response:
        done = self.request.query.get("done", "")
        base: dict[str, object] = {
            "user": self.user,
            "csrf": self.user.csrf_token,
            "path": self.request.path,
            "done": self.gettext(DONE_MESSAGES[done]) if done in DONE_MESSAGES else "",
        }
        return render_page(
            self.request, self.lang, template, {**base, **context}, status=status, wasm=wasm
        )

    async def api(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        query: Mapping[str, str] | None = None,
        body: Mapping[str, object] | None = None,
    ) -> Json:
        return await self.state.api.call(
            self.request, self.user, method, path, params=params, query=query, body=body
        )

    def explain(self, error: BrokerError) -> tuple[str, str]:
        """(headline, detail) for an error: the code's sentence in the page's language, and
        the API's own sentence as the detail when they differ."""
        known = CODE_MESSAGES.get(error.code)
        if known is None:
            return error.message, ""
        headline = self.gettext(known)
        return headline, error.message if self.lang != "en" or known != error.message else ""

    def error_page(self, error: BrokerError) -> web.Response:
        headline, detail = self.explain(error)
        status = error.http_status if 400 <= error.http_status < 600 else 500
        return self.render("error.html", status=status, headline=headline, detail=detail)


def redirect(location: str, *, done: str | None = None) -> web.HTTPSeeOther:
    if done:
        location += ("&" if "?" in location else "?") + f"done={quote(done)}"
    return web.HTTPSeeOther(location)


PageHandler = Callable[[Page], Awaitable[web.StreamResponse]]


def page_handler(handler: PageHandler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        user = await console_user(request)
        if user is None:
            if request.method == "GET":
                raise web.HTTPSeeOther("/console/login?next=" + quote(request.path_qs, safe=""))
            lang = request_language(request, None)
            error = SignInRequired("your session has ended; sign in again")
            return render_page(
                request, lang, "signed_out.html", {"csrf": ""}, status=error.http_status
            )
        lang = request_language(request, user)
        state = request.app[CONSOLE]
        form: MultiDictProxy[str] | None = None
        page = Page(request, user, lang, state, None)
        try:
            if request.method == "POST":
                # Uploads are not taken by console forms: only text fields are kept.
                form = _text_fields(await read_form(request))
                token = form.get(CSRF_FIELD)
                await check_state_change(request, user, token)
                page = Page(request, user, lang, state, form)
            return await handler(page)
        except BrokerError as error:
            return page.error_page(error)

    return handle


async def read_form(
    request: web.Request,
) -> MultiDictProxy[str | bytes | bytearray | web.FileField]:
    """The posted form; one over the broker's body limit is refused (413) with a sentence
    that says what to do, instead of aiohttp's bare text answer."""
    try:
        return await request.post()
    except web.HTTPRequestEntityTooLarge:
        raise InputError(
            f"the form is larger than {request.client_max_size} bytes, the limit of this "
            "broker; shorten the text (long output belongs in a ticket attachment) and send "
            "it again",
            code="body_too_large",
            status=413,
        ) from None


def _text_fields(
    raw: MultiDictProxy[str | bytes | bytearray | web.FileField],
) -> MultiDictProxy[str]:
    fields: MultiDict[str] = MultiDict()
    for key, value in raw.items():
        if isinstance(value, str):
            fields.add(key, value)
    return MultiDictProxy(fields)
