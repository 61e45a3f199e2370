"""``yapo demo``: the main job on the embedded model (see :mod:`yapo.demo`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_command)


def demo_command(
    out: Annotated[Path, typer.Option(help="Folder for runs, evaluation and report.")] = Path(
        "runs/demo"
    ),
    country: Annotated[str, typer.Option(help="Egypt, Morocco, Mexico or Spain.")] = "Egypt",
    languages: Annotated[
        str | None, typer.Option(help="Comma-separated, e.g. en,ar (default: both).")
    ] = None,
    methods: Annotated[str, typer.Option(help="Comma-separated subset of yapo,bipo,caa,sas.")] = (
        "yapo,bipo,caa,sas"
    ),
    epochs: Annotated[int | None, typer.Option(help="Epochs for YaPO and BiPO.")] = None,
    questions: Annotated[
        int | None,
        typer.Option(help="Questions of the country to use, half held out (0 = all 42)."),
    ] = None,
    multiplier: Annotated[float, typer.Option(help="λ at evaluation.")] = 1.0,
    model: Annotated[str, typer.Option(help="Model name (default: the embedded one).")] = (
        "default"
    ),
    sae: Annotated[str, typer.Option(help="SAE reference (default: the shipped one).")] = (
        "default"
    ),
    layer: Annotated[
        int | None, typer.Option(help="Steering layer (default: the SAE's layer).")
    ] = None,
    quick: Annotated[bool, typer.Option(help="Reduced run (what CI does).")] = False,
) -> None:
    """Train YaPO, BiPO, CAA and SAS for one country and compare them with no steering."""
    from yapo.demo import DemoSettings, parse_languages, parse_methods, run_demo

    local = {"Egypt": "ar", "Morocco": "ar", "Mexico": "es", "Spain": "es"}
    chosen_languages = (
        tuple(parse_languages(languages)) if languages else ("en", local.get(country, "en"))
    )
    overrides: dict[str, object] = {
        "country": country,
        "languages": chosen_languages,
        "methods": parse_methods(methods),
        "multiplier": multiplier,
        "model": model,
        "sae": sae,
        "layer": layer,
    }
    if epochs is not None:
        overrides["epochs"] = epochs
    if questions is not None:
        overrides["max_questions"] = questions or None
    settings = DemoSettings.quick(**overrides) if quick else DemoSettings(**overrides)  # type: ignore[arg-type]
    result = run_demo(out, settings, log=lambda m: typer.echo(m, err=True))
    typer.echo(result.table)
    typer.echo(f"demo finished in {result.seconds:.0f} s; report: {result.report}")
