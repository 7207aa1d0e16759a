"""A real X server for the desktop-consent tests: Debian's Xvfb on a display it picks
itself (``-displayfd``: no guessed display number, no race with other tests), and the
tools that act as the end user: ``xdotool`` finds windows and types, Pillow takes the
screenshot."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from pathlib import Path

from PIL import ImageGrab

from tests.support.processes import stop_process

WAIT = 30.0


class Xvfb:
    """``Xvfb`` on a free display; ``display`` is ``:N`` once :meth:`start` returned."""

    def __init__(self) -> None:
        self.display = ""
        self._proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        read_fd, write_fd = os.pipe()
        self._proc = await asyncio.create_subprocess_exec(
            "Xvfb", "-displayfd", str(write_fd), "-screen", "0", "1024x640x24",
            "-nolisten", "tcp",
            pass_fds=(write_fd,), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        os.close(write_fd)
        try:
            # Xvfb writes the display number once it accepts clients.
            number = await asyncio.wait_for(asyncio.to_thread(_read_line, read_fd), WAIT)
            assert number.isdigit(), f"Xvfb did not report a display ({number!r})"
        except BaseException:
            # An Xvfb without a display is nobody's to stop: end it here.
            await self.stop()
            raise
        self.display = f":{number}"

    async def stop(self) -> None:
        if self._proc is not None:
            await stop_process(self._proc, signal.SIGTERM, WAIT)

    def xdotool(self, *args: str, timeout: float = WAIT) -> str:
        """Run xdotool on this display; its output (it must succeed)."""
        result = subprocess.run(
            ["xdotool", *args], env={**os.environ, "DISPLAY": self.display},
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result.stdout

    async def window(self, title: str) -> str:
        """The id of the window named ``title``, once it is shown (bounded by WAIT)."""
        out = await asyncio.to_thread(
            self.xdotool, "search", "--sync", "--onlyvisible", "--name", f"^{title}$"
        )
        return out.split()[0]

    def press(self, window: str, keys: str) -> None:
        """Give ``window`` the keyboard focus and press ``keys`` there, as a user would."""
        self.xdotool("windowfocus", "--sync", window, "key", "--clearmodifiers", keys)

    async def screenshot(self, path: Path) -> None:
        """The screen as a PNG, cropped to the windows with a margin, once they are drawn:
        a window is mapped before GTK paints it, so grab until the shown part holds both
        the light background and dark text (bounded by WAIT)."""
        async with asyncio.timeout(WAIT):
            while True:
                image = await asyncio.to_thread(ImageGrab.grab, xdisplay=self.display)
                gray = image.convert("L")
                box = gray.point(lambda v: 255 if v > 8 else 0).getbbox()
                if box is not None:
                    low, high = gray.crop(box).getextrema()
                    assert isinstance(low, int)  # one band: (min, max)
                    assert isinstance(high, int)
                    if high > 200 and low < 80:
                        break
        margin = 24
        box = (
            max(box[0] - margin, 0), max(box[1] - margin, 0),
            min(box[2] + margin, image.width), min(box[3] + margin, image.height),
        )  # fmt: skip
        path.parent.mkdir(parents=True, exist_ok=True)
        image.crop(box).save(path)


def _read_line(fd: int) -> str:
    with os.fdopen(fd, "rb") as pipe:
        return pipe.readline().decode().strip()
