"""Steering strength sweeps: MCQ accuracy, RCA and PNLG against the multiplier λ.

For each vector and each λ the MCQs are answered with ``vector.apply(model, λ,
direction)``; λ = 0 is the unsteered model, evaluated once and shared by every method
(it is the same model). Negative λ steers away from the behaviour. In ``loglik`` mode
all points are scored together, sharing the blocks below each vector's layer
(:mod:`yapo.evaluate.conditions`). Written outputs:
``sweep.json`` (every point with its per-country/language/overall metrics and
intervals), ``sweep.md`` (overall values per method and λ) and ``sweep.png``
(accuracy and RCA vs λ, one line per method, with interval bands).
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from yapo._io import write_json, write_text
from yapo._version import __version__
from yapo.data.records import CulturalMCQ
from yapo.errors import YapoError
from yapo.evaluate.benchmark import Condition, MetricConfig
from yapo.evaluate.fluency import Fluency
from yapo.evaluate.mcq import McqConfig, McqRun, run_mcq_conditions, run_mcq_steered
from yapo.evaluate.metrics import MetricsSummary
from yapo.vectors.base import SteeringVector
from yapo.vectors.steer import Steer

Log = Callable[[str], None]


def _quiet(_message: str) -> None:
    return None


def parse_multipliers(text: str) -> list[float]:
    """``"-2,-1,0,1,2"`` → ``[-2.0, -1.0, 0.0, 1.0, 2.0]`` (sorted, duplicates removed)."""
    values: list[float] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            value = float(part)
        except ValueError:
            raise YapoError(
                f"cannot read {part!r} as a multiplier; give numbers separated by commas, "
                "e.g. --multipliers -2,-1,0,1,2"
            ) from None
        if not math.isfinite(value):  # nan, inf, and 1e400 (which float() makes inf)
            raise YapoError(f"multiplier {part!r} is not a finite number")
        values.append(value)
    if not values:
        raise YapoError("give at least one multiplier, e.g. --multipliers -2,-1,0,1,2")
    return sorted(set(values))


@dataclass
class SweepPoint:
    multiplier: float
    metrics: MetricsSummary
    unparseable: int
    throughput: dict[str, float]
    fluency: Fluency | None = None  # filled by λ selection (yapo.evaluate.selection)
    admissible: bool = True
    excluded_because: str | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "multiplier": self.multiplier,
            "overall": {k: v.to_json() for k, v in self.metrics.overall.metrics.items()},
            "unparseable": self.unparseable,
            "throughput": self.throughput,
            "metrics": self.metrics.to_json(),
        }
        if self.fluency is not None:
            data["fluency"] = self.fluency.to_json()
            data["admissible"] = self.admissible
            data["excluded_because"] = self.excluded_because
        return data


@dataclass
class SweepResult:
    model: str
    multipliers: list[float]
    methods: dict[str, list[SweepPoint]]
    conditions: dict[str, dict[str, Any]]
    settings: dict[str, Any] = field(default_factory=dict)
    selection: dict[str, dict[str, Any]] | None = None  # name -> the chosen λ

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "yapo-sweep",
            "model": self.model,
            "multipliers": self.multipliers,
            "settings": self.settings,
            "methods": {
                name: {
                    "condition": self.conditions[name],
                    "points": [p.to_json() for p in points],
                }
                for name, points in self.methods.items()
            },
            **({"selection": self.selection} if self.selection is not None else {}),
        }


def run_sweep(
    model: nn.Module,
    tokenizer: Any,
    items: Sequence[CulturalMCQ],
    vectors: Sequence[tuple[str, SteeringVector, str | None]],
    multipliers: Sequence[float],
    *,
    direction: int = 1,
    mcq_config: McqConfig | None = None,
    metrics: MetricConfig | None = None,
    settings: dict[str, Any] | None = None,
    log: Log = _quiet,
) -> SweepResult:
    """Evaluate every vector at every multiplier (λ = 0 once, shared)."""
    if not vectors:
        raise YapoError("a sweep needs at least one vector (--vector DIR)")
    names = [name for name, _, _ in vectors]
    if len(set(names)) != len(names):
        raise YapoError("two vectors share a name; name them with NAME=DIR")
    mcq_config = mcq_config or McqConfig()
    mcq_config.validate()
    metrics = metrics or MetricConfig()
    for _, vector, _ in vectors:  # refuse a misfit vector before any work
        vector.check_fits(model)
    grid = sorted({float(m) for m in multipliers})
    baseline: McqRun | None = None
    wanted = {(name, m): Steer(vector, m, direction) for name, vector, _ in vectors for m in grid}
    shared = _shared_runs(model, tokenizer, items, wanted, mcq_config)
    methods: dict[str, list[SweepPoint]] = {}
    conditions: dict[str, dict[str, Any]] = {}
    for name, vector, source in vectors:
        conditions[name] = Condition(name, vector, 1.0, direction, source).describe()
        conditions[name].pop("multiplier")
        points = []
        for multiplier in grid:
            if (name, multiplier) in shared:
                run = shared[(name, multiplier)]
            elif multiplier == 0.0 and baseline is not None:
                run = baseline
            else:
                steer = wanted[(name, multiplier)]
                run = run_mcq_steered(model, tokenizer, items, mcq_config, steer)
                if multiplier == 0.0:
                    baseline = run
            points.append(_point(f"{name} λ={multiplier:g}", multiplier, run, metrics, log))
        methods[name] = points
    all_settings = {
        "library_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "direction": direction,
        "mcq": mcq_config.to_json(),
        "metrics": asdict(metrics),
        "n_mcq_items": len(items),
        **(settings or {}),
    }
    model_name = str(getattr(model, "name_or_path", "") or "unknown")
    return SweepResult(model_name, grid, methods, conditions, all_settings)


def _shared_runs(
    model: nn.Module,
    tokenizer: Any,
    items: Sequence[CulturalMCQ],
    wanted: dict[tuple[str, float], Steer],
    mcq_config: McqConfig,
) -> dict[tuple[str, float], McqRun]:
    """Log-likelihood MCQs: every (vector, λ) at once, sharing the blocks below the vectors
    (``generate`` mode runs each point in turn instead: nothing here)."""
    if mcq_config.mode != "loglik":
        return {}
    runs = run_mcq_conditions(model, tokenizer, items, list(wanted.values()), mcq_config)
    return dict(zip(wanted, runs))


def _point(
    label: str, multiplier: float, run: McqRun, metrics: MetricConfig, log: Log
) -> SweepPoint:
    """One point of the curve: the run's metrics, logged as they come."""
    summary = metrics.summarize(run.pairs())
    overall = summary.overall.metrics
    log(
        f"[{label}] accuracy mixed {overall['mixed'].value:.3f} "
        f"RCA {overall['rca'].value:.3f} PNLG {overall['pnlg'].value:.3f}"
    )
    return SweepPoint(multiplier, summary, run.unparseable, run.throughput.to_json())


def sweep_markdown(sweep: dict[str, Any]) -> str:
    """Overall accuracy (mixed), RCA and PNLG per method and multiplier, as Markdown."""
    lines = [
        f"### Multiplier sweep ({sweep.get('model', '?')})",
        "",
        "| Method | λ | Acc loc (%) | Acc non-loc (%) | Acc mixed (%) | RCA (%) | PNLG | unparseable |"
        + (" NLL/token | repetition | chosen |" if "selection" in sweep else ""),
        "| --- | --- | --- | --- | --- | --- | --- | --- |"
        + (" --- | --- | --- |" if "selection" in sweep else ""),
    ]
    selection = sweep.get("selection") or {}

    def pct(cell: dict[str, Any]) -> str:
        value = cell.get("value")
        return "–" if value is None else f"{100 * value:.1f}"

    for name, method in sweep["methods"].items():
        for point in method["points"]:
            overall = point["overall"]
            pnlg = overall["pnlg"].get("value")
            lines.append(
                f"| {name} | {point['multiplier']:g} | {pct(overall['localized'])} | "
                f"{pct(overall['nonlocalized'])} | {pct(overall['mixed'])} | "
                f"{pct(overall['rca'])} | {'–' if pnlg is None else f'{pnlg:.3f}'} | "
                f"{point['unparseable']} |" + _selection_cells(point, selection.get(name))
            )
    return "\n".join(lines) + "\n"


def _selection_cells(point: dict[str, Any], chosen: dict[str, Any] | None) -> str:
    """Fluency and choice columns of a λ-selection sweep (empty for a plain sweep)."""
    if chosen is None:
        return ""
    fluency = point.get("fluency")
    nll = "–" if fluency is None else f"{fluency['nll']:.2f}"
    repetition = "–" if fluency is None else f"{fluency['repetition']:.2f}"
    if point["multiplier"] == chosen["multiplier"]:
        mark = "**chosen**" if chosen.get("admissible", True) else "chosen (none admissible)"
    else:
        mark = point.get("excluded_because") or ""
    return f" {nll} | {repetition} | {mark} |"


def write_sweep(result: SweepResult, out: str | Path) -> Path:
    """Write ``sweep.json``, ``sweep.md`` and ``sweep.png`` into ``out``."""
    from yapo.report.plots import plot_sweep

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    data = result.to_json()
    write_json(folder / "sweep.json", data)
    write_text(folder / "sweep.md", sweep_markdown(data))
    plot_sweep(data, folder / "sweep.png")
    return folder
