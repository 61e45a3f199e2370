"""The main job: the whole YaPO story on the embedded model, offline, in minutes.

1. Load the default model (Gemma 3 270M) and the SAE yapo ships for it; the steering
   layer is the SAE's layer.
2. Take one country of the project's own cultural MCQ dataset (both languages), split it
   by question so that no question's variants straddle train and test.
3. Turn the training questions into preference pairs (correct option vs the Western
   option) and learn YaPO, BiPO, CAA and SAS vectors from them.
4. Evaluate no steering and every vector on the held-out questions, localized and
   non-localized: accuracy, RCA, PNLG with bootstrap intervals.
5. Gather everything into one Markdown report with loss curves and tables.

``quick=True`` is the reduced version CI runs (fewer epochs, fewer questions). Steps 2-5
are :func:`yapo.compare.run_comparison` on one country of the demo data; ``yapo compare``
runs the same protocol on any cultural data (BLEnD) and several countries. Output layout:
``OUT/<country>/runs/<method>``, ``OUT/eval`` (the table), ``OUT/report/report.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yapo._config import config_field
from yapo._io import write_json
from yapo.compare import CompareConfig, comparison_training
from yapo.errors import YapoError
from yapo.evaluate.selection import SelectionConfig


@dataclass
class DemoConfig(CompareConfig):
    """Knobs of the demo: :class:`CompareConfig` (same defaults) plus the country and
    its languages; the defaults aim at ten minutes on two idle CPU cores.

    Most of a training step on the default model is the LM head over Gemma 3's 262k-token
    vocabulary, so YaPO and BiPO get the comparison's short run
    (:func:`~yapo.compare.comparison_training`); ``max_questions`` limits the questions
    (half are held out, each in both languages and both forms). The demo always trains
    afresh (``retrain``).
    """

    country: str = config_field("Egypt", "Egypt, Morocco, Mexico or Spain.")
    languages: tuple[str, ...] = config_field(
        ("en", "ar"), "Languages of the country's questions to use, e.g. en,ar."
    )
    retrain: bool = config_field(True, "Train every vector afresh (the demo never reuses runs).")

    @classmethod
    def quick(cls, **overrides: Any) -> DemoConfig:
        """The reduced run for CI: a few questions, one epoch, a two-point λ grid."""
        base: dict[str, Any] = {
            "training": comparison_training(epochs=1),
            "max_questions": 6,
            "selection": SelectionConfig(
                multipliers=(1.0, 4.0), fluency_prompts=1, fluency_tokens=8
            ),
        }
        base.update(overrides)
        return cls(**base)


@dataclass
class DemoResult:
    out: Path
    report: Path
    seconds: float
    table: str
    timings: dict[str, float] = field(default_factory=dict)


def run_demo(
    out: str | Path,
    settings: DemoConfig | None = None,
    log: Callable[[str], None] = print,
) -> DemoResult:
    """Train and evaluate ``settings.methods`` for one country; return where the report is."""
    from yapo.compare import run_comparison
    from yapo.data.demo import load_demo_mcq

    settings = settings or DemoConfig()
    settings.validate()  # unknown methods and bad fractions before loading anything
    items, _ = load_demo_mcq(countries=[settings.country], languages=list(settings.languages))
    if not items:
        raise YapoError(
            f"the demo dataset has no questions for {settings.country!r} in "
            f"{', '.join(settings.languages)}; try Egypt, Morocco, Mexico or Spain"
        )
    result = run_comparison(
        items, out, settings, log=log, extra_settings={"demo": _settings_json(settings)}
    )
    sizes = result.countries[settings.country]
    write_json(
        Path(out) / "demo.json",
        {
            "settings": _settings_json(settings),
            "seconds": result.seconds,
            "timings": result.timings,
            "layer": result.layer,
            **sizes,
        },
    )
    return DemoResult(result.out, result.report, result.seconds, result.table, result.timings)


def _settings_json(settings: DemoConfig) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(settings)


def parse_languages(text: str) -> Sequence[str]:
    return tuple(x.strip() for x in text.split(",") if x.strip())
