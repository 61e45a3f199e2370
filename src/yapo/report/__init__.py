"""Results people read: tables (Markdown + JSON) and every PNG figure of the package.

The modules here only render what they are given (plain values, or result objects
typed for checking only), so training, evaluation and analysis can all draw through
them without an import cycle; gathering run folders into one report is
:mod:`yapo.gather`.
"""

from yapo.report.plots import plot_loss_curves, plot_overall_bars, plot_sweep
from yapo.report.tables import build_tables, tables_markdown

__all__ = [
    "build_tables",
    "plot_loss_curves",
    "plot_overall_bars",
    "plot_sweep",
    "tables_markdown",
]
