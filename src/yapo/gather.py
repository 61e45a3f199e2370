"""``yapo report RUN_DIRS...``: gather training, evaluation and sweep runs into one report.

Each folder is recognised by what it holds (a folder with none of these is searched one
level down, so ``yapo report runs/`` works):

* a training run — ``metrics.jsonl`` with ``step`` and ``loss`` fields (lines with a
  ``kind`` other than ``"train"`` are ignored) and usually a ``config.json`` naming the
  method: its loss curve goes into one plot with every other
  training run (YaPO vs BiPO), plus a table of when each run's smoothed loss first fell
  below 0.3 and 0.1 (the paper's convergence claim);
* an evaluation — ``results.json`` written by ``yapo eval``: Tables 1–3 and a bar chart
  of overall accuracy per condition;
* a sweep — ``sweep.json`` written by ``yapo sweep``: the λ curves and their table.

The report is ``report.md`` with its PNGs beside it, in the output folder.

This module sits above :mod:`yapo.evaluate` (it reads what evaluations wrote, as their
types) and :mod:`yapo.report` (whose tables and figures it fills); it is not part of
``yapo.report`` so that evaluation and training can draw their figures there without
an import cycle.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yapo._io import write_text
from yapo.errors import YapoError
from yapo.evaluate.metrics import MetricsSummary
from yapo.evaluate.sweep import sweep_markdown
from yapo.report.plots import moving_average, plot_loss_curves, plot_overall_bars, plot_sweep
from yapo.report.tables import build_tables, tables_markdown

THRESHOLDS = (0.3, 0.1)


@dataclass
class TrainingRun:
    folder: Path
    label: str
    method: str | None
    steps: list[float]
    losses: list[float]
    skipped_lines: int = 0
    finished: bool | None = None  # None: no run config.json to tell


@dataclass
class Found:
    training: list[TrainingRun] = field(default_factory=list)
    evaluations: list[tuple[Path, dict[str, Any]]] = field(default_factory=list)
    sweeps: list[tuple[Path, dict[str, Any]]] = field(default_factory=list)
    ignored: list[Path] = field(default_factory=list)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise YapoError(f"cannot read {path}: {exc}") from exc


def _method_of(folder: Path) -> str | None:
    for candidate in (folder / "config.json", folder / "vector" / "config.json"):
        if not candidate.is_file():
            continue
        try:
            config = json.loads(candidate.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(config, dict):
            for key in ("method", "kind_of_method"):
                if isinstance(config.get(key), str):
                    return str(config[key])
            for nested in config.values():
                if isinstance(nested, dict) and isinstance(nested.get("method"), str):
                    return str(nested["method"])
    return None


def read_training_run(folder: Path) -> TrainingRun:
    """Steps and losses of one training run (lines without both are skipped)."""
    steps: list[float] = []
    losses: list[float] = []
    skipped = 0
    with open(folder / "metrics.jsonl", encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if record.get("kind", "train") != "train":
                    continue  # evaluation and summary lines of the trainer's log
                step, loss = float(record["step"]), float(record["loss"])
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                skipped += 1
                continue
            if math.isfinite(loss):
                steps.append(step)
                losses.append(loss)
    method = _method_of(folder)
    label = f"{method} ({folder.name})" if method and method not in folder.name else folder.name
    return TrainingRun(folder, label, method, steps, losses, skipped, _finished_of(folder))


def _finished_of(folder: Path) -> bool | None:
    """``config.json``'s ``finished`` flag of a training run (``None`` without one)."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(config, dict) or "settings" not in config:
        return None
    return config.get("finished") is True


def find_runs(folders: list[Path]) -> Found:
    found = Found()
    for folder in folders:
        if not folder.is_dir():
            raise YapoError(f"not a folder: {folder}")
        if not _collect(folder, found):
            children = sorted(p for p in folder.iterdir() if p.is_dir())
            if not any([_collect(child, found) for child in children]):
                found.ignored.append(folder)
    _disambiguate(found.training)
    return found


def _disambiguate(runs: list[TrainingRun]) -> None:
    """Give runs that would share a label the name of the folder that tells them apart.

    ``yapo compare`` writes ``OUT/<country>/runs/<method>``: one "yapo" run per country,
    told apart by the folder above ``runs``.
    """
    for run in runs:
        twins = [r for r in runs if r.label == run.label]
        if len(twins) < 2:
            continue
        for twin in twins:
            parent = twin.folder.parent
            place = parent.parent if parent.name == "runs" else parent
            twin.label = f"{twin.label} · {place.name}"


def _collect(folder: Path, found: Found) -> bool:
    hit = False
    if (folder / "metrics.jsonl").is_file():
        run = read_training_run(folder)
        if run.losses:
            found.training.append(run)
            hit = True
    results = folder / "results.json"
    if results.is_file():
        data = _read_json(results)
        if isinstance(data, dict) and data.get("kind") == "yapo-eval":
            found.evaluations.append((folder, data))
            hit = True
    sweep = folder / "sweep.json"
    if sweep.is_file():
        data = _read_json(sweep)
        if isinstance(data, dict) and data.get("kind") == "yapo-sweep":
            found.sweeps.append((folder, data))
            hit = True
    return hit


def convergence_row(run: TrainingRun) -> list[str]:
    """Steps, final smoothed loss, and the first step the smoothed loss fell below each threshold."""
    window = max(1, min(50, len(run.losses) // 20))
    smooth = moving_average(run.losses, window)
    cells = [run.label, str(len(run.losses)), f"{smooth[-1]:.3f}", f"{min(smooth):.3f}"]
    for threshold in THRESHOLDS:
        step = next((s for s, v in zip(run.steps, smooth) if v < threshold), None)
        cells.append("never" if step is None else f"{step:g}")
    return cells


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "run"


def evaluation_tables(results: dict[str, Any]) -> dict[str, Any]:
    """Rebuild Tables 1–3 from a ``results.json`` (no need for ``tables.json``)."""
    mcq: dict[str, MetricsSummary] = {}
    open_ended: dict[str, MetricsSummary] = {}
    for condition in results.get("conditions", []):
        name = condition["condition"]["name"]
        if condition.get("mcq"):
            mcq[name] = MetricsSummary.from_json(condition["mcq"]["metrics"])
        if condition.get("open") and condition["open"].get("metrics"):
            open_ended[name] = MetricsSummary.from_json(condition["open"]["metrics"])
    return build_tables(mcq, open_ended)


def _evaluation_section(folder: Path, results: dict[str, Any], out: Path, index: int) -> str:
    tables = evaluation_tables(results)
    lines = [f"## Evaluation: `{folder}`", "", f"Model: `{results.get('model', '?')}`."]
    settings = results.get("settings", {})
    if settings.get("mcq"):
        mcq = settings["mcq"]
        lines.append(
            f"MCQ mode `{mcq.get('mode')}` (choices `{mcq.get('choices')}`, normalize "
            f"{mcq.get('normalize')}), {settings.get('n_mcq_items')} items."
        )
    if settings.get("judge"):
        judge = settings["judge"]
        lines.append(f"Judge: `{judge.get('model')}` ({judge.get('backend')}).")
    lines.append("")
    lines.append(tables_markdown(tables))
    notes = [
        "| Condition | MCQ unparseable | MCQ seq/s | judge failures |",
        "| --- | --- | --- | --- |",
    ]
    for condition in results.get("conditions", []):
        mcq = condition.get("mcq") or {}
        open_part = condition.get("open") or {}
        notes.append(
            f"| {condition['condition']['name']} | {mcq.get('unparseable', '–')} | "
            f"{(mcq.get('throughput') or {}).get('sequences_per_second', '–')} | "
            f"{open_part.get('judge_failures', '–')} |"
        )
    lines += ["", *notes]
    image = out / f"accuracy-{index}-{_slug(folder.name)}.png"
    if plot_overall_bars(tables, image) is not None:
        lines += ["", f"![overall accuracy]({image.name})"]
    return "\n".join(lines)


def build_report(folders: list[str | Path], out: str | Path) -> Path:
    """Write ``report.md`` (and its plots) for the given run folders into ``out``."""
    if not folders:
        raise YapoError("give at least one run folder")
    found = find_runs([Path(f) for f in folders])
    if not (found.training or found.evaluations or found.sweeps):
        raise YapoError(
            "none of the folders holds a training run (metrics.jsonl), an evaluation "
            "(results.json) or a sweep (sweep.json)"
        )
    target = Path(out)
    target.mkdir(parents=True, exist_ok=True)
    parts = ["# yapo report", ""]
    if found.training:
        curves = [(r.label, r.steps, r.losses) for r in found.training]
        plot_loss_curves(curves, target / "loss_curves.png")
        parts += [
            "## Training loss",
            "",
            "![loss curves](loss_curves.png)",
            "",
            "| Run | steps logged | final loss (smoothed) | min loss (smoothed) | "
            "first step < 0.3 | first step < 0.1 |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        parts += ["| " + " | ".join(convergence_row(r)) + " |" for r in found.training]
        unfinished = [r.label for r in found.training if r.finished is False]
        if unfinished:  # killed or still running: their curves are not final
            parts += ["", "**Unfinished** (killed or still running): " + ", ".join(unfinished)]
        parts.append("")
    for index, (folder, results) in enumerate(found.evaluations):
        parts += [_evaluation_section(folder, results, target, index), ""]
    for index, (folder, sweep) in enumerate(found.sweeps):
        image = target / f"sweep-{index}-{_slug(folder.name)}.png"
        plot_sweep(sweep, image)
        title = "λ chosen on validation questions" if sweep.get("selection") else "Sweep"
        parts += [
            f"## {title}: `{folder}`",
            "",
            f"![λ sweep]({image.name})",
            "",
            sweep_markdown(sweep),
        ]
    if found.ignored:
        parts += ["Folders with nothing to report: " + ", ".join(f"`{p}`" for p in found.ignored)]
    path = target / "report.md"
    write_text(path, "\n".join(parts).rstrip() + "\n")
    return path
