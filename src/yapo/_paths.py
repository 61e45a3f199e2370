"""Paths built from data: one safe folder name per value, and no two values sharing one.

A dataset's ``country`` (or any other field) becomes a folder name in ``yapo compare``;
data is not trusted, so ``".."`` must not climb out of ``--out``, ``"."`` must not land
in ``--out`` itself, and "South Korea" and "South/Korea" must not silently share one
folder. :func:`safe_component` makes one path component; :func:`distinct_components`
does it for many values and refuses collisions (compared case-insensitively, because
macOS and Windows folders are) and reserved names.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from yapo.errors import YapoError

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_component(text: str, fallback: str = "unnamed") -> str:
    """A single path component made of ``[A-Za-z0-9._-]`` that is never ``.``/``..``.

    Runs of other characters become ``_``; leading and trailing dots and underscores
    are dropped (so ``".."``, ``"."`` and hidden names are impossible).
    """
    name = _UNSAFE.sub("_", str(text)).strip("._")
    return name or fallback


def distinct_components(
    values: Iterable[str],
    what: str = "value",
    reserved: Iterable[str] = (),
    fallback: str = "unnamed",
) -> dict[str, str]:
    """``{value: folder name}``; a :class:`YapoError` when two values share a folder name.

    ``reserved`` names (e.g. ``eval``, the merged evaluation's folder) are refused too.
    """
    taken: dict[str, str] = {name.lower(): f"yapo's own {name!r}" for name in reserved}
    names: dict[str, str] = {}
    for value in values:
        if value in names:
            continue
        name = safe_component(value, fallback)
        other = taken.get(name.lower())
        if other is not None:
            raise YapoError(
                f"{what} {value!r} would be written to the folder {name!r}, which is also "
                f"the folder of {other}; rename one of them in the data"
            )
        taken[name.lower()] = f"{what} {value!r}"
        names[value] = name
    return names


def inside(base: Path, child: Path) -> Path:
    """``child`` if it lies inside ``base`` (after resolving), else a :class:`YapoError`."""
    root, target = base.resolve(), child.resolve()
    if target != root and root not in target.parents:
        raise YapoError(f"{child} is outside {base}; refusing to write there")
    return child


def resolved_reference(reference: str | None) -> str | None:
    """A reference that names an existing local path, made absolute; others unchanged.

    A sparse vector records its SAE reference so that it can load the SAE again; a
    relative path only works from the directory it was typed in (elsewhere it would be
    looked up on the Hub), so local paths are stored absolute.
    """
    if not reference:
        return reference
    path = Path(reference).expanduser()
    if path.exists():
        return str(path.resolve())
    return reference
