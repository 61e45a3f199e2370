"""BLEnD → cultural MCQs, on a small synthetic copy of BLEnD's layout and on the real files."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from yapo.data.blend import convert_blend, remove_country_en, remove_country_es
from yapo.data.records import WESTERN
from yapo.errors import YapoError

REAL_BLEND = Path("/work/shared/data/blend")
LOCAL_NAMES = {"Spain": "España", "Mexico": "México"}

# question id → (English template, {country: [(answer, votes), ...]})
QUESTIONS: dict[str, tuple[str, dict[str, list[tuple[str, int]]]]] = {
    "q1": (
        "What is a popular snack in {c}?",
        {
            "Spain": [("churros", 3), ("bread", 1)],
            "Mexico": [("tacos", 4)],
            "US": [("chips", 3)],
            "UK": [("crisps", 2)],
            "Greece": [("koulouri", 3)],
        },
    ),
    "q2": (  # Spain: tied top answers
        "What is a popular drink in {c}?",
        {
            "Spain": [("wine", 2), ("beer", 2)],
            "Mexico": [("tequila", 3)],
            "US": [("soda", 3)],
            "UK": [("tea", 3)],
            "Greece": [("ouzo", 3)],
        },
    ),
    "q3": (  # the Western answer is a (minor) Spanish answer
        "What is a popular sport in {c}?",
        {
            "Spain": [("football", 4), ("basketball", 1)],
            "Mexico": [("boxing", 3)],
            "US": [("basketball", 3)],
            "UK": [("cricket", 3)],
            "Greece": [("football", 2)],
        },
    ),
    "q4": (  # possessive: removal unreliable
        "What is {c}'s national dish?",
        {
            "Spain": [("paella", 4)],
            "Mexico": [("mole", 4)],
            "US": [("burger", 3)],
            "UK": [("roast", 3)],
            "Greece": [("moussaka", 3)],
        },
    ),
    "q5": (  # too few votes
        "What is a popular fruit in {c}?",
        {
            "Spain": [("orange", 1)],
            "Mexico": [("mango", 3)],
            "US": [("apple", 3)],
            "UK": [("apple", 2)],
            "Greece": [("grape", 3)],
        },
    ),
    "q6": (
        "In {c}, who usually cooks dinner?",
        {
            "Spain": [("the mother", 3)],
            "Mexico": [("grandmother", 3)],
            "US": [("both parents", 3)],
            "UK": [("dad", 2)],
            "Greece": [("mum", 3)],
        },
    ),
    "q7": (
        "What do people from {c} eat for dessert?",
        {
            "Spain": [("flan", 3)],
            "Mexico": [("arroz con leche", 2)],
            "US": [("pie", 3)],
            "UK": [("pudding", 3)],
            "Greece": [("baklava", 3)],
        },
    ),
    "q8": ("What is a common pet in {c}?", {"Spain": [], "Mexico": [("dog", 3)]}),
    "q9": (  # nobody else has a distinct answer
        "What is a common breakfast drink in {c}?",
        {
            "Spain": [("coffee", 3)],
            "Mexico": [("coffee", 3)],
            "US": [("juice", 3)],
            "UK": [("tea", 3)],
            "Greece": [("Coffee", 2)],
        },  # same answer, other case
    ),
}
TOPICS = {"q1": "Food", "q6": "Family", "q7": "Food"}


def write_blend(root: Path) -> Path:
    countries = {c for _, answers in QUESTIONS.values() for c in answers} | {"US", "UK", "Greece"}
    (root / "annotations").mkdir(parents=True)
    (root / "questions").mkdir()
    for country in sorted(countries):
        name = country.replace("_", " ")
        data: dict[str, Any] = {}
        for qid, (template, answers) in QUESTIONS.items():
            english = template.format(c=name)
            local = english.replace(name, LOCAL_NAMES.get(country, name))
            if country in LOCAL_NAMES:  # a plausible Spanish rendering for the local form
                local = "¿" + local.replace(" in ", " en ").replace("What is", "Cuál es")
            data[qid] = {
                "question": local,
                "en_question": english,
                "annotations": [
                    {"answers": [a], "en_answers": [a], "count": n}
                    for a, n in answers.get(country, [])
                ],
                "idks": {"idk": 0, "no-answer": 0, "not-applicable": 0},
            }
        (root / "annotations" / f"{country}_data.json").write_text(
            json.dumps(data, ensure_ascii=False), encoding="utf-8"
        )
        with open(root / "questions" / f"{country}_questions.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["", "ID", "Topic", "Source", "Question", "Translation"])
            for i, qid in enumerate(QUESTIONS):
                writer.writerow([i, qid, TOPICS.get(qid, "Other"), "test", "", ""])
    return root


def test_convert_blend_synthetic(tmp_path: Path) -> None:
    root = write_blend(tmp_path / "blend")
    items, report = convert_blend(root, ["Spain", "Mexico"], n_options=4)
    spain = {i.metadata["blend_id"]: i for i in items if i.country == "Spain"}
    assert sorted(spain) == ["q1", "q6", "q7"]
    q1 = spain["q1"]
    assert q1.localized == "What is a popular snack in Spain?"
    assert q1.nonlocalized == "What is a popular snack?"
    assert q1.options[q1.answer] == "Churros"
    assert q1.option_countries is not None
    labelled = dict(zip(q1.option_countries, q1.options))
    assert labelled == {
        "Spain": "Churros",
        WESTERN: "Chips",
        "Mexico": "Tacos",
        "Greece": "Koulouri",
    }
    assert q1.topic == "Food" and q1.question_id == "blend:q1" and q1.language == "en"
    assert spain["q6"].nonlocalized == "Who usually cooks dinner?"
    dropped = report.countries["Spain"].dropped
    assert dropped == {
        "tied top answers": 1,
        "Western answer is also a target answer": 1,
        "country mention not removable (English)": 1,
        "top answer has fewer than 2 votes": 1,
        "no annotated answers": 1,
        "fewer than 4 distinct answers across countries": 1,  # q9 (coffee and Coffee)
    }
    assert report.countries["Spain"].kept == {"en": 3}
    assert report.countries["Spain"].questions == len(QUESTIONS)
    assert spain["q7"].nonlocalized == "What do people eat for dessert?"
    assert "Spain: 9 question(s); kept en: 3" in report.summary()


def test_convert_blend_languages_order_and_western(tmp_path: Path) -> None:
    root = write_blend(tmp_path / "blend")
    items, report = convert_blend(
        root, ["Spain", "Greece", "US"], languages=("en", "local"), n_options=3, western="US"
    )
    spanish = [i for i in items if i.language == "es"]
    assert spanish and all(i.country == "Spain" for i in spanish)
    q1_es = next(i for i in spanish if i.metadata["blend_id"] == "q1")
    assert "España" in q1_es.localized and "España" not in q1_es.nonlocalized
    assert q1_es.metadata["options_language"] == "en"
    us = [i for i in items if i.country == "US"]
    assert us and all(i.metadata["western_country"] == "UK" for i in us)
    assert all("the US" in i.localized for i in us)
    assert any("Greece" in n and "'el'" in n for n in report.notes)
    assert any("UK answers used" in n for n in report.notes)
    for item in items:
        assert len(item.options) == 3 and len(set(item.options)) == 3
        assert item.option_countries is not None
        assert item.option_countries[item.answer] == item.country
        assert item.option_countries.count(WESTERN) == 1
        assert not {"US", "UK"} & set(item.option_countries) - {item.country}
    again, _ = convert_blend(
        root, ["Spain", "Greece", "US"], languages=("en", "local"), n_options=3, western="US"
    )
    assert again == items  # deterministic


def test_convert_blend_errors(tmp_path: Path) -> None:
    root = write_blend(tmp_path / "blend")
    with pytest.raises(YapoError, match="Narnia"):
        convert_blend(root, ["Narnia"])
    with pytest.raises(YapoError, match="not a BLEnD"):
        convert_blend(tmp_path, ["Spain"])
    with pytest.raises(YapoError, match="n_options"):
        convert_blend(root, ["Spain"], n_options=1)


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        (
            "What is a common snack for preschool kids in Spain?",
            "What is a common snack for preschool kids?",
        ),
        (
            "How many hours a day do students in Spain usually spend at school? (Provide numbers.)",
            "How many hours a day do students usually spend at school? (Provide numbers.)",
        ),
        ("In Spain, who takes care of kids?", "Who takes care of kids?"),
        ("What do people do in Spain in the morning?", "What do people do in the morning?"),
        (
            "What kind of soup do people from Spain like to have?",
            "What kind of soup do people like to have?",
        ),
        ("Which is the most important meal to people from Spain?", None),
        ("What is Spain's most popular pet?", None),
        ("What is the representative export item of Spain?", None),
        ("Except the food from Spain, which food is popular in Spain?", None),
        ("Which food from Spain is considered disgusting?", None),
    ],
)
def test_remove_country_en(question: str, expected: str | None) -> None:
    assert remove_country_en(question, "Spain") == expected


def test_remove_country_es() -> None:
    assert remove_country_es("¿Cuál es la fruta más popular en España?", ["España"]) == (
        "¿Cuál es la fruta más popular?"
    )
    assert remove_country_es("¿En México, quién cuida a los niños?", ["México"]) == (
        "¿Quién cuida a los niños?"
    )
    assert remove_country_es("En España, ¿en qué curso se examinan?", ["España"]) == (
        "¿en qué curso se examinan?"
    )
    assert remove_country_es("¿Qué comen los españoles de postre?", ["España"]) is None
    assert remove_country_es("¿Qué ha ganado España?", ["España"]) is None


@pytest.mark.skipif(not REAL_BLEND.is_dir(), reason="/work/shared/data/blend is absent")
def test_convert_real_blend() -> None:
    items, report = convert_blend(REAL_BLEND, ["Spain", "Mexico"], languages=("en", "es"))
    for country in ("Spain", "Mexico"):
        stats = report.countries[country]
        assert stats.questions == 500
        assert stats.kept["en"] > 150 and stats.kept["es"] > 150
        language_drops = sum(n for r, n in stats.dropped.items() if r.endswith("(es)"))
        assert stats.kept["en"] + sum(stats.dropped.values()) - language_drops == 500
    names = {"Spain": ("Spain", "España"), "Mexico": ("Mexico", "México")}
    for item in items:
        english, local = names[item.country]
        name = english if item.language == "en" else local
        assert name in item.localized and name not in item.nonlocalized
        assert item.option_countries is not None and item.option_countries.count(WESTERN) == 1
        assert item.option_countries[item.answer] == item.country
        assert len({o.lower() for o in item.options}) == 4
    answers = [i.answer for i in items]
    assert all(answers.count(k) > len(answers) / 8 for k in range(4))  # shuffled
