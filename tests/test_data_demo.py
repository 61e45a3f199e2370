"""The shipped demo dataset, checked with the project's own loaders."""

from __future__ import annotations

from collections import Counter, defaultdict

import pytest

from yapo.data.cultural import load_mcq, load_open, mcq_to_preferences
from yapo.data.demo import (
    DEMO_COUNTRIES,
    DEMO_LANGUAGE_GROUPS,
    demo_dataset_path,
    load_demo_mcq,
    load_demo_open,
)
from yapo.data.records import WESTERN
from yapo.data.split import split_by_question
from yapo.errors import YapoError

LOCAL_LANGUAGE = {"Egypt": "ar", "Morocco": "ar", "Mexico": "es", "Spain": "es"}
LOCAL_NAME = {"Egypt": "مصر", "Morocco": "المغرب", "Mexico": "México", "Spain": "España"}


def test_demo_mcq_loads_cleanly_with_the_expected_shape() -> None:
    items, report = load_mcq(demo_dataset_path("mcq"))
    assert report.loaded == len(items) and report.problems == []
    assert set(DEMO_COUNTRIES) == {i.country for i in items} and len(DEMO_COUNTRIES) >= 4
    ids = Counter(i.id for i in items)
    assert max(ids.values()) == 1
    assert max(Counter((i.question_id, i.language) for i in items).values()) == 1
    questions: dict[tuple[str, str], set[str]] = defaultdict(set)
    for item in items:
        questions[(item.country, item.language)].add(item.question_id)
    for country in DEMO_COUNTRIES:
        english = questions[(country, "en")]
        local = questions[(country, LOCAL_LANGUAGE[country])]
        assert len(english) >= 40 and english == local  # every question in both languages
    assert {lang for _, lang in questions} == {"en", "ar", "es"}


def test_demo_mcq_items_are_well_formed() -> None:
    items, _ = load_demo_mcq()
    group_of = {c: g for g, cs in DEMO_LANGUAGE_GROUPS.items() for c in cs}
    for item in items:
        assert 0 <= item.answer < len(item.options)
        assert item.option_countries is not None
        assert item.option_countries[item.answer] == item.country
        assert item.western_index is not None and item.western_index != item.answer
        group = DEMO_LANGUAGE_GROUPS[group_of[item.country]]
        assert sorted(item.option_countries) == sorted([*group, WESTERN])
        assert item.localized != item.nonlocalized
        name = item.country if item.language == "en" else LOCAL_NAME[item.country]
        assert name in item.localized and name not in item.nonlocalized
        assert len({o.lower() for o in item.options}) == len(item.options)
        assert item.topic
    answers = Counter(i.answer for i in items)
    assert len(answers) == 3 and min(answers.values()) > len(items) / 5  # not always first


def test_demo_languages_share_question_ids_and_option_order() -> None:
    by_key = {(i.question_id, i.language): i for i in load_demo_mcq()[0]}
    for (qid, language), item in by_key.items():
        if language == "en":
            local = by_key[(qid, LOCAL_LANGUAGE[item.country])]
            assert local.answer == item.answer and local.option_countries == item.option_countries


def test_demo_open_questions() -> None:
    questions, report = load_open(demo_dataset_path("open"))
    assert report.problems == [] and report.loaded == len(questions)
    per = Counter((q.country, q.language) for q in questions)
    for country in DEMO_COUNTRIES:
        assert per[(country, "en")] >= 10 and per[(country, LOCAL_LANGUAGE[country])] >= 10
    for question in questions:
        assert question.localized != question.nonlocalized and len(question.reference) > 20
    assert len({q.id for q in questions}) == len(questions)


def test_demo_filters_and_pairs() -> None:
    egypt_ar, _ = load_demo_mcq(["Egypt"], ["ar"])
    assert egypt_ar and {(i.country, i.language) for i in egypt_ar} == {("Egypt", "ar")}
    assert {q.country for q in load_demo_open(countries=["Spain"])[0]} == {"Spain"}
    with pytest.raises(YapoError, match="Atlantis"):
        load_demo_mcq(["Atlantis"])
    pairs = mcq_to_preferences(egypt_ar, "western")
    assert len(pairs) == 2 * len(egypt_ar)
    train, test = split_by_question(pairs, 0.2, seed=0)
    assert not {p.question_id for p in train} & {p.question_id for p in test}
    with pytest.raises(YapoError):
        demo_dataset_path("nope")  # type: ignore[arg-type]
