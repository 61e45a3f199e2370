"""The figure of activation patching (``patching.png``): probabilities against the layer.

Drawn here rather than in :mod:`yapo.analysis.patching` so that every figure of the
package lives in :mod:`yapo.report`; the result type is imported for type checking only,
so this module depends on nothing above it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from yapo.report.plots import new_figure, save_figure

if TYPE_CHECKING:
    from yapo.analysis.patching import PatchingResult


def plot_patching(result: PatchingResult, path: str | Path, title: str | None = None) -> Path:
    """Write the per-layer curve as a PNG (atomically)."""
    fig = new_figure(7, 4, dpi=None)
    ax = fig.subplots()
    ax.plot(
        result.layers,
        [p.p_correct for p in result.curve],
        "o-",
        color="tab:green",
        label="P(correct), patched",
    )
    ax.axhline(
        result.localized.p_correct,
        color="tab:green",
        ls="--",
        lw=1,
        label="P(correct), localized",
    )
    ax.axhline(
        result.nonlocalized.p_correct,
        color="tab:green",
        ls=":",
        lw=1,
        label="P(correct), non-localized",
    )
    if result.localized.p_western is not None:
        ax.plot(
            result.layers,
            [p.p_western if p.p_western is not None else math.nan for p in result.curve],
            "s-",
            color="tab:red",
            label="P(Western), patched",
        )
        ax.axhline(
            result.localized.p_western,
            color="tab:red",
            ls="--",
            lw=1,
            label="P(Western), localized",
        )
        ax.axhline(
            result.nonlocalized.p_western or 0.0,
            color="tab:red",
            ls=":",
            lw=1,
            label="P(Western), non-localized",
        )
    ax.axvline(result.best_layer, color="grey", lw=0.8)
    ax.set_xlabel("layer patched (output of decoder block)")
    ax.set_ylabel("probability (renormalised over options)")
    ax.set_title(title or f"Activation patching, {len(result.items)} items")
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    return save_figure(fig, path, dpi=120)
