"""``yapo data``: check, convert and split datasets (thin wrappers over ``yapo.data``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer

from yapo.cli.options import csv_items
from yapo.data.split import Record, filter_countries

data_app = typer.Typer(
    name="data",
    help="Check, convert and split datasets (preference pairs, cultural MCQs, BLEnD).",
    no_args_is_help=True,
)

KINDS = ("preferences", "mcq", "open")
FormatOption = Annotated[
    str | None, typer.Option("--format", help="jsonl | json | csv | tsv | parquet | hf")
]
SplitOption = Annotated[str | None, typer.Option(help="Split of a Hugging Face dataset.")]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print the report as JSON.")]


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")


def _check_kind(kind: str) -> None:
    from yapo.errors import YapoError

    if kind not in KINDS:
        raise YapoError(f"--kind must be one of {', '.join(KINDS)}, got {kind!r}")


def _mcq_source(source: str) -> str | Path:
    """``demo`` names the shipped demo MCQs unless a file of that name exists."""
    if source in ("demo", "demo-open") and not Path(source).exists():
        from yapo.data.demo import demo_dataset_path

        return demo_dataset_path("mcq" if source == "demo" else "open")
    return source


@data_app.command("validate")
def validate_command(
    source: Annotated[str, typer.Argument(help="File, dataset folder or Hub id ('demo').")],
    kind: Annotated[str, typer.Option(help="preferences | mcq | open")] = "preferences",
    format: FormatOption = None,
    split: SplitOption = None,
    truncated: Annotated[
        str, typer.Option(help="Truncated answers (preferences): skip | trim | keep")
    ] = "skip",
    as_json: JsonFlag = False,
) -> None:
    """Load a dataset, print what was kept and skipped; exit 1 if records are invalid."""
    from yapo.data.cultural import load_mcq, load_open
    from yapo.data.preferences import load_preferences

    _check_kind(kind)
    target = _mcq_source(source)
    if kind == "preferences":
        _, report = load_preferences(
            target,
            format=format,
            split=split,
            strict=False,
            truncated=truncated,  # type: ignore[arg-type]
        )
    elif kind == "mcq":
        _, report = load_mcq(target, format=format, split=split, strict=False)
    else:
        _, report = load_open(target, format=format, split=split, strict=False)
    typer.echo(json.dumps(report.to_json(), indent=2) if as_json else report.summary())
    if report.invalid:
        raise typer.Exit(code=1)
    if not report.loaded:  # an empty file, or nothing usable in it: not "valid"
        typer.echo(f"{source}: no usable {kind} record (read {report.seen})", err=True)
        raise typer.Exit(code=1)


@data_app.command("convert-blend")
def convert_blend_command(
    blend_dir: Annotated[Path, typer.Option(help="BLEnD data folder (annotations/, questions/).")],
    countries: Annotated[str, typer.Option(help="Comma-separated, e.g. Spain,Mexico.")],
    out: Annotated[Path, typer.Option(help="Output MCQ file (.jsonl).")],
    languages: Annotated[str, typer.Option(help="Comma-separated: en, es, local.")] = "en",
    n_options: Annotated[int, typer.Option(help="Options per question.")] = 4,
    western: Annotated[str, typer.Option(help="US or UK answers as the Western option.")] = "US",
    min_votes: Annotated[int, typer.Option(help="Votes the correct answer needs.")] = 2,
    seed: Annotated[int, typer.Option(help="Seed of the option order.")] = 0,
    report: Annotated[Path | None, typer.Option(help="Also write the report as JSON.")] = None,
) -> None:
    """Convert BLEnD questions into cultural MCQs and print the per-country report."""
    from yapo._io import write_json
    from yapo.data.blend import convert_blend
    from yapo.data.files import write_jsonl

    items, blend_report = convert_blend(
        blend_dir,
        csv_items(countries),
        languages=tuple(csv_items(languages)),
        n_options=n_options,
        western=western,
        min_votes=min_votes,
        seed=seed,
    )
    write_jsonl(out, items)
    if report is not None:
        write_json(report, blend_report.to_json())
    typer.echo(blend_report.summary())
    typer.echo(f"wrote {len(items)} item(s) to {out}")


@data_app.command("to-pairs")
def to_pairs_command(
    mcq_file: Annotated[str, typer.Argument(help="MCQ file, dataset or 'demo'.")],
    out: Annotated[Path, typer.Option(help="Output preference pairs (.jsonl).")],
    policy: Annotated[
        str,
        typer.Option(
            help="western | other_country | all | model (the model's own preferred wrong option)"
        ),
    ] = "western",
    model: Annotated[
        str | None, typer.Option(help="Model that ranks the options for --policy model.")
    ] = None,
    settings: Annotated[
        str, typer.Option(help="Comma-separated: localized,nonlocalized.")
    ] = "localized,nonlocalized",
    response: Annotated[str, typer.Option(help="text | letter | letter_text")] = "text",
    style: Annotated[str, typer.Option(help="letters | parens")] = "letters",
    countries: Annotated[str | None, typer.Option(help="Only these countries.")] = None,
    languages: Annotated[str | None, typer.Option(help="Only these languages.")] = None,
    format: FormatOption = None,
    split: SplitOption = None,
) -> None:
    """Turn cultural MCQs into preference pairs (chosen = correct option)."""
    from yapo.data.cultural import load_mcq, mcq_to_preferences
    from yapo.data.files import write_jsonl

    items, report = load_mcq(_mcq_source(mcq_file), format=format, split=split)
    if report.skipped:
        typer.echo(report.summary())
    items = filter_countries(items, csv_items(countries) if countries else None)
    if languages:
        items = [i for i in items if i.language in csv_items(languages)]
    model_choices = None
    if policy == "model":
        from yapo.errors import YapoError
        from yapo.evaluate.mcq import McqConfig
        from yapo.evaluate.preferred import model_preferred_wrong
        from yapo.models.loading import load_model

        if model is None:
            raise YapoError("--policy model ranks options with a model: pass --model NAME")
        lm, tokenizer = load_model(model)
        model_choices = model_preferred_wrong(
            lm,
            tokenizer,
            items,
            McqConfig(choices=response),  # type: ignore[arg-type]
        )
    elif model is not None:
        from yapo.errors import YapoError

        raise YapoError("--model is used only with --policy model")
    pairs = mcq_to_preferences(
        items,
        policy=policy,  # type: ignore[arg-type]
        settings=csv_items(settings),  # type: ignore[arg-type]
        style=style,  # type: ignore[arg-type]
        response=response,  # type: ignore[arg-type]
        model_choices=model_choices,
    )
    from yapo.data.validation import rejected_option_census
    from yapo.errors import YapoError

    census = rejected_option_census(items, policy)
    if census.left_out:
        typer.echo(census.summary(), err=True)
    if not pairs:  # nothing to write: an empty file would look like success
        raise YapoError(f"no preference pairs written to {out}: {census.summary()}")
    write_jsonl(out, pairs)
    typer.echo(f"{len(items)} MCQ item(s) → {len(pairs)} preference pair(s) in {out}")


@data_app.command("split")
def split_command(
    source: Annotated[str, typer.Argument(help="File, dataset or 'demo'.")],
    train_out: Annotated[Path, typer.Option(help="Train records (.jsonl).")],
    test_out: Annotated[Path, typer.Option(help="Test records (.jsonl).")],
    kind: Annotated[str, typer.Option(help="preferences | mcq | open")] = "preferences",
    test_fraction: Annotated[float, typer.Option(help="Share of questions for test.")] = 0.2,
    seed: Annotated[int, typer.Option(help="Seed of the split.")] = 0,
    format: FormatOption = None,
    split: SplitOption = None,
) -> None:
    """Split records by question id so a question's variants stay on one side."""
    from yapo.data.cultural import load_mcq, load_open
    from yapo.data.preferences import load_preferences

    _check_kind(kind)
    target = _mcq_source(source)
    if kind == "preferences":
        pairs, _ = load_preferences(target, format=format, split=split)
        sizes = _write_split(pairs, test_fraction, seed, train_out, test_out)
    elif kind == "mcq":
        mcq, _ = load_mcq(target, format=format, split=split)
        sizes = _write_split(mcq, test_fraction, seed, train_out, test_out)
    else:
        questions, _ = load_open(target, format=format, split=split)
        sizes = _write_split(questions, test_fraction, seed, train_out, test_out)
    typer.echo(f"{sum(sizes)} record(s): {sizes[0]} → {train_out}, {sizes[1]} → {test_out}")


def _write_split(
    records: Sequence[Record], test_fraction: float, seed: int, train_out: Path, test_out: Path
) -> tuple[int, int]:
    from yapo.data.files import write_jsonl
    from yapo.data.split import split_by_question

    train, test = split_by_question(records, test_fraction, seed)
    write_jsonl(train_out, train)
    write_jsonl(test_out, test)
    return len(train), len(test)


@data_app.command("convert-paper")
def convert_paper_command(
    source: Annotated[str, typer.Argument(help="Hub id, dataset folder or file.")],
    out_dir: Annotated[Path, typer.Option(help="Folder for mcq/open/pairs .jsonl files.")],
    split: SplitOption = None,
    countries: Annotated[str | None, typer.Option(help="Only these countries.")] = None,
    format: FormatOption = None,
) -> None:
    """Read the YaPO paper's dataset into our MCQ, open-question and pair files."""
    from yapo.data.files import write_jsonl
    from yapo.data.paper import load_paper_hub_dataset

    data, report = load_paper_hub_dataset(
        source,
        split=split,
        format=format,
        countries=csv_items(countries) if countries else None,
        strict=False,
    )
    write_jsonl(out_dir / "mcq.jsonl", data.mcq)
    write_jsonl(out_dir / "open.jsonl", data.open)
    write_jsonl(out_dir / "pairs.jsonl", data.pairs)
    typer.echo(report.summary())
    typer.echo(
        f"{len(data.mcq)} MCQ item(s), {len(data.open)} open question(s), "
        f"{len(data.pairs)} pair(s) → {out_dir}"
    )


@data_app.command("demo")
def demo_command(
    kind: Annotated[str, typer.Option(help="mcq | open")] = "mcq",
    out: Annotated[Path | None, typer.Option(help="Copy the file here.")] = None,
) -> None:
    """Print the path of the shipped demo dataset (or copy it with --out)."""
    from yapo._io import write_text
    from yapo.data.demo import demo_dataset_path

    path = demo_dataset_path(kind)  # type: ignore[arg-type]
    if out is None:
        typer.echo(str(path))
        return
    write_text(out, path.read_text(encoding="utf-8"))
    typer.echo(f"wrote {out}")
