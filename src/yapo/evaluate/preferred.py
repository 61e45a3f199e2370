"""The model's own preferred wrong answer: the rejected side of policy ``"model"``.

The YaPO paper builds its preference pairs from the model's *own* answers: the rejected
response is what the model says, not a fixed distractor. With correct-vs-Western pairs
alone a strong vector learns "not Western" and can land on the other wrong option
(measured on the demo data: answers moved off the Western option, 21% -> 14%, onto the
other wrong one). Rejecting the option the unsteered model itself ranks highest among
the wrong ones teaches the vector to move mass from the model's actual mistake to the
correct answer. The ranking is the evaluation's own log-likelihood scoring
(:func:`yapo.evaluate.mcq.run_mcq`), per item and per setting (the localized and
non-localized prompts can err differently).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from yapo.data.records import CulturalMCQ
from yapo.errors import YapoError
from yapo.evaluate.mcq import McqConfig, run_mcq


def model_preferred_wrong(
    model: nn.Module,
    tokenizer: Any,
    items: Sequence[CulturalMCQ],
    mcq_config: McqConfig | None = None,
) -> dict[tuple[str, str], int]:
    """``(item id, setting) -> index`` of the wrong option the unsteered model scores highest."""
    config = mcq_config or McqConfig()
    if config.mode != "loglik":
        raise YapoError("policy 'model' ranks options by log-likelihood; use MCQ mode loglik")
    run = run_mcq(model, tokenizer, items, config)
    choices: dict[tuple[str, str], int] = {}
    for prediction in run.predictions:
        assert prediction.scores is not None
        scores = prediction.scores
        wrong = [i for i in range(len(scores)) if i != prediction.answer]
        if wrong:
            choices[(prediction.id, prediction.setting)] = max(wrong, key=scores.__getitem__)
    return choices
