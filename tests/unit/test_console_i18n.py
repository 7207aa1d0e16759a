"""Every visible string of the console is in both catalogues, translated, with the same
placeholders; the catalogues compile and the templates render in both languages."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir, extract_from_file
from babel.messages.pofile import read_po

from broker.console.i18n import LOCALE_DIR, Catalogues, po_path
from broker.console.language import LANGUAGES

ROOT = Path(__file__).resolve().parents[2]
CONSOLE = ROOT / "broker" / "console"
PLACEHOLDER = re.compile(r"%\((\w+)\)s")


def extracted() -> set[str]:
    method_map = [("**.py", "python"), ("templates/**.html", "jinja2")]
    options = {"templates/**.html": {"extensions": "jinja2.ext.i18n"}}
    found: set[str] = set()
    for _file, _line, message, _comments, _context in extract_from_dir(
        str(CONSOLE),
        method_map,
        options_map=options,
        keywords={"_": None, "gettext": None, "N_": None},
    ):
        if isinstance(message, str) and message:
            found.add(message)
    # The session note is written in the customer's language from the same catalogues.
    note = ROOT / "broker" / "sessions" / "note.py"
    for _line, message, _comments, _context in extract_from_file(
        "python", str(note), keywords={"_": None, "N_": None}
    ):
        if isinstance(message, str) and message:
            found.add(message)
    return found


@pytest.mark.parametrize("lang", LANGUAGES)
def test_catalogue_is_complete(lang: str) -> None:
    """Each extracted message has a non-empty translation keeping its placeholders."""
    with po_path(lang).open("rb") as fh:  # type: ignore[arg-type]
        catalog = read_po(fh, locale=lang)
    messages = extracted()
    assert len(messages) > 200
    for msgid in messages:
        entry = catalog.get(msgid)
        assert entry is not None, f"{lang}: {msgid!r} is missing"
        assert entry.string, f"{lang}: {msgid!r} is not translated"
        assert not entry.fuzzy, f"{lang}: {msgid!r} is fuzzy"
        assert sorted(PLACEHOLDER.findall(msgid)) == sorted(PLACEHOLDER.findall(str(entry.string)))


def test_catalogues_compile_and_translate() -> None:
    """The .po files compile in memory and German differs from English."""
    catalogues = Catalogues.load(LOCALE_DIR)
    assert catalogues.get("de").gettext("Queue") == "Warteschlange"
    assert catalogues.get("en").gettext("Queue") == "Queue"
