"""Train/test splits that keep every variant of a question on one side.

A question appears several times in our data: localized and non-localized, in English
and in the local language, with several rejected answers. If those variants straddled
train and test, a steering vector would be tested on questions it was trained on. So
records are grouped by ``question_id`` (falling back to the prompt text for preference
pairs that have none, which keeps BiPO's repeated jailbreak goals together) and whole
groups are assigned to one side.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TypeVar

from yapo.data.records import CulturalMCQ, OpenQuestion, PreferencePair
from yapo.errors import YapoError

Record = TypeVar("Record", PreferencePair, CulturalMCQ, OpenQuestion)


def question_key(record: PreferencePair | CulturalMCQ | OpenQuestion) -> str:
    """The grouping key: ``question_id``, else the prompt text (pairs) or the id."""
    if record.question_id:
        return f"qid:{record.question_id}"
    if isinstance(record, PreferencePair):
        return "prompt:" + " ".join(record.prompt.split())
    return f"id:{record.id}"


def split_by_question(
    records: Sequence[Record], test_fraction: float, seed: int = 0
) -> tuple[list[Record], list[Record]]:
    """``(train, test)`` with whole question groups on each side, in input order.

    ``round(test_fraction × groups)`` groups go to test, chosen with ``seed``; when
    there are at least two groups and ``0 < test_fraction``, each side gets at least
    one group, so a small dataset never yields an empty train or test set.
    """
    if not 0 <= test_fraction < 1:
        raise YapoError(f"test_fraction must be in [0, 1), got {test_fraction}")
    keys = sorted({question_key(r) for r in records})
    n_test = round(test_fraction * len(keys))
    if test_fraction > 0 and len(keys) >= 2:
        n_test = min(max(n_test, 1), len(keys) - 1)
    random.Random(seed).shuffle(keys)
    test_keys = set(keys[:n_test])
    train = [r for r in records if question_key(r) not in test_keys]
    test = [r for r in records if question_key(r) in test_keys]
    return train, test


Located = TypeVar("Located", CulturalMCQ, OpenQuestion)


def filter_countries(
    records: Sequence[Located], countries: Sequence[str] | None, *, source: str = "the data"
) -> list[Located]:
    """The records of ``countries`` (every record when none is asked for), in input order.

    Every command that takes ``--countries`` filters through here, so a misspelled or
    absent country stops the run with one message naming what ``source`` does have,
    rather than silently evaluating, training or patching on fewer countries than asked.
    """
    if not countries:
        return list(records)
    present = sorted({record.country for record in records})
    missing = [country for country in dict.fromkeys(countries) if country not in present]
    if missing:
        names = ", ".join(missing)
        raise YapoError(
            f"no items for {names}: {source} has no {names}; its countries: {', '.join(present)}"
        )
    wanted = set(countries)
    return [record for record in records if record.country in wanted]
