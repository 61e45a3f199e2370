"""Atomic file and folder writes.

A run that is killed half-way must never leave an output that looks complete: every
file is written under a temporary name in the same folder and renamed into place
(``os.replace`` is atomic on POSIX and Windows), and whole folders are assembled
under a temporary name and renamed last.

Temporary files and folders are made by :mod:`tempfile` with owner-only modes (0600 and
0700); before they are renamed into place they get the modes an ordinary ``open`` or
``mkdir`` would give (``0666 & ~umask`` and ``0777 & ~umask``), so a results folder
shared with colleagues stays readable to them. The leftovers of a save that was killed
between its two renames (``.NAME.*.tmp`` and ``.NAME.old``) are cleaned up or put back
by :func:`recover_leftovers`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from yapo.errors import YapoError


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux)."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: the classic read-by-setting, restored at once
    os.umask(mask)
    return mask


def _default_mode(path: Path, folder: bool) -> None:
    """Give ``path`` (and, for a folder, everything in it) the modes of a plain write.

    Inside a folder the files may come from writers that pick 0600 themselves
    (safetensors does), so the whole tree is set, not only the folder.
    """
    mask = current_umask()
    os.chmod(path, (0o777 if folder else 0o666) & ~mask)
    if folder:
        for root, dirs, files in os.walk(path):
            for name in dirs:
                os.chmod(os.path.join(root, name), 0o777 & ~mask)
            for name in files:
                os.chmod(os.path.join(root, name), 0o666 & ~mask)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it onto ``path`` on success only."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if tmp.exists():
            _default_mode(tmp, folder=False)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted JSON atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str], overwrite: bool = True) -> Iterator[Path]:
    """Yield a fresh temporary folder; it replaces ``path`` only if the body succeeds.

    The old folder (if any) is removed only after the new one is complete, so an
    interrupted save keeps the previous version intact.
    """
    target = Path(path)
    if target.is_symlink():
        raise YapoError(f"{target} is a symbolic link; yapo does not write through links")
    if target.exists() and not target.is_dir():
        raise YapoError(f"{target} exists and is not a folder; remove it or choose another path")
    if target.exists() and not overwrite:
        raise YapoError(f"{target} already exists")
    if target.parent.exists() and not target.parent.is_dir():
        raise YapoError(f"{target.parent} is a file, not a folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        _default_mode(tmp, folder=True)
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def append_jsonl(path: str | os.PathLike[str], record: dict[str, Any]) -> None:
    """Append one JSON line and flush it to disk (metrics logs survive a crash)."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def recover_leftovers(folder: str | os.PathLike[str]) -> list[str]:
    """Clean what interrupted atomic saves left in ``folder``; return what was done.

    ``.NAME.XXXX.tmp`` files and folders are unfinished writes: removed. ``.NAME.old``
    is the previous version of ``NAME`` kept during a folder swap: removed when ``NAME``
    exists, renamed back to ``NAME`` when the kill came between the two renames. Only
    call this on a folder this process owns (a locked run folder): another process's
    write in progress looks exactly like a leftover.
    """
    root = Path(folder)
    done: list[str] = []
    if not root.is_dir():
        return done
    for entry in sorted(root.iterdir()):
        name = entry.name
        if not name.startswith("."):
            continue
        if name.endswith(".old") and len(name) > len("..old"):
            original = root / name[1 : -len(".old")]
            if original.exists() or original.is_symlink():
                _remove(entry)
                done.append(f"removed {entry}")
            else:
                os.replace(entry, original)
                done.append(f"restored {original} from {entry.name}")
        elif name.endswith(".tmp") and name.count(".") >= 3:
            _remove(entry)
            done.append(f"removed {entry}")
    return done


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
