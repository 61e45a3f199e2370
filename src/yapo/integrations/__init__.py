"""Bridges to other tools; each imports its tool lazily (optional extras)."""
