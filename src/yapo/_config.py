"""Config dataclass fields that carry the help text the CLI shows for them.

Each config dataclass (``PreferenceConfig``, ``CompareConfig``, ``SelectionConfig``,
...) is the one home of its defaults *and* of what they mean: the commands read both
(:func:`yapo.cli.options.config_help`), so a default or its explanation changes in one
place and ``--help`` cannot drift from the Python API.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import field
from typing import Any


def config_field(default: Any, help: str) -> Any:
    """A config field with its (immutable) default and its help text."""
    return field(default=default, metadata={"help": help})


def nested_config(factory: Callable[[], Any], help: str) -> Any:
    """A config field whose default is built per instance (a config inside a config)."""
    return field(default_factory=factory, metadata={"help": help})
