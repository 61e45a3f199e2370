"""Answering cultural MCQs in both settings, by log-likelihood or by generation.

Every :class:`CulturalMCQ` is asked twice, in its localized form (country named) and its
non-localized form; both prompts are laid out by :func:`yapo.data.prompts.format_mcq_prompt`
(lettered options, ending with ``Answer:``) and, for chat models, wrapped in the chat
template by :func:`yapo.data.prompts.format_prompt` — the same text the trainers see.

Two modes:

* ``loglik`` (default; right for base models): the option whose continuation has the
  highest log-likelihood wins. The continuation is what the trainers use as a response
  (:func:`yapo.data.cultural.mcq_to_preferences`), tokenized the same way:
  ``choices="text"`` (default) scores the option texts, ``"letter"`` the letters
  ``A``, ``B``, ... and ``"letter_text"`` ``"B. Couscous"``. ``normalize=True`` uses
  the per-token mean, so long options do not lose for their length.
* ``generate`` (chat models): the model writes an answer, asked to put the letter in
  ``\\boxed{}``; :func:`yapo.evaluate.parsing.parse_boxed_answer` reads it. Unparseable
  answers count as wrong and are reported.

Several conditions on the same items (:func:`run_mcq_conditions`, used by ``eval``,
``sweep``, ``compare`` and λ selection) share one pass of the blocks below the steered
layer in ``loglik`` mode (:mod:`yapo.evaluate.conditions`); ``McqConfig.shared_lower``
= False (``--no-cache``) scores each condition with the whole model instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from torch import nn

from yapo._config import config_field
from yapo.data.prompts import answer_letter, format_mcq_prompt, format_prompt
from yapo.data.records import SETTINGS, CulturalMCQ, Setting
from yapo.errors import YapoError
from yapo.evaluate.conditions import score_conditions
from yapo.evaluate.metrics import PairScore
from yapo.evaluate.parsing import BOXED_INSTRUCTION, parse_boxed_answer
from yapo.evaluate.scoring import Throughput, score_choices_with_stats
from yapo.evaluate.textgen import generate_texts
from yapo.vectors.base import SteeringVector
from yapo.vectors.steer import Steer

McqMode = Literal["loglik", "generate"]
MCQ_MODES: tuple[McqMode, ...] = ("loglik", "generate")
ChoiceFormat = Literal["text", "letter", "letter_text"]
CHOICE_FORMATS: tuple[ChoiceFormat, ...] = ("text", "letter", "letter_text")


@dataclass
class McqConfig:
    """How MCQs are put to the model and scored."""

    mode: McqMode = config_field(
        "loglik", "MCQ scoring: loglik (base models) | generate (\\boxed{}, chat)."
    )
    choices: ChoiceFormat = config_field(
        "text", "loglik continuation: text | letter | letter_text."
    )
    normalize: bool = config_field(False, "Length-normalize log-likelihoods (per-token mean).")
    chat: bool | Literal["auto"] = config_field(
        "auto", "Chat template: auto (when the tokenizer has one) | on | off."
    )
    batch_size: int = config_field(16, "Rows per forward pass / prompts per generate.")
    max_new_tokens: int = config_field(128, "Tokens to generate (generate mode, answers).")
    shared_lower: bool = config_field(
        True,
        "Score several conditions from one pass of blocks 0..L (loglik only); False runs "
        "the whole model per condition (the oracle, --no-cache).",
    )

    def validate(self) -> None:
        if self.mode not in MCQ_MODES:
            raise YapoError(f"MCQ mode must be one of {MCQ_MODES}, got {self.mode!r}")
        if self.choices not in CHOICE_FORMATS:
            raise YapoError(f"choices must be one of {CHOICE_FORMATS}, got {self.choices!r}")
        if self.batch_size < 1:
            raise YapoError(f"batch_size must be at least 1, got {self.batch_size}")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class McqPrediction:
    """One item in one setting: what the model chose and whether it was right."""

    id: str
    question_id: str
    country: str
    language: str
    setting: Setting
    answer: int
    prediction: int | None
    correct: bool
    western: bool = False
    has_western: bool = False
    scores: list[float] | None = None
    output: str | None = None

    @property
    def parsed(self) -> bool:
        return self.prediction is not None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["parsed"] = self.parsed
        return data


@dataclass
class McqRun:
    """All predictions of one condition, and what it cost."""

    predictions: list[McqPrediction]
    throughput: Throughput = field(default_factory=Throughput)

    @property
    def unparseable(self) -> int:
        return sum(1 for p in self.predictions if not p.parsed)

    def pairs(self) -> list[PairScore]:
        """Each item's 0/1 correctness in both settings (NaN where a setting is missing)."""
        return predictions_to_pairs(self.predictions)

    def western_rate(self) -> dict[str, float | None]:
        """How often the Western/default option was chosen, per setting (items that have one)."""
        rates: dict[str, float | None] = {}
        for setting in SETTINGS:
            with_option = [p for p in self.predictions if p.setting == setting and p.has_western]
            chosen = sum(1 for p in with_option if p.western)
            rates[setting] = chosen / len(with_option) if with_option else None
        return rates


def predictions_to_pairs(predictions: Sequence[McqPrediction]) -> list[PairScore]:
    by_item: dict[str, dict[str, McqPrediction]] = {}
    for prediction in predictions:
        by_item.setdefault(prediction.id, {})[prediction.setting] = prediction
    pairs = []
    for item_id, settings in by_item.items():
        first = next(iter(settings.values()))
        values = {
            s: float(settings[s].correct) if s in settings else float("nan") for s in SETTINGS
        }
        pairs.append(
            PairScore(
                id=item_id,
                country=first.country,
                language=first.language,
                localized=values["localized"],
                nonlocalized=values["nonlocalized"],
            )
        )
    return pairs


def mcq_text(item: CulturalMCQ, setting: Setting, mode: McqMode) -> str:
    """The MCQ as the user turn: question, lettered options, (instruction,) ``Answer:``."""
    instruction = BOXED_INSTRUCTION if mode == "generate" else None
    return format_mcq_prompt(item.question(setting), item.options, instruction=instruction)


def mcq_choices(item: CulturalMCQ, form: ChoiceFormat) -> list[str]:
    """The scored continuation of each option — the same strings as the trainers'
    responses (:func:`yapo.data.cultural.mcq_to_preferences` with ``response=form``)."""
    if form == "letter":
        return [answer_letter(i) for i in range(len(item.options))]
    if form == "letter_text":
        return [f"{answer_letter(i)}. {option}" for i, option in enumerate(item.options)]
    return list(item.options)


def _jobs(
    tokenizer: Any, items: Sequence[CulturalMCQ], config: McqConfig
) -> tuple[list[tuple[CulturalMCQ, Setting]], list[str]]:
    if not items:
        raise YapoError("there are no MCQ items to evaluate")
    jobs = [(item, setting) for item in items for setting in SETTINGS]
    prompts = [
        format_prompt(tokenizer, mcq_text(item, setting, config.mode), chat=config.chat)
        for item, setting in jobs
    ]
    return jobs, prompts


def _loglik_run(
    jobs: list[tuple[CulturalMCQ, Setting]], scores: list[list[float]], stats: Throughput
) -> McqRun:
    predictions = []
    for (item, setting), row in zip(jobs, scores):
        chosen = max(range(len(row)), key=row.__getitem__)
        predictions.append(_prediction(item, setting, chosen, scores=row))
    return McqRun(predictions, stats)


def run_mcq_conditions(
    model: nn.Module,
    tokenizer: Any,
    items: Sequence[CulturalMCQ],
    conditions: Sequence[Steer],
    config: McqConfig | None = None,
) -> list[McqRun]:
    """:func:`run_mcq` under each condition, in order.

    In ``loglik`` mode with ``config.shared_lower`` the prompts' states below the
    steered layer are computed once for all conditions
    (:func:`yapo.evaluate.conditions.score_conditions`): the same predictions and
    scores, several times faster for sweeps. ``generate`` runs each condition in turn.
    """
    config = config or McqConfig()
    config.validate()
    if config.mode != "loglik":
        return [run_mcq_steered(model, tokenizer, items, config, c) for c in conditions]
    jobs, prompts = _jobs(tokenizer, items, config)
    choice_lists = [mcq_choices(item, config.choices) for item, _ in jobs]
    scored = score_conditions(
        model,
        tokenizer,
        prompts,
        choice_lists,
        conditions,
        batch_size=config.batch_size,
        normalize=config.normalize,
        shared_lower=config.shared_lower,
    )
    return [_loglik_run(jobs, s.scores, s.throughput) for s in scored]


def run_mcq(
    model: nn.Module,
    tokenizer: Any,
    items: Sequence[CulturalMCQ],
    config: McqConfig | None = None,
    *,
    vector: SteeringVector | None = None,
    multiplier: float = 0.0,
    direction: int = 1,
) -> McqRun:
    """Answer every item in both settings, steered by ``vector`` when given.

    To evaluate several conditions on the same items use :func:`run_mcq_conditions`.
    """
    return run_mcq_steered(model, tokenizer, items, config, Steer(vector, multiplier, direction))


def run_mcq_steered(
    model: nn.Module,
    tokenizer: Any,
    items: Sequence[CulturalMCQ],
    config: McqConfig | None,
    steer: Steer,
) -> McqRun:
    """:func:`run_mcq` under one :class:`Steer` (the form the evaluation code passes on)."""
    config = config or McqConfig()
    config.validate()
    jobs, prompts = _jobs(tokenizer, items, config)
    predictions: list[McqPrediction] = []
    if config.mode == "loglik":
        choice_lists = [mcq_choices(item, config.choices) for item, _ in jobs]
        scores, stats = score_choices_with_stats(
            model,
            tokenizer,
            prompts,
            choice_lists,
            steer=steer,
            batch_size=config.batch_size,
            normalize=config.normalize,
        )
        return _loglik_run(jobs, scores, stats)
    outputs, stats = generate_texts(
        model,
        tokenizer,
        prompts,
        steer=steer,
        max_new_tokens=config.max_new_tokens,
        batch_size=config.batch_size,
    )
    for (item, setting), output in zip(jobs, outputs):
        parsed = parse_boxed_answer(output, item.options)
        predictions.append(_prediction(item, setting, parsed, output=output))
    return McqRun(predictions, stats)


def _prediction(
    item: CulturalMCQ,
    setting: Setting,
    chosen: int | None,
    *,
    scores: list[float] | None = None,
    output: str | None = None,
) -> McqPrediction:
    western_index = item.western_index
    return McqPrediction(
        id=item.id,
        question_id=item.question_id,
        country=item.country,
        language=item.language,
        setting=setting,
        answer=item.answer,
        prediction=chosen,
        correct=chosen is not None and chosen == item.answer,
        western=chosen is not None and western_index is not None and chosen == western_index,
        has_western=western_index is not None,
        scores=scores,
        output=output,
    )
