"""Type checks of a vector's ``config.json``: a file from elsewhere is not trusted.

A vector folder may come from a colleague, a download or a hand edit. A field of the
wrong type (``"layer": "../../x"``) must give a one-line :class:`YapoError` naming the
field, rather than a ``TypeError`` deep inside layer lookup.
"""

from __future__ import annotations

from typing import Any

from yapo.errors import YapoError

_INTEGERS = ("layer", "d_model", "d_sae")
_TEXTS = ("method", "model", "sae_reference", "sae_checksum", "version", "created", "kind")
_MAPPINGS = ("hyperparameters", "model_fingerprint")
_REQUIRED = ("method", "layer", "d_model")


def check_meta_types(data: dict[str, Any]) -> None:
    """Raise one :class:`YapoError` listing every field of ``data`` with a wrong type."""
    problems: list[str] = []
    for name in _INTEGERS:
        value = data.get(name)
        if value is None and name not in _REQUIRED:
            continue
        if not isinstance(value, int) or isinstance(value, bool):
            problems.append(f"{name!r} must be an integer, got {value!r}")
        elif name != "layer" and value < 1:
            problems.append(f"{name!r} must be positive, got {value}")
    for name in _TEXTS:
        value = data.get(name)
        if (value is not None or name in _REQUIRED) and not isinstance(value, str):
            problems.append(f"{name!r} must be text, got {value!r}")
    for name in _MAPPINGS:
        value = data.get(name)
        if value is not None and not isinstance(value, dict):
            problems.append(f"{name!r} must be a JSON object, got {type(value).__name__}")
    if problems:
        raise YapoError("invalid vector config: " + "; ".join(problems))
