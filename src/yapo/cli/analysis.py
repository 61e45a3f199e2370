"""Analysis and generalisation commands: ``patch``, ``inspect``, ``behaviour``, ``mmlu``."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Annotated, Any

import typer

from yapo.cli.inspect_options import (
    InspectCompareOption,
    InspectCoordinatesOption,
    InspectCorpusOption,
    InspectFieldOption,
    InspectMaxDocumentsOption,
    InspectModelOption,
    InspectOutOption,
    InspectSparsityOption,
)
from yapo.cli.options import (
    BatchOption,
    ChatOption,
    DeviceOption,
    DtypeOption,
    ModelOption,
    NoCacheOption,
    OutOption,
    SaeOption,
    ThreadsOption,
    csv_items,
    parse_chat,
)
from yapo.data.split import filter_countries
from yapo.errors import YapoError


def register(app: typer.Typer) -> None:
    app.command("patch")(patch_command)
    app.command("inspect")(inspect_command)
    app.command("behaviour")(behaviour_command)
    app.command("mmlu")(mmlu_command)


def _log(message: str) -> None:
    typer.echo(message, err=True)


def _threads(threads: int | None) -> None:
    if threads is not None:
        import torch

        if threads < 1:
            raise YapoError(f"--threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)


def _int_list(text: str | None, what: str) -> list[int] | None:
    if text is None or text.strip().lower() == "all":
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise YapoError(f"{what} must be comma-separated integers, got {text!r}") from None


def _float_list(text: str, what: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise YapoError(f"{what} must be comma-separated numbers, got {text!r}") from None
    if not values:
        raise YapoError(f"{what} is empty")
    return values


def _sample(items: list[Any], limit: int | None, seed: int) -> list[Any]:
    """A seeded sample of ``limit`` items in their original order (all when no limit)."""
    if limit is None or limit >= len(items):
        return items
    if limit < 1:
        raise YapoError(f"--limit must be at least 1, got {limit}")
    keep = sorted(random.Random(seed).sample(range(len(items)), limit))
    return [items[i] for i in keep]


def load_mcq_items(data: str, strict: bool = True) -> list[Any]:
    """Cultural MCQs from a file/dataset, or the demo set for ``"demo"``."""
    if data == "demo":
        from yapo.data.demo import load_demo_mcq

        items, report = load_demo_mcq()
    else:
        from yapo.data.cultural import load_mcq

        items, report = load_mcq(data, strict=strict)
    if report.problems:
        _log(report.summary())
    return list(items)


# ------------------------------------------------------------------ patch
def patch_command(
    out: OutOption,
    model: ModelOption = "default",
    data: Annotated[
        str, typer.Option("--data", "-d", help="Cultural MCQ file/dataset, or 'demo'.")
    ] = "demo",
    layers: Annotated[
        str | None, typer.Option(help="Comma-separated layers (default: every block).")
    ] = None,
    limit: Annotated[
        int | None, typer.Option(help="Patch a seeded sample of N items (default: all).")
    ] = None,
    countries: Annotated[
        str | None, typer.Option(help="Comma-separated countries to keep.")
    ] = None,
    languages: Annotated[
        str | None, typer.Option(help="Comma-separated languages to keep (en, ar, es, ...).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the --limit sample.")] = 0,
    choices: Annotated[
        str,
        typer.Option(help="Score the option texts (text, cloze) or the answer letters (letter)."),
    ] = "text",
    normalize: Annotated[
        bool, typer.Option(help="Per-token mean log-probabilities (long options).")
    ] = False,
    batch_size: BatchOption = 4,
    chat: ChatOption = "auto",
    dtype: DtypeOption = None,
    device: DeviceOption = None,
    threads: ThreadsOption = None,
    strict: Annotated[bool, typer.Option(help="Stop on invalid data records.")] = True,
) -> None:
    """Activation patching: the per-layer effect of the localized last-token state."""
    from yapo.analysis.patching import pairs_from_mcqs, patch_layers, save_patching
    from yapo.models import load_model

    _threads(threads)
    items = load_mcq_items(data, strict)
    items = filter_countries(items, csv_items(countries) if countries else None, source=data)
    if languages:
        wanted = set(csv_items(languages))
        items = [item for item in items if item.language in wanted]
        if not items:
            raise YapoError(f"no items with language in {sorted(wanted)} in {data}")
    items = _sample(items, limit, seed)
    lm, tokenizer = load_model(model, dtype=dtype, device=device)
    pairs = pairs_from_mcqs(
        tokenizer,
        items,
        chat=parse_chat(chat),  # type: ignore[arg-type]
        choices=choices,  # type: ignore[arg-type]
    )
    _log(f"patching {len(pairs)} items from {data} at every chosen layer of {model}")
    result = patch_layers(
        lm,
        tokenizer,
        pairs,
        layers=_int_list(layers, "--layers"),
        batch_size=batch_size,
        normalize=normalize,
        progress=True,
    )
    result.metadata.update(
        {
            "model": model,
            "data": data,
            "limit": limit,
            "seed": seed,
            "countries": countries,
            "languages": languages,
            "choices": choices,
            "normalize": normalize,
            "chat": chat,
        }
    )
    paths = save_patching(result, out, title=f"Activation patching: {model} on {data}")
    typer.echo(result.summary())
    _log(f"wrote {paths['json']} and {paths['png']}")


# ---------------------------------------------------------------- inspect
def inspect_command(
    vector: Annotated[Path, typer.Argument(help="Vector folder (or BiPO .pt file).")],
    top: Annotated[int, typer.Option(help="How many latents to list.")] = 20,
    sae: SaeOption = None,
    corpus: InspectCorpusOption = None,
    field: InspectFieldOption = None,
    compare: InspectCompareOption = None,
    model: InspectModelOption = None,
    layer: Annotated[int | None, typer.Option(help="Layer of a bare .pt vector.")] = None,
    coordinates: InspectCoordinatesOption = "signed",
    sparsity: InspectSparsityOption = 0.01,
    contexts: Annotated[int, typer.Option(help="Top contexts per latent.")] = 5,
    window: Annotated[int, typer.Option(help="Tokens shown each side of the peak.")] = 10,
    max_documents: InspectMaxDocumentsOption = None,
    max_length: Annotated[int, typer.Option(help="Truncate documents to N tokens.")] = 128,
    batch_size: BatchOption = 8,
    out: InspectOutOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    dtype: DtypeOption = None,
    device: DeviceOption = None,
    threads: ThreadsOption = None,
) -> None:
    """Top SAE latents of a vector, where they fire, and a comparison with another vector."""
    from yapo.analysis.features import inspect_vector
    from yapo.analysis.projection import COORDINATES

    _threads(threads)
    if coordinates not in COORDINATES:
        raise YapoError(f"--coordinates must be one of {', '.join(COORDINATES)}")
    main, other, sae_obj = _inspected_vectors(vector, compare, sae, layer)
    documents = lm = tokenizer = None
    if corpus:
        documents, lm, tokenizer = _corpus_and_model(
            corpus, field, max_documents, model or main.meta.model, dtype, device
        )
        main.check_fits(lm)
    report = inspect_vector(
        main,
        sae_obj,
        top=top,
        coordinates=coordinates,  # type: ignore[arg-type]
        sparsity=sparsity,
        model=lm,
        tokenizer=tokenizer,
        documents=documents,
        contexts=contexts,
        window=window,
        batch_size=batch_size,
        max_length=max_length,
        compare=other,
        names=_names(main, vector, other, compare),
    )
    _show_inspection(report, vector, out, as_json)


def _inspected_vectors(
    vector: Path, compare: Path | None, sae: str | None, layer: int | None
) -> tuple[Any, Any, Any]:
    """The vector, the one to compare it with (or None), and the SAE they are read in.

    Without ``--sae`` the SAE is the one the first sparse vector names.
    """
    from yapo.sae import load_sae
    from yapo.vectors import load_vector

    sae_obj = load_sae(sae) if sae else None
    main = load_vector(vector, sae=sae_obj, layer=layer)
    if sae_obj is None:
        sae_obj = getattr(main, "sae", None)
    other = None
    if compare is not None:
        other = load_vector(compare, sae=sae_obj, layer=layer)
        if sae_obj is None:
            sae_obj = getattr(other, "sae", None)
    return main, other, sae_obj


def _corpus_and_model(
    corpus: list[Path],
    field: str | None,
    max_documents: int | None,
    model_name: str | None,
    dtype: str | None,
    device: str | None,
) -> tuple[Any, Any, Any]:
    """The corpus documents and the model that shows where the latents fire on them."""
    from yapo.analysis.features import read_corpus
    from yapo.models import load_model

    documents = read_corpus(corpus, field)
    if max_documents is not None:
        documents = documents[:max_documents]
    if not model_name or model_name == "unknown":
        raise YapoError("this vector does not name its model; pass --model")
    lm, tokenizer = load_model(model_name, dtype=dtype, device=device)
    return documents, lm, tokenizer


def _show_inspection(report: Any, vector: Path, out: Path | None, as_json: bool) -> None:
    """Write OUT/inspect.json and features.html when asked; print JSON or the text table."""
    from yapo._io import write_json, write_text
    from yapo.analysis.features import render_html

    data = report.to_json()
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "inspect.json", data)
        write_text(out / "features.html", render_html(report, title=f"yapo inspect {vector}"))
        _log(f"wrote {out / 'inspect.json'} and {out / 'features.html'}")
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    typer.echo(_inspection_text(report))


def _names(main: Any, path: Path, other: Any, other_path: Path | None) -> tuple[str, str]:
    """Labels for a comparison: the methods, or the run folders when the methods agree."""
    if other is None or other_path is None:
        return (main.meta.method, "other")
    if main.meta.method != other.meta.method:
        return (main.meta.method, other.meta.method)

    def folder(p: Path) -> str:
        return p.parent.name if p.name == "vector" and p.parent.name else p.name

    first, second = folder(path), folder(other_path)
    return (first, second) if first != second else (str(path), str(other_path))


def _inspection_text(report: Any) -> str:
    lines = [
        f"{report.vector['method']} vector ({report.vector['kind']}), layer "
        f"{report.vector['layer']}, {report.vector['nonzero']} non-zero, coordinates: "
        f"{report.coordinates}"
    ]
    if report.fit is not None:
        lines.append(
            f"decoder fit: {report.fit.nonzero} latents, relative residual "
            f"{report.fit.relative_residual:.3f}"
        )
    activity = report.corpus.latents if report.corpus else {}
    lines.append(f"{'rank':>4} {'latent':>7} {'value':>10} {'dec.norm':>9} {'density':>9}  link")
    for rank, latent in enumerate(report.latents, 1):
        act = activity.get(latent.index)
        density = f"{act.density:.4%}" if act else ""
        lines.append(
            f"{rank:>4} {latent.index:>7} {latent.value:>+10.4g} {latent.decoder_norm:>9.3g} "
            f"{density:>9}  {latent.neuronpedia or ''}"
        )
        if act and act.contexts:
            best = act.contexts[0]
            text = "".join(
                f"[[{t}]]" if i == best.center else t for i, t in enumerate(best.tokens)
            ).replace("\n", " ")
            lines.append(f"{'':>13} top context ({best.activation:.3g}): {text}")
    if report.comparison is not None:
        c = report.comparison
        lines.append(
            f"compare {c.names[0]} vs {c.names[1]}: cosine in SAE space {c.cosine_sae:.4f}, "
            f"in the residual stream {c.cosine_residual:.4f}; top-{c.top_k} shared "
            f"{len(c.shared)} (Jaccard {c.jaccard:.3f}); shared latents {c.shared[:10]}"
        )
    return "\n".join(lines)


# -------------------------------------------------------------- behaviour
def behaviour_command(
    task: Annotated[
        str,
        typer.Argument(
            help="power-seeking | wealth-seeking | hallucination | jailbreak, or a CSV file."
        ),
    ],
    out: OutOption,
    model: ModelOption = "default",
    data: Annotated[
        Path | None,
        typer.Option(
            "--data", "-d", help="BiPO data folder (holding <task>/test_infer.csv) or a CSV file."
        ),
    ] = None,
    vector: Annotated[Path | None, typer.Option(help="Vector folder (or BiPO .pt).")] = None,
    sae: SaeOption = None,
    layer: Annotated[int | None, typer.Option(help="Layer of a bare .pt vector.")] = None,
    multipliers: Annotated[
        str, typer.Option(help="Comma-separated multipliers λ (0 = unsteered).")
    ] = "-2,-1,0,1,2",
    direction: Annotated[int, typer.Option(help="+1 toward the behaviour, -1 away.")] = 1,
    limit: Annotated[int | None, typer.Option(help="Use a seeded sample of N items.")] = None,
    seed: Annotated[int, typer.Option(help="Seed for --limit and A/B placement.")] = 0,
    open_ended: Annotated[
        bool, typer.Option("--open-ended", help="Also generate answers and judge them 1–4.")
    ] = False,
    judge_url: Annotated[str | None, typer.Option(help="OpenAI-compatible judge URL.")] = None,
    judge_model: Annotated[str | None, typer.Option(help="Judge model name.")] = None,
    judge_local: Annotated[
        str | None, typer.Option(help="A local HF model (Hub id/folder) as the judge.")
    ] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens per open-ended answer.")] = 128,
    chat: ChatOption = "auto",
    batch_size: BatchOption = 16,
    dtype: DtypeOption = None,
    device: DeviceOption = None,
    threads: ThreadsOption = None,
    no_cache: NoCacheOption = False,
) -> None:
    """BiPO's behaviour tasks: A/B accuracy across multipliers (and judged open-ended answers)."""
    _threads(threads)
    config = behaviour_config(
        _float_list(multipliers, "--multipliers"),
        direction,
        chat,
        batch_size,
        max_new_tokens,
        seed,
        no_cache,
    )
    judge = (judge_url, judge_model, judge_local) if open_ended else None
    run_behaviour_task(
        task, data, out, model, vector, sae, layer, config, limit, judge, dtype, device
    )


def behaviour_config(
    multipliers: list[float],
    direction: int,
    chat: str,
    batch_size: int,
    max_new_tokens: int,
    seed: int,
    no_cache: bool,
) -> Any:
    """The :class:`BehaviourConfig` of the behaviour options (``behaviour`` and ``eval --task``)."""
    from yapo.evaluate.behaviour import BehaviourConfig

    return BehaviourConfig(
        multipliers=multipliers,
        direction=direction,
        chat=parse_chat(chat),  # type: ignore[arg-type]
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        seed=seed,
        shared_lower=not no_cache,
    )


def run_behaviour_task(
    task: str,
    data: Path | None,
    out: Path,
    model: str,
    vector: Path | None,
    sae: str | None,
    layer: int | None,
    config: Any,
    limit: int | None,
    judge_spec: tuple[str | None, str | None, str | None] | None,
    dtype: str | None,
    device: str | None,
) -> None:
    """One behaviour evaluation (``yapo behaviour`` and ``yapo eval --task``): load the
    task, the vector and the model, score every multiplier of ``config``, write and print.

    ``judge_spec`` is ``(url, model, local)`` for judged open-ended answers, or ``None``.
    """
    from yapo.data.bipo import load_behaviour
    from yapo.evaluate.behaviour import run_behaviour, save_behaviour
    from yapo.evaluate.judge.behaviour import make_behaviour_judge
    from yapo.models import load_model
    from yapo.sae import load_sae
    from yapo.vectors import load_vector

    items, report = load_behaviour(task, data)
    if report.problems:
        _log(report.summary())
    items = _sample(items, limit, config.seed)
    steering = None
    if vector is not None:
        steering = load_vector(vector, sae=load_sae(sae) if sae else None, layer=layer)
    judge = None
    if judge_spec is not None:
        judge = make_behaviour_judge(*judge_spec, dtype=dtype, device=device)
    lm, tokenizer = load_model(model, dtype=dtype, device=device)
    result = run_behaviour(lm, tokenizer, items, steering, config, judge=judge, log=_log)
    result.metadata.update({"model": model, "vector": str(vector) if vector else None})
    paths = save_behaviour(result, out)
    typer.echo(result.summary())
    _log(f"wrote {', '.join(str(p) for p in paths.values())}")


# ------------------------------------------------------------------- mmlu
def mmlu_command(
    data: Annotated[
        list[Path], typer.Argument(help="MMLU CSV/JSONL/Parquet files or folders of them.")
    ],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write mmlu.json here.")] = None,
    model: ModelOption = "default",
    vector: Annotated[Path | None, typer.Option(help="Vector folder (or BiPO .pt).")] = None,
    sae: SaeOption = None,
    layer: Annotated[int | None, typer.Option(help="Layer of a bare .pt vector.")] = None,
    multipliers: Annotated[
        str, typer.Option(help="Comma-separated λ to evaluate besides 0 (unsteered).")
    ] = "1",
    direction: Annotated[int, typer.Option(help="+1 toward the behaviour, -1 away.")] = 1,
    limit: Annotated[int | None, typer.Option(help="Use a seeded sample of N questions.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the --limit sample.")] = 0,
    shots: Annotated[
        int, typer.Option(help="Few-shot examples per question, from the same subject.")
    ] = 0,
    dev: Annotated[
        list[Path] | None,
        typer.Option(help="MMLU dev files for the few-shot examples (default: other questions)."),
    ] = None,
    chat: ChatOption = "auto",
    batch_size: BatchOption = 16,
    dtype: DtypeOption = None,
    device: DeviceOption = None,
    threads: ThreadsOption = None,
    no_cache: NoCacheOption = False,
) -> None:
    """General knowledge kept: MMLU-format accuracy unsteered vs steered, and the delta."""
    from yapo._io import write_json
    from yapo.data.mmlu import load_mmlu
    from yapo.evaluate.mmlu import run_mmlu
    from yapo.models import load_model
    from yapo.sae import load_sae
    from yapo.vectors import load_vector

    _threads(threads)
    questions, report = load_mmlu(data)
    if report.problems:
        _log(report.summary())
    questions = _sample(questions, limit, seed)
    steering = None
    if vector is not None:
        steering = load_vector(vector, sae=load_sae(sae) if sae else None, layer=layer)
    dev_questions = load_mmlu(dev)[0] if dev else None
    lm, tokenizer = load_model(model, dtype=dtype, device=device)
    result = run_mmlu(
        lm,
        tokenizer,
        questions,
        vector=steering,
        multipliers=_float_list(multipliers, "--multipliers") if steering else [],
        direction=direction,
        shots=shots,
        dev=dev_questions,
        chat=parse_chat(chat),  # type: ignore[arg-type]
        batch_size=batch_size,
        shared_lower=not no_cache,
    )
    result.metadata.update({"model": model, "vector": str(vector) if vector else None})
    if out is not None:
        write_json(Path(out) / "mmlu.json", result.to_json())
        _log(f"wrote {Path(out) / 'mmlu.json'}")
    typer.echo(result.summary())
