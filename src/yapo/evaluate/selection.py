"""Choose each vector's strength λ on validation questions, never on the test ones.

A learned vector's useful strength is not known in advance: BiPO and YaPO vectors
trained at λ = 1 may work best at 0.5 or at 8, and a contrastive mean (CAA, SAS) has no
natural unit at all. Reporting every method at a fixed λ compares arbitrary points of
their curves; picking the best λ on the test questions reports a tuned-to-the-test
number. The field's protocol (AxBench: the factor is chosen on a held-out half and
scored on the rest) is what :func:`select_multipliers` does:

1. sweep each vector over a grid of λ on the *validation* questions (carved from the
   training questions by question id) and read the metric the user names (mixed
   accuracy by default, or RCA);
2. measure the fluency of steered generations at each λ on validation prompts
   (:mod:`yapo.evaluate.fluency`) and rule out every λ whose fluency falls past the
   user's thresholds (NLL increase per token over the unsteered model, repetition);
3. choose, among the admissible λ, the one with the best metric (ties: the smaller
   |λ|, the gentler edit). If no λ is admissible the smallest |λ| of the grid is taken
   and the choice is marked ``admissible: false``.

With ``allow_unsteered`` the unsteered model competes too: λ = 0 is chosen when no
admissible λ scores strictly above it on validation (for a user who wants "steer only if
it helps"; off by default, since on our validation sets of 12–29 questions the rule was
not a clear gain: ``benchmarks/results/selection-fallback.md``).

Fluency is generation, by far the dearest part, so by default it is measured lazily: the
points are visited in the order the choice ranks them (:func:`choice_order`) and the scan
stops at the first admissible one, which is exactly the point the full measurement would
choose (every better-ranked point was measured and failed). On the runs of
``benchmarks/results`` this measures 70 of 172 points. ``fluency_every_point`` measures
all of them, for a report whose fluency panel shows the whole curve.

The test questions are then scored once, at the chosen λ. The result is a sweep
(:class:`~yapo.evaluate.sweep.SweepResult`) with fluency per point and the choice per
vector, so reports show the validation curve, the fluency curve and the chosen λ.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from torch import nn

from yapo._config import config_field
from yapo.data.records import CulturalMCQ
from yapo.errors import YapoError
from yapo.evaluate.benchmark import MetricConfig
from yapo.evaluate.fluency import Fluency, measure_fluency
from yapo.evaluate.mcq import McqConfig
from yapo.evaluate.sweep import SweepPoint, SweepResult, run_sweep
from yapo.vectors.base import SteeringVector
from yapo.vectors.steer import Steer

Log = Callable[[str], None]
SELECTION_METRICS = ("mixed", "rca", "localized", "nonlocalized")


def _quiet(_message: str) -> None:
    return None


@dataclass
class SelectionConfig:
    """How λ is chosen on validation questions (see the module docstring)."""

    multipliers: tuple[float, ...] = config_field(
        (0.5, 1.0, 2.0, 4.0, 8.0, 16.0),
        "λ grid that --multiplier auto chooses from (comma-separated).",
    )
    metric: str = config_field(
        "mixed", f"Metric --multiplier auto maximises: {' | '.join(SELECTION_METRICS)}."
    )
    max_nll_increase: float | None = config_field(
        1.0,
        "Fluency limit: largest rise of the unsteered model's NLL per token of steered "
        "generations over its own (nats; negative: no limit).",
    )
    max_repetition: float | None = config_field(
        0.5,
        "Fluency limit: largest share of repeated 4-grams in steered generations "
        "(negative: no limit).",
    )
    fluency_prompts: int = config_field(
        4, "Validation prompts generated per λ to measure fluency (0: none)."
    )
    fluency_tokens: int = config_field(24, "Tokens generated per validation prompt for fluency.")
    allow_unsteered: bool = config_field(
        False,
        "Choose λ = 0 (no steering) when no fluent λ beats the unsteered model on the "
        "validation questions, instead of the best (or gentlest) λ of the grid.",
    )
    fluency_every_point: bool = config_field(
        False,
        "Measure fluency at every λ (the report's whole fluency curve) instead of only until "
        "the choice is settled (the same choice, fewer generations).",
    )

    def __post_init__(self) -> None:
        self.multipliers = tuple(float(m) for m in self.multipliers)

    def validate(self) -> None:
        if not self.multipliers:
            raise YapoError(
                "the λ grid is empty; give at least one multiplier, e.g. --multipliers 0.5,1,2,4"
            )
        bad = [m for m in self.multipliers if not math.isfinite(m) or m == 0.0]
        if bad:
            raise YapoError(
                f"every λ of the selection grid must be a finite non-zero number, got {bad} "
                "(λ = 0 is no steering; it is always measured as the reference)"
            )
        if self.metric not in SELECTION_METRICS:
            raise YapoError(
                f"the selection metric must be one of {', '.join(SELECTION_METRICS)}, "
                f"got {self.metric!r}"
            )
        for name in ("max_nll_increase", "max_repetition"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise YapoError(f"{name} must be a number >= 0 (or unset), got {value}")
        if self.fluency_prompts < 0 or self.fluency_tokens < 1:
            raise YapoError("fluency_prompts must be >= 0 and fluency_tokens >= 1")

    @property
    def measures_fluency(self) -> bool:
        return self.fluency_prompts > 0 and (
            self.max_nll_increase is not None or self.max_repetition is not None
        )

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["multipliers"] = list(self.multipliers)
        return data


def fluency_prompts(
    tokenizer: Any, items: Sequence[CulturalMCQ], count: int, chat: bool | str = "auto"
) -> list[str]:
    """Open prompts for fluency: the localized question of the first ``count`` questions."""
    from yapo.data.prompts import format_prompt

    chosen: list[CulturalMCQ] = []
    seen: set[str] = set()
    for item in sorted(items, key=lambda i: i.id):
        if item.question_id not in seen:
            seen.add(item.question_id)
            chosen.append(item)
        if len(chosen) == count:
            break
    return [
        format_prompt(tokenizer, item.question("localized"), chat)  # type: ignore[arg-type]
        for item in chosen
    ]


def _admissible(
    fluency: Fluency | None, reference: Fluency | None, config: SelectionConfig
) -> tuple[bool, str | None]:
    if fluency is None or reference is None:
        return True, None
    if config.max_nll_increase is not None:
        increase = fluency.nll - reference.nll
        if not increase <= config.max_nll_increase:
            return False, f"NLL +{increase:.2f} > {config.max_nll_increase:g}"
    if config.max_repetition is not None and not fluency.repetition <= config.max_repetition:
        return False, f"repetition {fluency.repetition:.2f} > {config.max_repetition:g}"
    return True, None


def _value(point: dict[str, Any], metric: str) -> float:
    cell = point["overall"][metric].get("value")
    return -math.inf if cell is None else float(cell)


def choose(
    points: Sequence[dict[str, Any]], metric: str, *, allow_unsteered: bool = False
) -> dict[str, Any]:
    """The chosen point of one vector's validation curve (admissible, best, gentlest).

    With ``allow_unsteered`` the unsteered point (λ = 0) competes too: it is chosen when no
    admissible λ scores strictly above it, marked ``unsteered: true``.
    """
    candidates = [p for p in points if p["multiplier"] != 0.0]
    admissible = [p for p in candidates if p.get("admissible", True)]
    best = max(admissible, key=lambda p: (_value(p, metric), -abs(p["multiplier"])), default=None)
    if allow_unsteered:
        unsteered = [_value(p, metric) for p in points if p["multiplier"] == 0.0]
        if unsteered and (best is None or not _value(best, metric) > unsteered[0]):
            return {"multiplier": 0.0, "admissible": True, "value": unsteered[0], "unsteered": True}
    if best is None:
        gentlest = min(candidates, key=lambda p: abs(p["multiplier"]))
        return {"multiplier": gentlest["multiplier"], "admissible": False}
    return {"multiplier": best["multiplier"], "admissible": True, "value": _value(best, metric)}


def choice_order(points: Sequence[dict[str, Any]], metric: str) -> list[int]:
    """Indices of the steered points, best-ranked first, as :func:`choose` ranks them.

    Best metric first, ties to the smaller |λ|, exact ties in grid order (``max`` keeps the
    first of equal keys, a stable sort too): so the first admissible point of this order
    is the one :func:`choose` returns.
    """
    steered = [i for i, p in enumerate(points) if p["multiplier"] != 0.0]
    return sorted(steered, key=lambda i: (-_value(points[i], metric), abs(points[i]["multiplier"])))


def scan(
    points: Sequence[dict[str, Any]], config: SelectionConfig, measure: Callable[[int], bool]
) -> list[int]:
    """Measure fluency where the choice needs it; the indices measured (λ = 0 first).

    ``measure(i)`` measures point ``i`` and says whether it is admissible. The unsteered
    point is always measured (it is the reference). Then the steered points are visited in
    :func:`choice_order`; lazily (the default) the scan stops at the first admissible one,
    or, with ``allow_unsteered``, at the first that does not beat no steering, since from
    there on λ = 0 is the answer whatever the fluency. :func:`choose` on the measured points
    then returns what it returns on every point measured.
    """
    measured = [i for i, p in enumerate(points) if p["multiplier"] == 0.0]
    for index in measured:
        measure(index)
    floor = max((_value(points[i], config.metric) for i in measured), default=-math.inf)
    lazy = not config.fluency_every_point
    for index in choice_order(points, config.metric):
        if lazy and config.allow_unsteered and not _value(points[index], config.metric) > floor:
            break
        admissible = measure(index)
        measured.append(index)
        if admissible and lazy:
            break  # every better-ranked point was measured and failed: this is the choice
    return measured


def select_multipliers(
    model: nn.Module,
    tokenizer: Any,
    items: Sequence[CulturalMCQ],
    vectors: Sequence[tuple[str, SteeringVector, str | None]],
    config: SelectionConfig | None = None,
    *,
    direction: int = 1,
    mcq_config: McqConfig | None = None,
    metrics: MetricConfig | None = None,
    log: Log = _quiet,
) -> SweepResult:
    """Sweep ``vectors`` on validation ``items``, measure fluency, choose each λ."""
    config = config or SelectionConfig()
    config.validate()
    if not items:
        raise YapoError(
            "λ selection needs validation questions (--multiplier auto); there are none. "
            "Give validation items or a fixed --multiplier"
        )
    mcq_config = mcq_config or McqConfig()
    sweep = run_sweep(
        model,
        tokenizer,
        items,
        vectors,
        [0.0, *config.multipliers],
        direction=direction,
        mcq_config=mcq_config,
        metrics=metrics,
        settings={"purpose": "λ selection on validation questions"},
        log=log,
    )
    prompts = fluency_prompts(tokenizer, items, config.fluency_prompts, mcq_config.chat)
    reference = None
    if config.measures_fluency and prompts:
        reference = measure_fluency(model, tokenizer, prompts, max_new_tokens=config.fluency_tokens)
    selection: dict[str, dict[str, Any]] = {}
    for name, vector, _ in vectors:
        points = sweep.methods[name]

        def measure(
            index: int, vector: SteeringVector = vector, points: list[SweepPoint] = points
        ) -> bool:
            point = points[index]
            fluency = reference
            if reference is not None and point.multiplier != 0.0:
                fluency = measure_fluency(
                    model,
                    tokenizer,
                    prompts,
                    steer=Steer(vector, point.multiplier, direction),
                    max_new_tokens=config.fluency_tokens,
                )
            point.fluency = fluency
            point.admissible, point.excluded_because = _admissible(fluency, reference, config)
            return bool(point.admissible)

        measured = scan([p.to_json() for p in points], config, measure)
        rows = [point.to_json() for point in points]
        selection[name] = choose(
            [rows[i] for i in sorted(measured)],
            config.metric,
            allow_unsteered=config.allow_unsteered,
        )
        if reference is not None:
            selection[name]["fluency_measured"] = len(measured) - 1
        log(
            f"[{name}] λ chosen on {len(items)} validation items: "
            f"{selection[name]['multiplier']:g}"
            + ("" if selection[name]["admissible"] else " (no λ passed the fluency limits)")
            + (" (no fluent λ beat no steering)" if selection[name].get("unsteered") else "")
        )
    sweep.selection = selection
    sweep.settings["selection"] = config.to_json()
    return sweep
