"""Entry point of the ``yapo`` command.

Each command group lives in its own module and is registered here; library errors
(:class:`yapo.YapoError`) become a one-line message and exit code 2.
"""

from __future__ import annotations

import sys

import typer

from yapo.cli.analysis import register as register_analysis
from yapo.cli.core import register as register_core
from yapo.cli.data import register as register_data
from yapo.cli.demo import register as register_demo
from yapo.cli.evaluate import register as register_evaluate
from yapo.cli.export import register as register_export
from yapo.cli.sae import register as register_sae
from yapo.cli.serve import register as register_serve
from yapo.cli.train import register as register_train
from yapo.errors import YapoError

app = typer.Typer(
    name="yapo",
    help="Learned sparse steering vectors (YaPO) and their baselines for Hugging Face LMs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
register_core(app)
register_analysis(app)
register_data(app)
register_sae(app)
register_evaluate(app)
register_train(app)
register_demo(app)
register_export(app)
register_serve(app)


def main() -> None:
    """Run the CLI, turning user errors into clear messages and a non-zero exit."""
    try:
        app()
    except YapoError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()
