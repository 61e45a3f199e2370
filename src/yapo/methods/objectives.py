"""The two losses of the preference trainer: BiPO's bi-directional DPO and RePS.

Both take response log-probabilities *summed* over response tokens, for ``2B`` rows
(the ``B`` chosen responses first, then the ``B`` rejected ones, see
:class:`yapo.methods.batches.Batch`), and return per-pair losses.

* ``bipo`` (:func:`preference_loss`, YaPO paper Eq. 4): ``-log σ(d·β·margin)`` with the
  DPO margin ``(log π(y_w|h') - log π(y_w|h)) - (log π(y_l|h') - log π(y_l|h))``.
* ``reps`` (:func:`reps_loss`, Wu et al. 2025, "Improved Representation Steering for
  Language Models", arXiv 2505.20809): reference-free, SimPO-like *length-normalised*
  log-likelihood differences, one term steering towards the chosen response and one
  suppressing it through the null intervention, each up-weighted by a per-pair constant
  taken from the unsteered model::

      β⁺ = max(log p(y_l) - log p(y_w), 1)        β⁻ = max(log p(y_w) - log p(y_l), 1)
      Δ⁺ = β⁺ · log π⁺(y_w)/|y_w| - log π⁺(y_l)/|y_l|     (h' = steered at a factor α)
      Δ⁻ = β⁻ · log π⁰(y_l)/|y_l| - log π⁰(y_w)/|y_w|     (h' = Φ_Null(h))
      loss = ½ · (-log σ(Δ⁺) - log σ(Δ⁻))

  where ``p`` is the unsteered model (only in the constants β±, never inside a
  difference) and ``|y|`` counts a response's tokens. The chosen response plays the
  paper's steered response ``y_c``; the rejected one its original response ``y``. See
  ``docs/training.md`` ("RePS") for which details follow the paper, which the authors'
  code, and why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch.nn.functional as F
from torch import Tensor

OBJECTIVES = ("bipo", "reps")
# AxBench's RePS steering factors are 2, 4, ..., 20 on a vector whose norm is learned;
# only their ratios matter, so yapo uses the same ratios with λ at the smallest.
DEFAULT_REPS_FACTORS = (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0)


def preference_loss(
    policy: Tensor, reference: Tensor, direction: int, beta: float
) -> tuple[Tensor, Tensor]:
    """Per-pair losses and margins for ``2B`` rows (chosen first, then rejected).

    margin = (r_w - r_l) with r = log π(y|h') - log π(y|h); loss = -log σ(d·β·margin).
    """
    rewards = policy - reference
    half = rewards.shape[0] // 2
    margins = rewards[:half] - rewards[half:]
    losses = -F.logsigmoid(float(direction) * beta * margins)
    return losses, margins


def reps_scales(reference: Tensor) -> tuple[Tensor, Tensor]:
    """β⁺ and β⁻ per pair from the unsteered summed log-probs of ``2B`` rows.

    β⁺ grows when the unsteered model finds the chosen response unlikely (so steering
    towards it weighs more), β⁻ when it finds the rejected one unlikely; both are at
    least 1. Constants: no gradient flows into them.
    """
    reference = reference.detach().float()
    half = reference.shape[0] // 2
    gap = reference[half:] - reference[:half]  # log p(y_l) - log p(y_w)
    return gap.clamp_min(1.0), (-gap).clamp_min(1.0)


@dataclass(frozen=True)
class RepsTerms:
    """Per-pair parts of the RePS loss (see the module docstring)."""

    steer_loss: Tensor  # -log σ(Δ⁺)
    null_loss: Tensor  # -log σ(Δ⁻)
    steer_margin: Tensor  # Δ⁺
    null_margin: Tensor  # Δ⁻

    @property
    def losses(self) -> Tensor:
        return 0.5 * (self.steer_loss + self.null_loss)


def reps_loss(steered: Tensor, nulled: Tensor, reference: Tensor, lengths: Tensor) -> RepsTerms:
    """RePS for ``2B`` rows: ``steered`` and ``nulled`` are the summed response
    log-probs under the positive steering and under the null intervention, ``reference``
    the unsteered ones (used only for β±), ``lengths`` the response token counts."""
    beta_plus, beta_minus = reps_scales(reference)
    lengths = lengths.to(device=steered.device, dtype=steered.dtype)
    half = steered.shape[0] // 2
    steer = steered / lengths
    null = nulled / lengths
    steer_margin = beta_plus.to(steer) * steer[:half] - steer[half:]
    null_margin = beta_minus.to(null) * null[half:] - null[:half]
    return RepsTerms(
        -F.logsigmoid(steer_margin), -F.logsigmoid(null_margin), steer_margin, null_margin
    )


def reps_factor(seed: int, step: int, factors: Sequence[float]) -> float:
    """The positive steering factor α of (1-based) step ``step``: drawn uniformly from
    ``factors`` as a function of the seed and the step only (so resume and several
    processes draw the same one)."""
    index = int(np.random.default_rng([seed, 2_000_003, step]).integers(0, len(factors)))
    return float(factors[index])
