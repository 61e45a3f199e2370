"""An on-disk cache of judgements, so re-running an evaluation does not pay twice.

The cache is a JSON-lines file of ``{"key": ..., "judgement": {...}}``. The key hashes
the judge model, the rubric version and the exact messages (see
:meth:`Rubric.cache_key`), so changing any of them asks the judge again. Only
successful judgements are stored: failures are retried on the next run. Lines are
appended and flushed one at a time (:func:`yapo._io.append_jsonl`), so a crash loses at
most the line being written, and a torn last line is skipped when the file is read.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

from yapo._io import append_jsonl
from yapo.evaluate.judge.base import Judgement

logger = logging.getLogger(__name__)


class JudgeCache:
    """Thread-safe get/put of judgements by cache key, backed by a JSONL file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._entries: dict[str, Judgement] = {}
        self.skipped_lines = 0
        if self.path.is_file():
            self._load()

    def _load(self) -> None:
        with open(self.path, encoding="utf-8") as handle:
            for line in handle:
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    self._entries[str(record["key"])] = Judgement.from_json(record["judgement"])
                except (json.JSONDecodeError, KeyError, TypeError):
                    self.skipped_lines += 1
        if self.skipped_lines:
            logger.warning("%s: skipped %d unreadable lines", self.path, self.skipped_lines)

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> Judgement | None:
        with self._lock:
            return self._entries.get(key)

    def put(self, key: str, judgement: Judgement) -> None:
        """Store a successful judgement (failures are ignored: they should be retried)."""
        if not judgement.ok:
            return
        with self._lock:
            if key in self._entries:
                return
            self._entries[key] = judgement
            self.path.parent.mkdir(parents=True, exist_ok=True)
            append_jsonl(self.path, {"key": key, "judgement": judgement.to_json()})
