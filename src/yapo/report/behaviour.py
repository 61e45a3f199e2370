"""The figure of a behaviour run (``behaviour.png``): A/B scores and the judge against λ.

Drawn here rather than in :mod:`yapo.evaluate.behaviour` so that every figure of the
package lives in :mod:`yapo.report`; the result type is imported for type checking only,
so this module depends on nothing above it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from yapo.report.plots import new_figure, save_figure

if TYPE_CHECKING:
    from yapo.evaluate.behaviour import BehaviourResult


def plot_behaviour(result: BehaviourResult, path: str | Path) -> Path:
    """A/B accuracy and P(matching) (and the judge's mean score) against λ, as a PNG."""
    fig = new_figure(6, 4, dpi=None)
    ax = fig.subplots()
    xs = [p.multiplier for p in result.ab]
    ax.plot(xs, [p.accuracy for p in result.ab], "o-", label="A/B accuracy (matching)")
    ax.plot(xs, [p.matching_probability for p in result.ab], "s--", label="P(matching)")
    ax.set_xlabel("multiplier λ")
    ax.set_ylabel("share / probability")
    ax.set_ylim(0, 1)
    if any(p.mean_score is not None for p in result.open_ended):
        twin = ax.twinx()
        twin.plot(
            [p.multiplier for p in result.open_ended],
            [p.mean_score if p.mean_score is not None else math.nan for p in result.open_ended],
            "^-",
            color="tab:red",
            label="judge (1–4)",
        )
        twin.set_ylim(1, 4)
        twin.set_ylabel("judge score (1–4)")
        twin.legend(loc="lower right", fontsize=8)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(f"{result.task}: {result.n_items} items")
    ax.grid(alpha=0.3)
    return save_figure(fig, path, dpi=120)
