"""A slow disk for tests: a FUSE file system, passed through to a backing directory, whose
writes to chosen files block until the test lets them go.

Run it as a process of its own (``python -m tests.support.slow_disk BACKING MOUNT``): it
mounts MOUNT, prints ``mounted`` and then reads commands from its standard input, one a
line:

- ``stall NAME``: from now on every write to a file whose name contains NAME waits;
- ``release NAME``: those writes go on (the waiting ones at once); reported as
  ``released NAME N``, N the writes that were waiting;
- ``quit`` (or end of input): unmount and exit.

Each write that starts waiting is reported on standard output as ``blocked NAME PATH`` (the
state a test waits for, never a time). A stall lets go by itself after
:data:`STALL_BOUND` seconds (``expired NAME``), a failure bound only: a broker that waited
for the write on its event loop would otherwise hang the test run. The writes of the other
files go through at once: libfuse serves requests on several threads, so one blocked write
holds one thread.

A real file system the test controls, not a stand-in for the broker's code: the kernel
sends every ``write(2)`` of the broker (FUSE without a writeback cache) here before it
returns, as a slow or stalled disk would hold it. Needs root, ``/dev/fuse``, libfuse 3
(Debian: ``fuse3``) and ``mfusepy``; :func:`slow_disk` skips the test without them.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

STALL_BOUND: Final = 60.0

_STAT_FIELDS = (
    "st_mode",
    "st_nlink",
    "st_uid",
    "st_gid",
    "st_size",
    "st_atime",
    "st_mtime",
    "st_ctime",
    "st_ino",
    "st_dev",
    "st_blocks",
    "st_blksize",
)


class Stalls:
    """Which names are stalled; writes wait here while theirs is."""

    def __init__(self, out: IO[str]) -> None:
        self._names: dict[str, float] = {}  # stalled name: when its stall expires
        self._waiting: dict[str, int] = {}  # writes waiting now, per name
        self._changed = threading.Condition()
        self._out = out

    def stall(self, name: str) -> None:
        with self._changed:
            self._names[name] = time.monotonic() + STALL_BOUND
            self._waiting.setdefault(name, 0)

    def release(self, name: str) -> None:
        with self._changed:
            self._names.pop(name, None)
            print(f"released {name} {self._waiting.get(name, 0)}", file=self._out, flush=True)
            self._changed.notify_all()

    def release_all(self) -> None:
        with self._changed:
            self._names.clear()
            self._changed.notify_all()

    def wait(self, path: str) -> None:
        with self._changed:
            name = next((n for n in self._names if n in path), None)
            if name is None:
                return
            print(f"blocked {name} {path}", file=self._out, flush=True)
            self._waiting[name] += 1
            try:
                while name in self._names:
                    left = self._names[name] - time.monotonic()
                    if left <= 0:
                        # A failure bound, not a timing: a broker that waits for this write
                        # on its event loop must not hang the test run for good.
                        del self._names[name]
                        print(f"expired {name}", file=self._out, flush=True)
                        break
                    self._changed.wait(left)
            finally:
                self._waiting[name] -= 1


def _operations(backing: Path, stalls: Stalls) -> Any:
    import mfusepy  # type: ignore[import-untyped]

    class Passthrough(mfusepy.Operations):  # type: ignore[misc]
        use_ns = True

        def _full(self, path: str) -> str:
            return str(backing) + path

        def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
            try:
                st = os.fstat(fh) if fh is not None else os.lstat(self._full(path))
            except OSError as exc:
                raise mfusepy.FuseOSError(exc.errno) from None
            attrs = {key: getattr(st, key) for key in _STAT_FIELDS}
            for key in ("st_atime", "st_mtime", "st_ctime"):
                attrs[key] = getattr(st, key + "_ns")
            return attrs

        def readdir(self, path: str, fh: int) -> list[str]:
            return [".", "..", *os.listdir(self._full(path))]

        def access(self, path: str, amode: int) -> int:
            if not os.access(self._full(path), amode):
                raise mfusepy.FuseOSError(errno.EACCES)
            return 0

        def mkdir(self, path: str, mode: int) -> int:
            os.mkdir(self._full(path), mode)
            return 0

        def rmdir(self, path: str) -> int:
            os.rmdir(self._full(path))
            return 0

        def chmod(self, path: str, mode: int) -> int:
            os.chmod(self._full(path), mode)
            return 0

        def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
            if times is None:
                os.utime(self._full(path))
            else:
                os.utime(self._full(path), ns=times)
            return 0

        def create(self, path: str, mode: int, fi: int | None = None) -> int:
            flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
            return os.open(self._full(path), flags, mode)

        def open(self, path: str, flags: int) -> int:
            return os.open(self._full(path), flags & ~(os.O_CREAT | os.O_EXCL))

        def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
            return os.pread(fh, size, offset)

        def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
            stalls.wait(path)
            return os.pwrite(fh, data, offset)

        def truncate(self, path: str, length: int, fh: int | None = None) -> int:
            if fh is not None:
                os.ftruncate(fh, length)
            else:
                os.truncate(self._full(path), length)
            return 0

        def fsync(self, path: str, datasync: int, fh: int) -> int:
            stalls.wait(path)
            os.fsync(fh)
            return 0

        def release(self, path: str, fh: int) -> int:
            os.close(fh)
            return 0

        def unlink(self, path: str) -> int:
            os.unlink(self._full(path))
            return 0

        def rename(self, old: str, new: str) -> int:
            os.rename(self._full(old), self._full(new))
            return 0

        def statfs(self, path: str) -> dict[str, int]:
            st = os.statvfs(self._full(path))
            names = ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree")
            return {name: getattr(st, name) for name in (*names, "f_files", "f_frsize")}

    return Passthrough()


def _commands(stalls: Stalls, mount: Path) -> None:
    for line in sys.stdin:
        word, _, name = line.strip().partition(" ")
        if word == "stall":
            stalls.stall(name)
        elif word == "release":
            stalls.release(name)
        elif word == "quit":
            break
    stalls.release_all()
    # Unmounting ends the FUSE loop in the main thread.
    subprocess.run(["fusermount3", "-u", "-z", str(mount)], check=False)


def main() -> None:
    import mfusepy

    backing, mount = Path(sys.argv[1]), Path(sys.argv[2])
    stalls = Stalls(sys.stdout)
    threading.Thread(target=_commands, args=(stalls, mount), daemon=True).start()

    def mounted() -> None:
        print("mounted", flush=True)

    ops = _operations(backing, stalls)
    ops.init = lambda path: mounted()
    mfusepy.FUSE(ops, str(mount), foreground=True, nothreads=False, default_permissions=True)


@dataclass
class SlowDisk:
    """A mounted slow disk (see the module docstring) and its process."""

    mount: Path
    process: subprocess.Popen[str]

    def stall(self, name: str) -> None:
        self._send(f"stall {name}")

    def release(self, name: str) -> None:
        self._send(f"release {name}")

    def _send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def release_held(self, name: str) -> int:
        """Release ``name``; return how many writes were still waiting (blocks: call it in
        a thread)."""
        self.release(name)
        while not (line := self.next_report()).startswith(f"released {name} "):
            if not line:
                raise RuntimeError("the slow disk exited")
        return int(line.rsplit(" ", 1)[1])

    def next_report(self) -> str:
        """The next line the file system printed (blocks: call it in a thread)."""
        assert self.process.stdout is not None
        return self.process.stdout.readline().strip()


def fuse_missing() -> str | None:
    """Why a slow disk cannot be mounted here, or None."""
    if os.geteuid() != 0:
        return "mounting a FUSE file system needs root"
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse"
    if shutil.which("fusermount3") is None:
        return "no fusermount3 (Debian: fuse3)"
    try:
        import mfusepy  # noqa: F401 - probing only
    except (ImportError, OSError) as exc:
        return f"mfusepy cannot load libfuse: {exc}"
    return None


@contextlib.contextmanager
def slow_disk(backing: Path, mount: Path) -> Iterator[SlowDisk]:
    """Mount a slow disk at ``mount`` over ``backing``; unmounted on leaving."""
    backing.mkdir(parents=True, exist_ok=True)
    mount.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.slow_disk", str(backing), str(mount)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    disk = SlowDisk(mount, process)
    try:
        first = disk.next_report()
        if first != "mounted":
            raise RuntimeError(f"the slow disk did not mount (it said {first!r})")
        yield disk
    finally:
        with contextlib.suppress(BrokenPipeError, ValueError):
            disk._send("quit")
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        subprocess.run(["fusermount3", "-u", "-z", str(mount)], capture_output=True, check=False)
        for pipe in (process.stdin, process.stdout):
            if pipe is not None:
                with contextlib.suppress(BrokenPipeError):
                    pipe.close()


if __name__ == "__main__":
    main()
