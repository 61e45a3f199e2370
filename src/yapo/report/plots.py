"""PNG plots: training loss curves, multiplier sweeps, overall accuracy per condition.

Two loss figures: :func:`plot_loss` draws one run's steps (both directions, its
evaluations) into the run folder's ``loss.png`` while it trains; :func:`plot_loss_curves`
puts several runs side by side for a report.

Figures are made with matplotlib's object API on the Agg canvas (no pyplot, no display,
no global state), so plotting works on headless machines and from threads, and each PNG
is written atomically.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from yapo._io import atomic_path

_METRIC_TITLES = {
    "localized": "MCQ accuracy, localized (%)",
    "nonlocalized": "MCQ accuracy, non-localized (%)",
    "mixed": "MCQ accuracy, mixed (%)",
    "rca": "RCA (%)",
    "pnlg": "PNLG",
}


def new_figure(width: float, height: float, dpi: float | None = 110) -> Any:
    """A figure on its own Agg canvas; ``dpi=None`` keeps matplotlib's default (100).

    Every figure of the package is made here, so none touches pyplot's global state.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure: Any, path: str | Path, dpi: float | None = None) -> Path:
    """Lay out ``figure`` and write it as a PNG atomically (a reader never sees half a
    file); ``dpi`` ``None`` keeps the figure's own."""
    target = Path(path)
    figure.tight_layout()
    with atomic_path(target) as tmp:
        if dpi is None:
            figure.savefig(tmp, format="png")
        else:
            figure.savefig(tmp, format="png", dpi=dpi)
    return target


def moving_average(values: Sequence[float], window: int) -> list[float]:
    """Trailing mean over ``window`` points (shorter at the start)."""
    out: list[float] = []
    total = 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def plot_loss_curves(
    curves: Sequence[tuple[str, Sequence[float], Sequence[float]]],
    path: str | Path,
    *,
    window: int | None = None,
    title: str = "Training loss",
) -> Path:
    """One line per run: ``(label, steps, losses)``; raw losses faint, smoothed solid.

    The bi-directional loss alternates between d = +1 and d = −1 steps, so raw curves
    are jagged; the smoothed line (trailing mean) is what to compare across methods.
    """
    figure = new_figure(7.0, 4.2)
    axes = figure.add_subplot(1, 1, 1)
    colors = _colors(len(curves))
    for (label, steps, losses), color in zip(curves, colors):
        if not losses:
            continue
        size = window or max(1, min(50, len(losses) // 20))
        axes.plot(steps, losses, color=color, alpha=0.25, linewidth=0.8)
        axes.plot(
            steps, moving_average(list(losses), size), color=color, label=label, linewidth=1.8
        )
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    if curves:
        axes.legend()
    return save_figure(figure, path)


def plot_sweep(
    sweep: Mapping[str, Any],
    path: str | Path,
    metrics: Sequence[str] = ("mixed", "rca"),
) -> Path:
    """Overall metric vs multiplier λ, one line per method, with interval bands.

    A λ-selection sweep (with fluency per point) gets a third panel, the unsteered
    model's NLL per token of the steered generations, and a star at each chosen λ, so
    accuracy and fluency against λ are read side by side.
    """
    methods = sweep["methods"]
    selection = sweep.get("selection") or {}
    panels = len(metrics) + (1 if selection else 0)
    figure = new_figure(5.0 * panels, 4.0)
    colors = _colors(len(methods))
    if selection:
        _fluency_panel(figure.add_subplot(1, panels, panels), methods, selection, colors)
    for panel, metric in enumerate(metrics, start=1):
        axes = figure.add_subplot(1, panels, panel)
        scale = 1.0 if metric == "pnlg" else 100.0
        for (name, method), color in zip(methods.items(), colors):
            xs, ys, lows, highs = [], [], [], []
            for point in method["points"]:
                cell = point["overall"][metric]
                if cell.get("value") is None:
                    continue
                xs.append(point["multiplier"])
                ys.append(cell["value"] * scale)
                lows.append(
                    (cell.get("low") if cell.get("low") is not None else cell["value"]) * scale
                )
                highs.append(
                    (cell.get("high") if cell.get("high") is not None else cell["value"]) * scale
                )
            axes.plot(xs, ys, marker="o", color=color, label=name)
            axes.fill_between(xs, lows, highs, color=color, alpha=0.15)
            chosen = selection.get(name, {}).get("multiplier")
            if chosen in xs:
                axes.plot([chosen], [ys[xs.index(chosen)]], marker="*", ms=14, color=color)
        axes.axvline(0.0, color="grey", linewidth=0.8, linestyle=":")
        axes.set_xlabel("multiplier λ")
        axes.set_title(_METRIC_TITLES.get(metric, metric))
        axes.grid(alpha=0.3)
        axes.legend()
    return save_figure(figure, path)


def _fluency_panel(
    axes: Any, methods: Mapping[str, Any], selection: Mapping[str, Any], colors: list[Any]
) -> None:
    for (name, method), color in zip(methods.items(), colors):
        points = [p for p in method["points"] if p.get("fluency") is not None]
        xs = [p["multiplier"] for p in points]
        ys = [p["fluency"]["nll"] for p in points]
        finite = [(x, y) for x, y in zip(xs, ys) if math.isfinite(y)]
        if finite:
            axes.plot(*zip(*finite), marker="o", color=color, label=name)
        chosen = selection.get(name, {}).get("multiplier")
        if chosen in xs and math.isfinite(ys[xs.index(chosen)]):
            axes.plot([chosen], [ys[xs.index(chosen)]], marker="*", ms=14, color=color)
    axes.axvline(0.0, color="grey", linewidth=0.8, linestyle=":")
    axes.set_xlabel("multiplier λ")
    axes.set_title("Fluency: unsteered NLL/token of steered text")
    axes.grid(alpha=0.3)
    axes.legend()


def plot_overall_bars(tables: Mapping[str, Any], path: str | Path) -> Path | None:
    """Overall MCQ accuracy (loc / non-loc / mixed) per condition with interval bars."""
    table = tables.get("table1")
    if not table:
        return None
    overall = next((r for r in table["rows"] if r["level"] == "overall"), None)
    if overall is None:
        return None
    conditions = list(dict.fromkeys(c["condition"] for c in table["columns"]))
    metrics = ["localized", "nonlocalized", "mixed"]
    figure = new_figure(max(5.0, 1.6 * len(conditions) + 2.0), 4.0)
    axes = figure.add_subplot(1, 1, 1)
    width = 0.8 / len(metrics)
    for k, (metric, color) in enumerate(zip(metrics, _colors(len(metrics)))):
        xs, ys, errors_low, errors_high = [], [], [], []
        for i, condition in enumerate(conditions):
            cell = overall["cells"].get(f"{condition}|mcq|{metric}")
            if not cell or cell.get("value") is None:
                continue
            value = 100 * cell["value"]
            low = 100 * cell["low"] if cell.get("low") is not None else value
            high = 100 * cell["high"] if cell.get("high") is not None else value
            xs.append(i + (k - 1) * width)
            ys.append(value)
            errors_low.append(max(0.0, value - low))
            errors_high.append(max(0.0, high - value))
        axes.bar(
            xs, ys, width, yerr=[errors_low, errors_high], color=color, label=metric, capsize=3
        )
    axes.set_xticks(range(len(conditions)))
    axes.set_xticklabels(conditions, rotation=15)
    axes.set_ylabel("MCQ accuracy (%)")
    axes.grid(axis="y", alpha=0.3)
    axes.legend()
    return save_figure(figure, path)


def _colors(n: int) -> list[Any]:
    from matplotlib import colormaps

    palette = colormaps["tab10"]
    return [palette(i % 10) for i in range(max(n, 1))]


def plot_loss(records: list[dict[str, Any]], path: Path, title: str) -> None:
    """Training loss per step (by direction, with a running mean) and evaluation loss."""
    train = [r for r in records if r.get("kind") == "train"]
    evals = [r for r in records if r.get("kind") == "eval"]
    fig = new_figure(7, 4, dpi=None)
    ax = fig.subplots()
    for d, colour in ((1, "tab:blue"), (-1, "tab:orange")):
        points = [(r["step"], r["loss"]) for r in train if r.get("d") == d]
        if points:
            xs, ys = zip(*points)
            ax.scatter(xs, ys, s=6, alpha=0.4, color=colour, label=f"train loss, d = {d:+d}")
    if train:
        window = max(1, min(25, len(train) // 10))
        losses = [r["loss"] for r in train]
        smooth = [
            sum(losses[max(0, i - window + 1) : i + 1])
            / len(losses[max(0, i - window + 1) : i + 1])
            for i in range(len(losses))
        ]
        ax.plot(
            [r["step"] for r in train],
            smooth,
            color="black",
            lw=1.2,
            label=f"running mean ({window} steps)",
        )
    for key, style in (("eval_loss_d+1", "s--"), ("eval_loss_d-1", "o--")):
        points = [(r["step"], r[key]) for r in evals if key in r]
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, style, ms=4, label=key.replace("_", " "))
    ax.axhline(0.1, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("bi-directional DPO loss")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.legend(fontsize=7)
    save_figure(fig, path, dpi=110)
