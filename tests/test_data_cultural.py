"""Cultural MCQ/open loaders, MCQ → preference pairs, and the paper's Hub layout."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from yapo.data.cultural import load_mcq, load_open, mcq_to_preferences
from yapo.data.files import write_jsonl
from yapo.data.paper import load_paper_hub_dataset, normalize_status
from yapo.data.prompts import format_mcq_prompt
from yapo.data.records import CulturalMCQ, OpenQuestion
from yapo.errors import YapoError


def mcq(**changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "id": "eg-1-en",
        "question_id": "eg-1",
        "language": "en",
        "country": "Egypt",
        "localized": "What is eaten at breakfast in Egypt?",
        "nonlocalized": "What is eaten at breakfast?",
        "options": ["Pancakes", "Ful medames", "Msemen"],
        "answer": 1,
        "topic": "food",
        "option_countries": ["Western", "Egypt", "Morocco"],
    }
    record.update(changes)
    return record


def jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return path


def test_load_mcq_jsonl_round_trip(tmp_path: Path) -> None:
    items, report = load_mcq(jsonl(tmp_path / "m.jsonl", [mcq(), mcq(id="eg-1-ar", language="ar")]))
    assert report.loaded == 2 and report.problems == []
    first = items[0]
    assert first == CulturalMCQ(**{**mcq(), "metadata": {}})
    assert (
        first.western_index == 0 and first.question("nonlocalized") == "What is eaten at breakfast?"
    )
    write_jsonl(tmp_path / "again.jsonl", items)
    assert load_mcq(tmp_path / "again.jsonl")[0] == items


def test_load_mcq_csv_with_json_cells_and_option_columns(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            [
                "id",
                "language",
                "country",
                "localized",
                "nonlocalized",
                "options",
                "option_0",
                "option_1",
                "answer",
                "option_countries",
                "metadata",
            ]
        )
        writer.writerow(
            [
                "a",
                "en",
                "Spain",
                "Q in Spain?",
                "Q?",
                '["Paella", "Tacos"]',
                "",
                "",
                "A",
                '["Spain", "Mexico"]',
                '{"k": 1}',
            ]
        )
        writer.writerow(
            ["b", "es", "Spain", "¿P en España?", "¿P?", "", "Turrón", "Pavo", "0", "", ""]
        )
    items, report = load_mcq(path)
    assert report.loaded == 2
    assert items[0].options == ["Paella", "Tacos"] and items[0].answer == 0
    assert items[0].metadata == {"k": 1} and items[0].question_id == "a"
    assert items[1].options == ["Turrón", "Pavo"] and items[1].option_countries is None


def test_load_mcq_parquet(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    rows = [mcq(answer="B"), mcq(id="x", answer="C")]  # letters (a column has one type)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "m.parquet")
    items, _ = load_mcq(tmp_path / "m.parquet")
    assert [i.answer for i in items] == [1, 2] and items[0].options == mcq()["options"]
    assert items[0].option_countries == mcq()["option_countries"]


def test_load_mcq_problems_are_located(tmp_path: Path) -> None:
    rows = [
        mcq(),  # 1 kept
        mcq(id="dup"),  # 2 duplicate content
        mcq(id="eg-1-en", localized="Other?"),  # 3 id reused
        mcq(id="c", answer=3),  # 4 out of range
        mcq(id="d", options=["x", "x"]),  # 5 repeated option
        mcq(id="e", option_countries=["Egypt"]),  # 6 wrong number of labels
        mcq(id="f", localized=""),  # 7 empty
        mcq(id="g", answer="Z9"),  # 8 not a letter
        mcq(id="h", nonlocalized=mcq()["localized"], localized=mcq()["localized"] + " "),  # 9 warn
    ]
    path = jsonl(tmp_path / "m.jsonl", rows)
    with pytest.raises(YapoError) as info:
        load_mcq(path)
    for line in (3, 4, 5, 6, 8):
        assert f"{path}:{line}:" in str(info.value)
    items, report = load_mcq(path, strict=False)
    assert [i.id for i in items] == ["eg-1-en", "h"]
    assert (report.skipped_duplicate, report.skipped_empty, report.invalid) == (1, 1, 5)
    assert report.messages("warning") == [
        f"{path}:9: localized and nonlocalized questions are identical"
    ]
    assert f"{path}:4: answer 3 is out of range for 3 options" in report.messages("invalid")


def test_load_open(tmp_path: Path) -> None:
    row = {key: mcq()[key] for key in ("language", "country", "localized", "nonlocalized")}
    rows = [{**row, "question_id": "q1", "reference": "Ful and bread."}, {**row, "reference": ""}]
    items, report = load_open(jsonl(tmp_path / "o.jsonl", rows))
    assert items == [OpenQuestion(id="q1-en", question_id="q1", reference="Ful and bread.", **row)]
    assert report.skipped_empty == 1


def sample_items() -> list[CulturalMCQ]:
    return [
        CulturalMCQ(
            **{
                **mcq(),
                "options": ["Pancakes", "Ful", "Msemen", "Tacos"],
                "option_countries": ["Western", "Egypt", "Morocco", "Mexico"],
            }
        ),
        CulturalMCQ(**{**mcq(id="nowest"), "option_countries": None}),
    ]


def test_mcq_to_preferences_policies() -> None:
    items = sample_items()
    western = mcq_to_preferences(items, "western")
    assert len(western) == 2  # one per setting; the item without labels has no Western option
    loc = western[0]
    assert loc.prompt == format_mcq_prompt(items[0].localized, items[0].options)
    assert (loc.chosen, loc.rejected, loc.setting) == ("Ful", "Pancakes", "localized")
    assert western[1].prompt == format_mcq_prompt(items[0].nonlocalized, items[0].options)
    assert (loc.question_id, loc.country, loc.language) == ("eg-1", "Egypt", "en")
    assert loc.metadata["rejected_country"] == "Western" and loc.id == "eg-1-en:localized:A"

    other = mcq_to_preferences(items[:1], "other_country", settings=("nonlocalized",))
    assert [p.rejected for p in other] == ["Msemen", "Tacos"]
    everything = mcq_to_preferences(items, "all")
    assert len(everything) == 2 * 3 + 2 * 2  # every wrong option, both settings
    letters = mcq_to_preferences(items[:1], response="letter", settings=("localized",))
    assert (letters[0].chosen, letters[0].rejected) == ("B", "A")
    both = mcq_to_preferences(items[:1], response="letter_text", settings=("localized",))
    assert (both[0].chosen, both[0].rejected) == ("B. Ful", "A. Pancakes")
    with pytest.raises(YapoError):
        mcq_to_preferences(items, "east")  # type: ignore[arg-type]
    with pytest.raises(YapoError):
        mcq_to_preferences(items, settings=("global",))  # type: ignore[arg-type]


# -- the paper's Hub layout -------------------------------------------------------------


def paper_rows(with_qid: bool = True) -> list[dict[str, Any]]:
    options = "A. Ful medames\nB. Pancakes\nC. Msemen"
    rows = []
    for country, answer, qid in (("Egypt", "A", 7), ("Morocco", "C", 8)):
        for status, question in (
            ("localized", f"What is a breakfast in {country}?"),
            ("non-localized", "What is a breakfast?"),
        ):
            row = {
                "country": country,
                "localization_status": status,
                "prompt-mcq": f"{question}\n{options}\nAnswer:",
                "chosen-mcq": answer if country == "Egypt" else "Msemen",
                "rejected-mcq": "B. Pancakes",
                "prompt-open": question.replace("What is", "Describe"),
                "chosen-open": f"A {country} breakfast.",
                "rejected-open": "Pancakes and coffee.",
                "language": "en",
            }
            if with_qid:
                row["question_id"] = qid
            rows.append(row)
    return rows


@pytest.mark.parametrize("with_qid", [True, False])
def test_paper_dataset_pairs_rows_into_items(tmp_path: Path, with_qid: bool) -> None:
    data, report = load_paper_hub_dataset(jsonl(tmp_path / "paper.jsonl", paper_rows(with_qid)))
    assert report.loaded == 4 and report.invalid == 0
    assert [m.country for m in data.mcq] == ["Egypt", "Morocco"]
    egypt, morocco = data.mcq
    assert egypt.localized == "What is a breakfast in Egypt?"
    assert egypt.nonlocalized == "What is a breakfast?"
    assert egypt.options == ["Ful medames", "Pancakes", "Msemen"]
    assert (egypt.answer, morocco.answer) == (0, 2)
    assert egypt.option_countries == ["Egypt", "Western", "unknown"]
    assert egypt.western_index == 1
    assert [o.reference for o in data.open] == ["A Egypt breakfast.", "A Morocco breakfast."]
    assert data.open[0].nonlocalized == "Describe a breakfast?"
    assert len(data.pairs_of("mcq")) == 4 and len(data.pairs_of("open")) == 4
    first = data.pairs[0]
    assert first.prompt.endswith("Answer:") and first.chosen == "A" and first.setting == "localized"
    # both forms of a question share question_id, so a split keeps them together
    assert {p.question_id for p in data.pairs if p.country == "Egypt"} == {egypt.question_id}


def test_paper_dataset_tolerates_choices_mapping_and_missing_rows(tmp_path: Path) -> None:
    rows = paper_rows()
    for row in rows:
        row["choices"] = {"A": "Ful medames", "B": "Pancakes", "C": "Msemen"}
        row["country_mapping"] = {"A": "Egypt", "B": "USA", "C": "Morocco"}
        row["prompt-mcq"] = row["prompt-mcq"].split("\n")[0]  # options only in `choices`
    rows = rows[:3]  # Morocco's non-localized row is missing
    rows.append({**rows[0], "localization_status": "global"})
    data, report = load_paper_hub_dataset(jsonl(tmp_path / "p.jsonl", rows), strict=False)
    assert len(data.mcq) == 1 and data.mcq[0].option_countries == ["Egypt", "USA", "Morocco"]
    assert report.invalid == 1
    assert any("no nonlocalized row" in m for m in report.messages("warning"))
    with pytest.raises(YapoError, match="localization_status"):
        load_paper_hub_dataset(tmp_path / "p.jsonl")


def test_paper_dataset_rejects_other_layouts(tmp_path: Path) -> None:
    with pytest.raises(YapoError, match="does not look like"):
        load_paper_hub_dataset(jsonl(tmp_path / "x.jsonl", [{"prompt": "p", "chosen": "c"}]))


def test_normalize_status() -> None:
    assert normalize_status("Localized") == "localized"
    assert normalize_status("localised") == "localized"
    for value in ("nonlocalized", "non-localized", "Non_Localized", "not localized"):
        assert normalize_status(value) == "nonlocalized"
    assert normalize_status("global") is None


def test_paper_dataset_from_a_local_dataset_folder_with_splits(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    rows = paper_rows()
    folder = tmp_path / "paper"
    datasets.DatasetDict(
        {
            "egypt": datasets.Dataset.from_list(rows[:2]),
            "morocco": datasets.Dataset.from_list(rows[2:]),
        }
    ).save_to_disk(str(folder))
    data, _ = load_paper_hub_dataset(folder)  # every split is read
    assert [m.country for m in data.mcq] == ["Egypt", "Morocco"]
    assert data.mcq[1].metadata["split"] == "morocco"
    only, _ = load_paper_hub_dataset(folder, split="egypt")
    assert [m.country for m in only.mcq] == ["Egypt"] and len(only.pairs) == 4


def test_filter_countries_keeps_order_and_names_what_is_missing() -> None:
    from yapo.data.split import filter_countries

    items = [
        CulturalMCQ(**mcq(id=f"{country}-{n}", country=country))
        for n, country in enumerate(["Spain", "Egypt", "Mexico", "Egypt", "Spain"])
    ]
    kept = filter_countries(items, ["Spain", "Egypt"])
    assert [i.id for i in kept] == ["Spain-0", "Egypt-1", "Egypt-3", "Spain-4"]  # input order
    assert filter_countries(items, None) == items and filter_countries(items, []) == items
    with pytest.raises(YapoError) as refused:
        filter_countries(items, ["Atlantis", "Egypt", "Lemuria"])
    message = str(refused.value)
    # the substrings `yapo eval` and `yapo compare`/`demo` users (and their tests) rely on
    assert "no items for Atlantis, Lemuria" in message
    assert "the data has no Atlantis, Lemuria; its countries: Egypt, Mexico, Spain" in message
    with pytest.raises(YapoError, match="demo.jsonl has no Atlantis; its countries: Egypt"):
        filter_countries(items[1:2], ["Atlantis"], source="demo.jsonl")
    question = OpenQuestion(
        id="q1-en",
        question_id="q1",
        language="en",
        country="Egypt",
        localized="What is eaten at breakfast in Egypt?",
        nonlocalized="What is eaten at breakfast?",
        reference="Ful and bread.",
    )
    assert filter_countries([question], ["Egypt"]) == [question]
