"""Data: record schemas, loaders, converters and prompt formatting."""

from yapo.data.records import CulturalMCQ, OpenQuestion, PreferencePair

__all__ = ["CulturalMCQ", "OpenQuestion", "PreferencePair"]
