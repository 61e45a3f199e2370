"""Reports: result tables (Markdown + JSON), PNG plots, and gathering runs into one report."""

from yapo.report.gather import build_report
from yapo.report.plots import plot_loss_curves, plot_overall_bars, plot_sweep
from yapo.report.tables import build_tables, tables_markdown

__all__ = [
    "build_report",
    "build_tables",
    "plot_loss_curves",
    "plot_overall_bars",
    "plot_sweep",
    "tables_markdown",
]
