"""``yapo export`` / ``yapo import``: llama.cpp control vectors (GGUF)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

FORMATS = ("llama.cpp",)


def register(app: typer.Typer) -> None:
    app.command("export")(export_command)
    app.command("import")(import_command)


def _texts(text: list[str] | None, text_file: Path | None) -> list[str]:
    from yapo.errors import YapoError

    texts = list(text or [])
    if text_file is not None:
        try:
            lines = text_file.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise YapoError(f"cannot read --text-file {text_file}: {exc}") from exc
        texts += [line for line in lines if line.strip()]
    return texts


def export_command(
    vector: Annotated[str, typer.Argument(help="Vector folder, BiPO .pt, or Hub owner/name.")],
    out: Annotated[Path, typer.Option(help="GGUF file to write.")],
    format: Annotated[str, typer.Option("--format", help="Target format: llama.cpp.")] = (
        "llama.cpp"
    ),
    multiplier: Annotated[float, typer.Option(help="Strength λ baked into the file.")] = 1.0,
    direction: Annotated[int, typer.Option(help="+1 toward the behaviour, -1 away.")] = 1,
    linearize: Annotated[
        bool, typer.Option(help="Sparse vectors: export a measured dense approximation.")
    ] = False,
    method: Annotated[
        str, typer.Option(help="Linearization: mean (least squares) | positive (ReLU(λv)·W_dec).")
    ] = "mean",
    text: Annotated[
        list[str] | None, typer.Option(help="Text to measure the linearization on (repeatable).")
    ] = None,
    text_file: Annotated[
        Path | None, typer.Option(help="File with one text per line, for --linearize.")
    ] = None,
    model: Annotated[str, typer.Option("--model", "-m", help="Model, for --linearize.")] = (
        "default"
    ),
    sae: Annotated[str | None, typer.Option(help="SAE for a sparse vector.")] = None,
    layer: Annotated[int | None, typer.Option(help="Layer for a bare .pt vector.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Write a vector as a llama.cpp control vector (use with llama.cpp --control-vector)."""
    from yapo.errors import YapoError
    from yapo.export import export_llamacpp, layer_states
    from yapo.export import linearize as make_linearization
    from yapo.sae import load_sae
    from yapo.vectors import SparseVector, load_vector

    if format not in FORMATS:
        raise YapoError(f"--format must be one of {', '.join(FORMATS)}, got {format!r}")
    if method not in ("mean", "positive"):
        raise YapoError("--method must be 'mean' or 'positive'")
    loaded = load_vector(vector, sae=load_sae(sae) if sae else None, layer=layer)
    linearization = None
    if isinstance(loaded, SparseVector) and linearize:
        texts = _texts(text, text_file)
        exact = loaded.to_dense_equivalent(multiplier, direction) is not None
        if not texts and not exact:
            raise YapoError("--linearize needs --text or --text-file to measure the error on")
        hidden = None
        if texts:
            from yapo.models import load_model

            lm, tokenizer = load_model(model)
            loaded.check_fits(lm)
            hidden = layer_states(lm, tokenizer, texts, loaded.layer)
        linearization = make_linearization(
            loaded,
            hidden,
            multiplier=multiplier,
            direction=direction,
            method=method,  # type: ignore[arg-type]
        )
    report = export_llamacpp(
        loaded, out, multiplier=multiplier, direction=direction, linearization=linearization
    )
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2))
        return
    typer.echo(
        f"wrote {report.path}: direction.{report.index} (added after block {report.layer}, "
        f"norm {report.norm:.4g}, strength {report.scale:g} baked in)"
    )
    for note in report.notes:
        typer.echo(note)
    if report.linearization is not None and report.linearization["method"] != "exact":
        lin = report.linearization
        typer.echo(
            f"relative error vs the exact sparse edit: {lin['relative_error']:.4f} "
            f"(ReLU(λv)·W_dec alone: {lin['positive_part_relative_error']:.4f})"
        )
    typer.echo(f"llama.cpp: llama-cli -m MODEL.gguf --control-vector {report.path}")


def import_command(
    gguf_file: Annotated[Path, typer.Argument(help="Control-vector GGUF (yapo, repeng, ...).")],
    out: Annotated[Path, typer.Option(help="Vector folder to write.")],
    layer: Annotated[
        int | None, typer.Option(help="Which direction.<k> to take when the file has several.")
    ] = None,
) -> None:
    """Read a llama.cpp control vector back as a dense yapo vector folder."""
    from yapo.export import import_llamacpp

    vector = import_llamacpp(gguf_file, layer=layer)
    vector.save(out)
    typer.echo(f"wrote {out}: {vector!r}")
