"""What a method's fit receives: one prepared :class:`FitJob`.

:func:`yapo.methods.api.train` does everything the methods share — load the model, the
SAE and the data, tokenize, open the run folder — and hands the result to the method's
fit (:mod:`yapo.methods.fits`, chosen through :mod:`yapo.methods.registry`). Keeping
that contract in one value is what lets ``train()`` dispatch on the registry instead of
testing method names.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from yapo.errors import YapoError
from yapo.methods.batches import TokenizedPair
from yapo.methods.caa import ANSWER_POSITIONS, AnswerPosition
from yapo.methods.distributed import Processes
from yapo.methods.preference import PreferenceConfig, StepCallback
from yapo.methods.runs import RunFolder
from yapo.sae.model import SAE


@dataclass
class ContrastiveConfig:
    """The settings of the contrastive-means methods (CAA, SAS).

    ``position`` is the answer position whose state is averaged; ``min_frequency`` and
    ``top_k`` sparsify SAS's difference (``top_k=None`` keeps every frequent latent).
    """

    position: AnswerPosition = "last"
    min_frequency: float = 0.1
    top_k: int | None = 64

    def validate(self) -> None:
        if self.position not in ANSWER_POSITIONS:
            raise YapoError(f"position must be one of {', '.join(ANSWER_POSITIONS)}")


@dataclass
class FitJob:
    """Everything a method's fit needs, prepared once by ``train()``.

    ``method`` is the name recorded in the run and the vector (``"yapo"`` for
    ``"yapo-reps"``: the objective is in ``config``); ``hyperparameters`` go into the
    vector's metadata; ``resume`` says whether ``run`` continues an earlier run.
    """

    method: str
    model: nn.Module
    layer: int
    sae: SAE | None
    pairs: list[TokenizedPair]
    eval_pairs: list[TokenizedPair]
    pad: int
    eos: int | None
    config: PreferenceConfig
    contrastive: ContrastiveConfig
    hyperparameters: dict[str, Any]
    run: RunFolder | None
    processes: Processes
    callbacks: Sequence[StepCallback] = ()
    progress: bool = True
    resume: bool = False
