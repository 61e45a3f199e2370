"""The cultural benchmark: no steering and each vector, side by side, on MCQ and open-ended.

One *condition* is the model with no steering, or the model steered by one vector at
one multiplier and direction. Every condition answers the same items, so their metrics
(and bootstrap intervals, drawn with the same seed) are directly comparable. Results
are written into an output folder:

* ``results.json`` — settings (model, data, modes, judge, metric options), and per
  condition the metrics of every country/language/overall with intervals, throughput,
  unparseable-answer and judge-failure counts;
* ``tables.md`` / ``tables.json`` — Tables 1–3 in the paper's shape;
* ``mcq_predictions.jsonl`` / ``open_answers.jsonl`` — every prediction and judgement.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from yapo._config import config_field
from yapo._io import write_json, write_text
from yapo._version import __version__
from yapo.data.records import CulturalMCQ, OpenQuestion
from yapo.errors import YapoError
from yapo.evaluate.bootstrap import DEFAULT_CONFIDENCE, DEFAULT_SAMPLES
from yapo.evaluate.judge.base import Judge
from yapo.evaluate.mcq import McqConfig, McqRun, run_mcq_conditions, run_mcq_steered
from yapo.evaluate.metrics import EPS, MetricsSummary, Unit, summarize
from yapo.evaluate.openended import OpenConfig, OpenRun, run_open_steered
from yapo.intervene import Positions
from yapo.report.tables import build_tables, tables_markdown
from yapo.vectors.base import SteeringVector
from yapo.vectors.steer import Steer

BASELINE = "no steering"
Log = Callable[[str], None]


def _quiet(_message: str) -> None:
    return None


@dataclass(frozen=True, init=False)
class Condition(Steer):
    """The model as evaluated: a named :class:`Steer` — unsteered, or steered by ``vector``
    at ``multiplier`` — with where its vector came from (``source``).

    Being a ``Steer``, a condition goes into every scorer as it is. Built positionally as
    ``Condition(name, vector, multiplier, direction, source)``: the name comes first
    because it labels a table column.
    """

    name: str = ""
    source: str | None = None

    def __init__(
        self,
        name: str,
        vector: SteeringVector | None = None,
        multiplier: float = 0.0,
        direction: int = 1,
        source: str | None = None,
        positions: Positions = "all",
    ) -> None:
        for key, value in (
            ("name", name),
            ("vector", vector),
            ("multiplier", multiplier),
            ("direction", direction),
            ("source", source),
            ("positions", positions),
        ):
            object.__setattr__(self, key, value)  # frozen: set once, here
        self.__post_init__()

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "name": self.name,
            "method": self.vector.meta.method if self.vector is not None else "none",
            "multiplier": self.multiplier if self.vector is not None else 0.0,
            "direction": self.direction,
            "source": self.source,
        }
        if self.vector is not None:
            meta = self.vector.meta
            info.update(
                layer=meta.layer,
                kind=self.vector.kind,
                sae_reference=meta.sae_reference,
                trained_on=meta.model,
            )
        return info


def make_conditions(
    vectors: Sequence[tuple[str, SteeringVector, str | None]],
    multiplier: float,
    direction: int = 1,
    baseline: bool = True,
) -> list[Condition]:
    """No steering first (unless ``baseline=False``), then one condition per vector.

    Names must be unique: they label table columns and result keys.
    """
    conditions = [Condition(BASELINE)] if baseline else []
    for name, vector, source in vectors:
        conditions.append(Condition(name, vector, multiplier, direction, source))
    names = [c.name for c in conditions]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise YapoError(
            f"two conditions are both named {', '.join(duplicated)}; name vectors with "
            "NAME=DIR (e.g. --vector yapo-es=runs/yapo/vector)"
        )
    return conditions


@dataclass
class MetricConfig:
    """How pairs are formed and how intervals are drawn (see :mod:`yapo.evaluate.metrics`)."""

    unit: Unit = config_field("country", "RCA/PNLG pairs: country | item.")
    alpha: float = config_field(1.0, "PNLG's α in [0, 1].")
    eps: float = config_field(EPS, "ε in the denominators of RCA and PNLG (no division by zero).")
    samples: int = config_field(DEFAULT_SAMPLES, "Bootstrap samples for intervals (0: none).")
    confidence: float = config_field(DEFAULT_CONFIDENCE, "Interval level.")
    seed: int = config_field(0, "Bootstrap seed.")

    def summarize(self, pairs: Any) -> MetricsSummary:
        return summarize(
            pairs,
            unit=self.unit,
            alpha=self.alpha,
            eps=self.eps,
            samples=self.samples,
            confidence=self.confidence,
            seed=self.seed,
        )


@dataclass
class ConditionResult:
    condition: Condition
    mcq: McqRun | None = None
    mcq_metrics: MetricsSummary | None = None
    open: OpenRun | None = None
    open_metrics: MetricsSummary | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"condition": self.condition.describe()}
        if self.mcq is not None and self.mcq_metrics is not None:
            data["mcq"] = {
                "metrics": self.mcq_metrics.to_json(),
                "answers": len(self.mcq.predictions),
                "unparseable": self.mcq.unparseable,
                "western_rate": self.mcq.western_rate(),
                "throughput": self.mcq.throughput.to_json(),
            }
        if self.open is not None:
            data["open"] = {
                "metrics": self.open_metrics.to_json() if self.open_metrics else None,
                "answers": len(self.open.answers),
                "judge_failures": self.open.failures,
                "judge_failure_examples": self.open.failure_messages(),
                "generation_throughput": self.open.throughput.to_json(),
            }
        return data


@dataclass
class BenchmarkResult:
    model: str
    results: list[ConditionResult]
    settings: dict[str, Any] = field(default_factory=dict)

    def tables(self) -> dict[str, Any]:
        mcq = {r.condition.name: r.mcq_metrics for r in self.results if r.mcq_metrics}
        open_ended = {r.condition.name: r.open_metrics for r in self.results if r.open_metrics}
        return build_tables(mcq, open_ended)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "yapo-eval",
            "model": self.model,
            "settings": self.settings,
            "conditions": [r.to_json() for r in self.results],
        }


def run_benchmark(
    model: nn.Module,
    tokenizer: Any,
    conditions: Sequence[Condition],
    *,
    mcq_items: Sequence[CulturalMCQ] | None = None,
    open_questions: Sequence[OpenQuestion] | None = None,
    judge: Judge | None = None,
    mcq_config: McqConfig | None = None,
    open_config: OpenConfig | None = None,
    metrics: MetricConfig | None = None,
    settings: dict[str, Any] | None = None,
    log: Log = _quiet,
) -> BenchmarkResult:
    """Evaluate every condition on the MCQs and/or the open-ended questions."""
    if not mcq_items and not open_questions:
        raise YapoError("nothing to evaluate: give MCQ items and/or open-ended questions")
    if open_questions and judge is None:
        raise YapoError(
            "open-ended questions need a judge (--judge-url/--judge-model or --judge-local)"
        )
    mcq_config = mcq_config or McqConfig()
    mcq_config.validate()
    open_config = open_config or OpenConfig()
    metrics = metrics or MetricConfig()
    for condition in conditions:  # refuse a misfit vector before hours of baseline work
        if condition.vector is not None:
            condition.vector.check_fits(model)
    results: list[ConditionResult] = []
    # Log-likelihood MCQs: every condition at once, sharing the blocks below the vectors.
    scored = (
        run_mcq_conditions(model, tokenizer, mcq_items, conditions, mcq_config)
        if mcq_items and mcq_config.mode == "loglik"
        else None
    )
    for index, condition in enumerate(conditions):
        result = ConditionResult(condition)
        if mcq_items:
            result.mcq = (
                scored[index]
                if scored is not None
                else run_mcq_steered(model, tokenizer, mcq_items, mcq_config, condition)
            )
            result.mcq_metrics = metrics.summarize(result.mcq.pairs())
            log(_mcq_line(condition.name, result.mcq, result.mcq_metrics))
        if open_questions and judge is not None:
            result.open = run_open_steered(
                model,
                tokenizer,
                open_questions,
                judge,
                open_config,
                condition,
                key_prefix=f"{condition.name}/",
            )
            # All-failed items give NaN metrics (shown as "–"), never a crash.
            result.open_metrics = metrics.summarize(result.open.pairs())
            log(
                f"[{condition.name}] open-ended: {len(result.open.answers)} answers, "
                f"{result.open.failures} judge failures"
            )
        results.append(result)
    all_settings = {
        "library_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "mcq": mcq_config.to_json() if mcq_items else None,
        "open": open_config.to_json() if open_questions else None,
        "judge": judge.describe() if (judge is not None and open_questions) else None,
        "metrics": asdict(metrics),
        "n_mcq_items": len(mcq_items or []),
        "n_open_questions": len(open_questions or []),
        **(settings or {}),
    }
    model_name = str(getattr(model, "name_or_path", "") or "unknown")
    return BenchmarkResult(model_name, results, all_settings)


def _mcq_line(name: str, run: McqRun, summary: MetricsSummary) -> str:
    """The progress line of one condition's MCQ results."""
    overall = summary.overall.metrics
    return (
        f"[{name}] MCQ accuracy loc {overall['localized'].value:.3f} "
        f"non-loc {overall['nonlocalized'].value:.3f} RCA {overall['rca'].value:.3f} "
        f"PNLG {overall['pnlg'].value:.3f}; unparseable {run.unparseable}; "
        f"{run.throughput.to_json()['sequences_per_second']} seq/s"
    )


def write_benchmark(result: BenchmarkResult, out: str | Path) -> Path:
    """Write results, tables and per-item files into ``out`` (each file atomically)."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    tables = result.tables()
    from yapo.evaluate.paired import paired_markdown, paired_table

    options = result.settings.get("metrics") or {}
    bootstrap = {k: options[k] for k in ("samples", "confidence", "seed") if k in options}
    paired = paired_table(result.results, BASELINE, **bootstrap)
    write_json(folder / "results.json", {**result.to_json(), "paired_vs_baseline": paired})
    write_json(folder / "tables.json", tables)
    header = f"# Evaluation of {result.model}\n\n"
    body = tables_markdown(tables)
    if paired:
        body += "\n" + paired_markdown(paired, float(bootstrap.get("confidence", 0.95)))
    write_text(folder / "tables.md", header + body)
    mcq_lines = [
        json.dumps({"condition": r.condition.name, **p.to_json()}, ensure_ascii=False)
        for r in result.results
        if r.mcq is not None
        for p in r.mcq.predictions
    ]
    if mcq_lines:
        write_text(folder / "mcq_predictions.jsonl", "\n".join(mcq_lines) + "\n")
    open_lines = [
        json.dumps({"condition": r.condition.name, **a.to_json()}, ensure_ascii=False)
        for r in result.results
        if r.open is not None
        for a in r.open.answers
    ]
    if open_lines:
        write_text(folder / "open_answers.jsonl", "\n".join(open_lines) + "\n")
    return folder
