"""One process per run folder: an advisory lock file that holds the owner's pid.

``DIR/.yapo.lock`` is opened and locked with ``fcntl.flock`` (exclusive, non-blocking)
and the owner writes its pid, host and start time into it. The kernel drops a flock
when its process dies, so a lock left by a run killed with ``kill -9`` is stale by
construction: the next process simply gets it (and says whose it was). A lock held by
a live process gives a :class:`RunLocked` error naming that process.

The file is never deleted (deleting a locked file lets a third process lock a new
inode while the second still holds the old one); an unlocked file is just a leftover.
Within one process the lock is re-entrant: a notebook that trains twice into the same
folder, or a test that runs the CLI in-process, does not lock itself out. On systems
without ``fcntl`` (Windows) the lock falls back to "O_EXCL create + pid alive".
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import socket
import threading
from pathlib import Path
from typing import Any

from yapo.errors import YapoError

LOCK_NAME = ".yapo.lock"

try:  # pragma: no branch
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


class RunLocked(YapoError):
    """Another live process is using this run folder."""


_held: dict[str, tuple[int, int]] = {}  # real path -> (fd, reference count)
_guard = threading.Lock()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_owner(path: Path) -> dict[str, Any]:
    """What the lock file says about its (last) owner; ``{}`` when unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _describe(owner: dict[str, Any]) -> str:
    if not owner:
        return "another process"
    return (
        f"process {owner.get('pid', '?')} on {owner.get('host', '?')} "
        f"(since {owner.get('started', '?')})"
    )


class FolderLock:
    """The lock of one folder; :meth:`acquire` / :meth:`release`, or ``with``."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.previous_owner: dict[str, Any] = {}
        self._key: str | None = None

    def acquire(self) -> FolderLock:
        self.folder.mkdir(parents=True, exist_ok=True)
        key = str(self.path.resolve())
        with _guard:
            held = _held.get(key)
            if held is not None and _same_file(held[0], self.path):
                _held[key] = (held[0], held[1] + 1)
                self._key = key
                return self
            if held is not None:  # the folder was deleted and made again under us
                os.close(held[0])
                del _held[key]
            fd = _lock_file(self.path)
            self.previous_owner = read_owner(self.path)
            _write_owner(fd)
            _held[key] = (fd, 1)
            self._key = key
        return self

    def release(self) -> None:
        if self._key is None:
            return
        with _guard:
            held = _held.get(self._key)
            if held is not None:
                fd, count = held
                if count > 1:
                    _held[self._key] = (fd, count - 1)
                else:
                    del _held[self._key]
                    _unlock(fd, self.path)
            self._key = None

    @property
    def held(self) -> bool:
        return self._key is not None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except OSError:
        return False


def _lock_file(path: Path) -> int:
    if fcntl is None:  # pragma: no cover - Windows
        return _lock_exclusive_create(path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        owner = read_owner(path)
        raise RunLocked(
            f"{path.parent} is in use by {_describe(owner)}: one run folder belongs to one "
            "process at a time; wait for it to finish, stop it, or choose another --out"
        ) from None
    return fd


def _lock_exclusive_create(path: Path) -> int:  # pragma: no cover - Windows
    for _ in range(2):
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            owner = read_owner(path)
            pid = owner.get("pid")
            if isinstance(pid, int) and not _pid_alive(pid):
                path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            raise RunLocked(
                f"{path.parent} is in use by {_describe(owner)}; wait for it, or choose "
                f"another --out (delete {path} if that process is gone)"
            ) from None
    raise RunLocked(f"cannot lock {path.parent}")


def _write_owner(fd: int) -> None:
    owner = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    data = json.dumps(owner).encode("utf-8")
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)
    os.fsync(fd)


def _unlock(fd: int, path: Path) -> None:
    try:
        if fcntl is None:  # pragma: no cover - Windows
            os.close(fd)
            path.unlink(missing_ok=True)
            return
        os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
