"""The end user's windows on the desktop, run by the agent as a program of its own:
``/usr/bin/python3 -I consent_window.py ask|indicator``, as the desktop's user, with the
text on standard input (JSON, written and made inert by agent.desktop).

* ``ask``: the consent request, with who asks, their level, the ticket, what they may do,
  Allow and Deny and a countdown; prints ``allow`` or ``deny`` (closing the window denies)
  and exits; at the deadline it prints nothing and exits (the agent denies on timeout).
* ``indicator``: a small window kept above the others while a session runs, naming who
  is connected, with "End session"; prints ``end`` when it is pressed. The agent ends the
  program when the session ends.

GTK 3 through PyGObject (Debian's python3-gi and gir1.2-gtk-3.0), not zenity: zenity's
question dialog can show neither a running countdown nor a window that stays up with its
own button, and kdialog is no better; GTK works on X11 and Wayland alike. Only the standard
library is imported at module level, so the agent's own interpreter can import this module
(and its tests can) without GTK; ``gi`` is loaded when the program runs.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

#: Exit status when GTK cannot be loaded or no display can be opened.
EXIT_NO_GTK = 3


def _read_request() -> dict[str, Any]:
    data = json.loads(sys.stdin.read(16 * 1024))
    if not isinstance(data, dict):
        raise SystemExit(2)
    return data


def _answer(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def main(argv: list[str]) -> int:
    mode = argv[1] if len(argv) == 2 else ""
    if mode not in ("ask", "indicator"):
        sys.stderr.write("usage: consent_window.py ask|indicator < request.json\n")
        return 2
    request = _read_request()
    try:
        import gi

        gi.require_version("Gtk", "3.0")
        from gi.repository import GLib, Gtk
    except (ImportError, ValueError) as exc:
        sys.stderr.write(f"GTK 3 is not available ({exc}); install python3-gi gir1.2-gtk-3.0\n")
        return EXIT_NO_GTK
    if not Gtk.init_check(None)[0]:
        sys.stderr.write("cannot open the display\n")
        return EXIT_NO_GTK
    if mode == "ask":
        return _ask(Gtk, GLib, request)
    return _indicator(Gtk, request)


def _label(gtk: Any, text: str, *, bold: bool = False) -> Any:
    label = gtk.Label()
    label.set_line_wrap(True)
    label.set_max_width_chars(60)
    label.set_xalign(0.0)
    if bold:
        label.set_markup("<b>" + _escape(text) + "</b>")
    else:
        label.set_text(text)
    return label


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _ask(gtk: Any, glib: Any, request: dict[str, Any]) -> int:
    deadline = float(request["deadline"])
    window = gtk.Window(title=str(request["title"]))
    window.set_keep_above(True)
    window.set_urgency_hint(True)
    window.set_position(gtk.WindowPosition.CENTER)
    window.set_resizable(False)
    box = gtk.Box(orientation=gtk.Orientation.VERTICAL, spacing=10)
    box.set_border_width(18)
    box.pack_start(_label(gtk, str(request["heading"]), bold=True), False, False, 0)
    for line in request["lines"]:
        box.pack_start(_label(gtk, str(line)), False, False, 0)
    countdown = _label(gtk, "")
    box.pack_start(countdown, False, False, 0)
    buttons = gtk.Box(orientation=gtk.Orientation.HORIZONTAL, spacing=8)
    buttons.set_halign(gtk.Align.END)
    deny = gtk.Button.new_with_mnemonic("_Deny")
    allow = gtk.Button.new_with_mnemonic("_Allow")
    buttons.pack_start(deny, False, False, 0)
    buttons.pack_start(allow, False, False, 0)
    box.pack_start(buttons, False, False, 0)
    window.add(box)
    answered: list[str] = []

    def finish(answer: str | None) -> None:
        if answer is not None and not answered:
            answered.append(answer)
            _answer(answer)
        gtk.main_quit()

    def tick() -> bool:
        left = int(deadline - time.time() + 0.999)
        if left <= 0:
            finish(None)  # the agent denies on timeout itself
            return False
        countdown.set_text(f"Denied automatically in {left} s unless you allow it.")
        return True

    allow.connect("clicked", lambda _b: finish("allow"))
    deny.connect("clicked", lambda _b: finish("deny"))

    def on_close(*_args: Any) -> bool:
        finish("deny")
        return True

    window.connect("delete-event", on_close)
    tick()
    glib.timeout_add(250, tick)
    window.show_all()
    deny.grab_focus()  # a stray Enter denies; allowing takes a deliberate choice
    gtk.main()
    return 0


def _indicator(gtk: Any, request: dict[str, Any]) -> int:
    window = gtk.Window(title=str(request["title"]))
    window.set_keep_above(True)
    window.stick()
    window.set_resizable(False)
    window.set_deletable(False)  # closing it must not look like ending the session
    box = gtk.Box(orientation=gtk.Orientation.HORIZONTAL, spacing=10)
    box.set_border_width(8)
    box.pack_start(_label(gtk, str(request["heading"])), False, False, 0)
    end = gtk.Button.new_with_mnemonic("_End session")
    box.pack_start(end, False, False, 0)
    window.add(box)

    def on_end(_button: Any) -> None:
        _answer("end")
        end.set_sensitive(False)
        end.set_label("Ending…")

    end.connect("clicked", on_end)
    window.show_all()
    # Bottom right of the screen, out of the way but always there.
    width, height = window.get_size()
    screen = window.get_screen()
    window.move(screen.get_width() - width - 16, screen.get_height() - height - 48)
    gtk.main()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
