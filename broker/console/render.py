"""Page rendering: one Jinja2 environment per language (autoescape on everywhere, gettext from
the compiled catalogues), the filters templates use for outside text and times, and the
security headers every console page carries."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import jinja2
from aiohttp import web
from babel.dates import format_datetime, format_timedelta
from markupsafe import Markup

from broker.console.i18n import Catalogues
from broker.console.language import LANGUAGES, Language
from broker.rules import sanitize_display_text

TEMPLATES_DIR: Final = Path(__file__).resolve().parent / "templates"


def content_security_policy(*, wasm: bool = False) -> str:
    """The page's CSP: scripts and styles only from our own /static/, no inline code at all.

    ``wasm``: the transcript player runs its terminal emulator as WebAssembly, which Chromium
    compiles only under 'wasm-unsafe-eval'; that allows compiling WebAssembly, not eval()."""
    script = "'self' 'wasm-unsafe-eval'" if wasm else "'self'"
    return "; ".join(
        [
            "default-src 'none'",
            f"script-src {script}",
            "style-src 'self'",
            "img-src 'self' data:",
            "font-src 'self'",
            "connect-src 'self'",
            "form-action 'self'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
            "object-src 'none'",
        ]
    )


PAGE_HEADERS: Final = {
    # Not no-referrer (the API's default): under it, browsers send "Origin: null" and drop
    # SameSite=Strict cookies on our own form posts. same-origin still tells no other site.
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), clipboard-read=(self)",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


def _as_datetime(value: object) -> dt.datetime | None:
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    if isinstance(value, str) and value:
        try:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
    return None


def display_text(value: object, cap: int = 500) -> str:
    """Outside text (agent facts, ticket fields) without controls or bidi overrides, capped.

    The template still escapes it: this only keeps what escaping cannot (direction tricks,
    escape sequences, line breaks where one line is meant)."""
    if value is None:
        return ""
    return sanitize_display_text(str(value), cap)


def multiline_text(value: object, cap: int = 20_000) -> list[str]:
    """Outside text of several lines (descriptions, notes), each line cleaned like
    :func:`display_text`; the template joins them with <br> after escaping each."""
    if value is None:
        return []
    text = str(value)[:cap]
    return [sanitize_display_text(line, 2_000) for line in text.replace("\r\n", "\n").split("\n")]


# What ``inline_text`` removes: controls (line breaks too), bidi overrides, invisible marks.
_HIDDEN: Final = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]"
)


def inline_text(value: object, cap: int = 2_000) -> str:
    """A piece of a line (a highlighted search snippet's segment): cleaned like
    :func:`display_text`, but its spaces kept, since the pieces are shown side by side."""
    if value is None:
        return ""
    return _HIDDEN.sub("", str(value)[: cap * 2])[:cap]


@dataclass(frozen=True)
class Renderer:
    environments: Mapping[Language, jinja2.Environment]
    catalogues: Catalogues

    @classmethod
    def create(cls, catalogues: Catalogues, templates: Path = TEMPLATES_DIR) -> Renderer:
        envs: dict[Language, jinja2.Environment] = {}
        for lang in LANGUAGES:
            env = jinja2.Environment(
                loader=jinja2.FileSystemLoader(str(templates)),
                autoescape=True,
                extensions=["jinja2.ext.i18n"],
                undefined=jinja2.ChainableUndefined,
                trim_blocks=True,
                lstrip_blocks=True,
            )
            env.install_gettext_translations(catalogues.get(lang), newstyle=True)  # type: ignore[attr-defined]
            env.filters["text"] = display_text
            env.filters["lines"] = multiline_text
            env.filters["inline"] = inline_text
            env.filters["when"] = _when_filter(lang)
            env.filters["duration"] = _duration_filter(lang)
            env.globals["lang"] = lang
            envs[lang] = env
        return cls(envs, catalogues)

    def gettext(self, lang: Language, message: str) -> str:
        return self.catalogues.get(lang).gettext(message)

    def render(self, lang: Language, template: str, context: Mapping[str, object]) -> str:
        return self.environments[lang].get_template(template).render(**context)


def _when_filter(lang: Language) -> Callable[[object], Markup]:
    def when(value: object) -> Markup:
        moment = _as_datetime(value)
        if moment is None:
            return Markup("")
        text = format_datetime(moment, "short", tzinfo=dt.UTC, locale=lang) + " UTC"
        # console.js rewrites the text into the browser's time zone; the UTC text stays as
        # the no-script fallback.
        return Markup('<time datetime="{}">{}</time>').format(
            moment.astimezone(dt.UTC).isoformat(), text
        )

    return when


def _duration_filter(lang: Language) -> Callable[[object], str]:
    def duration(seconds: object) -> str:
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            return ""
        return str(format_timedelta(dt.timedelta(seconds=float(seconds)), threshold=2, locale=lang))

    return duration


def page_response(html: str, *, status: int = 200, wasm: bool = False) -> web.Response:
    response = web.Response(text=html, status=status, content_type="text/html", charset="utf-8")
    response.headers["Content-Security-Policy"] = content_security_policy(wasm=wasm)
    for name, value in PAGE_HEADERS.items():
        response.headers[name] = value
    return response
