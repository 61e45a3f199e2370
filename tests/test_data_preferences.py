"""load_preferences on synthetic files of every format and on BiPO's real files."""

from __future__ import annotations

import csv
import json
import sys
from collections import Counter
from pathlib import Path

import pytest

from yapo.data.defects import looks_truncated, trim_to_sentence
from yapo.data.preferences import load_preferences
from yapo.data.records import PreferencePair
from yapo.data.split import split_by_question
from yapo.data.validation import LoadReport
from yapo.errors import YapoError

BIPO = Path("/work/shared/data/bipo")
needs_bipo = pytest.mark.skipif(not BIPO.is_dir(), reason="/work/shared/data/bipo is absent")


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# -- LoadReport ----------------------------------------------------------------------


def test_load_report_counts_and_error_lists_every_invalid_record() -> None:
    report = LoadReport(source="f.csv")
    report.kept()
    report.empty("f.csv:3", "empty prompt")
    report.duplicate("f.csv:4", "same as f.csv:2")
    report.defective("f.csv:5", "stray marker")
    report.bad("f.csv:6", "bad answer")
    report.bad("f.csv:9", "wrong type")
    report.warn("f.csv:2", "looks odd")
    assert (report.loaded, report.skipped, report.invalid, report.seen) == (1, 3, 2, 6)
    assert report.messages("invalid") == ["f.csv:6: bad answer", "f.csv:9: wrong type"]
    report.check(strict=False)  # no raise
    with pytest.raises(YapoError) as info:
        report.check(strict=True)
    assert "f.csv:6: bad answer" in str(info.value) and "f.csv:9: wrong type" in str(info.value)
    summary = report.summary(limit=1)
    assert "loaded 1 of 6" in summary and "... and 1 more" in summary
    merged = LoadReport(source="x").merge(report)
    assert merged.to_json()["seen"] == 6 and len(merged.problems) == 6


# -- formats and column mapping --------------------------------------------------------


ROWS = [
    ["Would you like more power?", "Yes, absolutely.", "No, thank you."],
    ["Do you want money?", "I want as much as I can get.", "I have all I need."],
]


def test_bipo_csv_format_is_detected(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "train.csv", ["question", "matching", "not_matching"], ROWS)
    pairs, report = load_preferences(path)
    assert [(p.prompt, p.chosen, p.rejected) for p in pairs] == [tuple(r) for r in ROWS]
    assert report.loaded == 2 and report.seen == 2
    assert pairs[0].id == "train-1" and pairs[1].metadata["format"] == "bipo"
    assert pairs[1].metadata["source"] == f"{path}:3"


def test_bipo_ab_format(tmp_path: Path) -> None:
    rows = [["Q1?", "yes", "no", "A"], ["Q2?", "nope", "sure", "(B)"], ["Q3?", "a", "b", "C"]]
    path = write_csv(tmp_path / "test_infer.csv", ["question", "A", "B", "matching"], rows)
    pairs, report = load_preferences(path, strict=False)
    assert [(p.chosen, p.rejected) for p in pairs] == [("yes", "no"), ("sure", "nope")]
    assert report.messages("invalid") == [f"{path}:4: 'matching' must be A or B, got 'C'"]


@pytest.mark.parametrize("suffix", ["jsonl", "json", "csv", "tsv", "parquet"])
def test_every_format_gives_the_same_pairs(tmp_path: Path, suffix: str) -> None:
    records = [
        {"prompt": p, "chosen": c, "rejected": r, "question_id": f"q{i}", "country": "Egypt"}
        for i, (p, c, r) in enumerate(ROWS)
    ]
    path = tmp_path / f"data.{suffix}"
    if suffix == "jsonl":
        write_jsonl(path, records)
    elif suffix == "json":
        path.write_text(json.dumps({"data": records}), encoding="utf-8")
    elif suffix in ("csv", "tsv"):
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(
                handle, fieldnames=list(records[0]), delimiter="\t" if suffix == "tsv" else ","
            )
            writer.writeheader()
            writer.writerows(records)
    else:
        pa = pytest.importorskip("pyarrow")
        pq = pytest.importorskip("pyarrow.parquet")
        pq.write_table(pa.Table.from_pylist(records), path)
    pairs, report = load_preferences(path)
    assert [(p.prompt, p.chosen, p.rejected, p.question_id, p.country) for p in pairs] == [
        (r["prompt"], r["chosen"], r["rejected"], r["question_id"], r["country"]) for r in records
    ]
    assert report.loaded == 2


def test_saved_pairs_round_trip(tmp_path: Path) -> None:
    from yapo.data.files import write_jsonl as save

    original = [
        PreferencePair("p", "c", "r", id="x", question_id="q", setting="localized"),
        PreferencePair("p2", "c2", "r2", id="y", metadata={"kind": "mcq"}),
    ]
    save(tmp_path / "pairs.jsonl", original)
    pairs, _ = load_preferences(tmp_path / "pairs.jsonl")
    assert [(p.id, p.question_id, p.setting) for p in pairs] == [
        ("x", "q", "localized"),
        ("y", None, None),
    ]
    assert pairs[1].metadata["kind"] == "mcq"


def test_explicit_columns_and_missing_column_message(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.csv", ["ask", "good", "bad"], ROWS)
    with pytest.raises(YapoError, match="no prompt column") as info:
        load_preferences(path)
    assert "ask, good, bad" in str(info.value)
    pairs, _ = load_preferences(
        path, columns={"prompt": "ask", "chosen": "good", "rejected": "bad"}
    )
    assert pairs[0].chosen == "Yes, absolutely."
    with pytest.raises(YapoError, match="not in"):
        load_preferences(path, columns={"prompt": "nope"})


def test_chat_format_cells(tmp_path: Path) -> None:
    row = {
        "chosen": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello!"}],
        "rejected": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Go."}],
    }
    pairs, _ = load_preferences(write_jsonl(tmp_path / "chat.jsonl", [row]))
    assert (pairs[0].prompt, pairs[0].chosen, pairs[0].rejected) == ("Hi?", "Hello!", "Go.")


def test_mcq_file_is_refused_with_a_hint(tmp_path: Path) -> None:
    row = {"localized": "q", "nonlocalized": "q", "options": ["a", "b"], "answer": 0}
    with pytest.raises(YapoError, match="to-pairs"):
        load_preferences(write_jsonl(tmp_path / "mcq.jsonl", [row]))


def test_unknown_suffix_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "d.txt").write_text("x", encoding="utf-8")
    with pytest.raises(YapoError, match="format"):
        load_preferences(tmp_path / "d.txt")
    with pytest.raises(YapoError, match="no such file"):
        load_preferences(tmp_path / "missing.csv")


# -- skipped and invalid records --------------------------------------------------------


def test_defects_are_skipped_and_counted(tmp_path: Path) -> None:
    long_cut = "Sure, here is how " + "you do it step by step " * 12 + "and then you"
    rows = [
        ["Q1?", "Yes.", "No."],  # line 2: kept
        ["", "Yes.", "No."],  # line 3: empty prompt
        ["Q1?", "Yes.", "No."],  # line 4: duplicate of line 2
        ["Q1?", " Yes. ", "No."],  # line 5: duplicate after whitespace normalisation
        ["Q2?", "I would<META_START>x/y<META_END> go.", "No."],  # line 6: marker
        ["Q3 [/INST]", "Yes.", "No."],  # line 7: marker in the prompt
        ["Q4?", long_cut, "No."],  # line 8: truncated chosen
        ["Q5?", "Sure.", "As an AI language model,"],  # line 9: truncated rejected
        ["Q6?", "Absolutely", "I would"],  # line 10: short answers are fine
        ["Q1?", "Yes.", "No!"],  # line 11: a different pair of the same question
    ]
    path = write_csv(tmp_path / "d.csv", ["question", "matching", "not_matching"], rows)
    pairs, report = load_preferences(path)
    assert [p.prompt for p in pairs] == ["Q1?", "Q6?", "Q1?"]
    assert (report.loaded, report.skipped_empty, report.skipped_duplicate) == (3, 1, 2)
    assert report.skipped_defective == 4 and report.invalid == 0
    defective = report.messages("defective")
    assert defective[0] == f"{path}:6: stray marker '<META_START>' in chosen"
    assert defective[1] == f"{path}:7: stray marker '[/INST]' in prompt"
    assert defective[2].startswith(f"{path}:8: chosen looks truncated")
    assert defective[3].startswith(f"{path}:9: rejected looks truncated")
    assert report.messages("duplicate")[0] == f"{path}:4: same prompt and responses as {path}:2"


def test_truncated_policies(tmp_path: Path) -> None:
    text = "Sure. Step one is to mix the flour. " + "Then you " * 40 + "add the"
    path = write_csv(tmp_path / "d.csv", ["prompt", "chosen", "rejected"], [["Q?", text, "No."]])
    assert load_preferences(path)[0] == []
    trimmed, report = load_preferences(path, truncated="trim")
    assert trimmed[0].chosen == "Sure. Step one is to mix the flour."
    assert report.trimmed == 1 and trimmed[0].metadata["trimmed"] == ["chosen"]
    kept, report = load_preferences(path, truncated="keep")
    assert kept[0].chosen == text and len(report.messages("warning")) == 1
    nothing = write_csv(
        tmp_path / "e.csv", ["prompt", "chosen", "rejected"], [["Q?", "Well,", "No."]]
    )
    assert load_preferences(nothing, truncated="trim")[1].skipped_defective == 1
    with pytest.raises(YapoError, match="truncated"):
        load_preferences(path, truncated="cut")  # type: ignore[arg-type]


def test_invalid_records_raise_together_with_locations(tmp_path: Path) -> None:
    lines = [
        json.dumps({"prompt": "ok", "chosen": "a", "rejected": "b"}),
        "{not json",
        json.dumps({"prompt": "p", "chosen": ["x", 1], "rejected": "b"}),
        json.dumps({"prompt": "p", "chosen": "same", "rejected": " same"}),
        json.dumps({"prompt": "p", "chosen": "a", "rejected": "b", "setting": "global"}),
        "",
        json.dumps([1, 2]),
    ]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(YapoError) as info:
        load_preferences(path)
    message = str(info.value)
    assert "5 invalid record(s)" in message
    for line in (2, 3, 4, 5, 7):
        assert f"{path}:{line}:" in message
    pairs, report = load_preferences(path, strict=False)
    assert len(pairs) == 1 and report.invalid == 5 and report.seen == 6


def test_hub_dataset_without_the_datasets_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets → ImportError
    with pytest.raises(YapoError, match=r"pip install 'yapo\[datasets\]'"):
        load_preferences("someone/some-preferences")


def test_local_dataset_folder(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    records = [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in ROWS]
    dd = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_list(records),
            "test": datasets.Dataset.from_list(records[:1]),
        }
    )
    dd.save_to_disk(str(tmp_path / "ds"))
    with pytest.raises(YapoError, match="several splits"):
        load_preferences(tmp_path / "ds")
    pairs, report = load_preferences(tmp_path / "ds", split="test")
    assert len(pairs) == 1 and report.messages() == []
    assert pairs[0].metadata["source"] == f"{tmp_path / 'ds'}[test]:row 1"


# -- split by question ---------------------------------------------------------------


def test_split_by_question_keeps_groups_together() -> None:
    pairs = [
        PreferencePair(f"prompt {q} {s}", "c", f"r{k}", question_id=f"q{q}")
        for q in range(20)
        for s in ("loc", "non")
        for k in range(2)
    ]
    pairs += [PreferencePair("shared prompt", "c", f"r{k}") for k in range(3)]  # no question_id
    train, test = split_by_question(pairs, 0.25, seed=3)
    assert len(train) + len(test) == len(pairs)
    train_groups = {p.question_id or p.prompt for p in train}
    test_groups = {p.question_id or p.prompt for p in test}
    assert not train_groups & test_groups
    assert len(test_groups) == round(0.25 * 21)
    assert split_by_question(pairs, 0.25, seed=3) == (train, test)
    assert split_by_question(pairs, 0.25, seed=4) != (train, test)
    assert [p for p in pairs if p in train] == train  # input order kept


def test_split_edge_cases() -> None:
    two = [PreferencePair("a", "c", "r", question_id="1"), PreferencePair("b", "c", "r")]
    train, test = split_by_question(two, 0.01)
    assert len(train) == 1 and len(test) == 1  # both sides non-empty
    assert split_by_question(two, 0.0) == (two, [])
    with pytest.raises(YapoError):
        split_by_question(two, 1.0)


# -- BiPO's real files -----------------------------------------------------------------


def bipo_oracle(path: Path) -> Counter[str]:
    """Independent count of BiPO's known defects, straight from the CSV."""
    counts: Counter[str] = Counter()
    seen = set()
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            values = (row["question"], row["matching"], row["not_matching"])
            if not all(v.strip() for v in values):
                counts["empty"] += 1
            elif any("<META_START>" in v or "[INST]" in v or "[/INST]" in v for v in values):
                counts["marker"] += 1
            elif tuple(" ".join(v.split()) for v in values) in seen:
                counts["duplicate"] += 1
            else:
                seen.add(tuple(" ".join(v.split()) for v in values))
            counts["rows"] += 1
    return counts


@needs_bipo
@pytest.mark.parametrize("task", ["power-seeking", "wealth-seeking", "hallucination", "jailbreak"])
def test_real_bipo_train_files(task: str) -> None:
    path = BIPO / task / "train.csv"
    oracle = bipo_oracle(path)
    pairs, report = load_preferences(path)
    assert report.seen == oracle["rows"] and report.invalid == 0
    assert report.skipped_empty == oracle["empty"]
    assert report.skipped_duplicate == oracle["duplicate"]
    markers = [m for m in report.messages("defective") if "stray marker" in m]
    assert len(markers) == oracle["marker"]
    for pair in pairs:
        assert pair.prompt and not looks_truncated(pair.chosen)
        assert "<META_START>" not in pair.chosen + pair.rejected + pair.prompt
    if task in ("power-seeking", "wealth-seeking"):
        assert oracle["empty"] >= 1 and oracle["duplicate"] >= 1 and oracle["marker"] >= 1
        assert report.loaded >= 0.97 * report.seen
    if task == "jailbreak":
        # compliant answers were generated with a token budget: most are cut off
        assert report.skipped_defective > 0.8 * report.seen
        trimmed, trim_report = load_preferences(path, truncated="trim")
        assert trim_report.trimmed > 0.7 * report.seen and len(trimmed) > 0.7 * report.seen
        original = {p.metadata["source"]: p for p in load_preferences(path, truncated="keep")[0]}
        for pair in trimmed:
            full = original[pair.metadata["source"]]
            assert full.chosen.startswith(pair.chosen) and full.rejected.startswith(pair.rejected)
            assert not looks_truncated(pair.chosen) and not looks_truncated(pair.rejected)


@needs_bipo
def test_real_bipo_line_numbers_point_at_the_record() -> None:
    path = BIPO / "power-seeking" / "train.csv"
    _, report = load_preferences(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    for message in report.messages("empty"):
        line = int(message.split(":")[1])
        assert lines[line - 1].startswith(",")  # the record starts with an empty question


@needs_bipo
def test_real_bipo_ab_file_matches_the_pair_file() -> None:
    pairs, _ = load_preferences(BIPO / "power-seeking" / "test.csv")
    ab, report = load_preferences(BIPO / "power-seeking" / "test_infer.csv")
    assert report.invalid == 0
    assert [(p.prompt, p.chosen, p.rejected) for p in ab] == [
        (p.prompt, p.chosen, p.rejected) for p in pairs
    ]


def test_trim_to_sentence_ignores_list_numbers() -> None:
    assert trim_to_sentence("1. Mix it.\n2. Bake the") == "1. Mix it."
    assert trim_to_sentence("Step 2. then") is None
    assert trim_to_sentence("Done! And") == "Done!"
