"""Open-ended cultural questions: generate an answer in both settings, have a judge grade it.

The model sees the question only (localized: the country is named; non-localized: it is
not). The judge always sees the target country and the reference answer, so a
non-localized answer that falls back to a generic or Western default scores low on
cultural appropriateness — exactly the gap steering should close. Scores are 0–10
(four rubric parts); RCA and PNLG use them divided by 10. A failed judgement leaves that
answer unscored (NaN), is counted per condition, and never stops the run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from torch import nn

from yapo.data.prompts import format_prompt
from yapo.data.records import SETTINGS, OpenQuestion, Setting
from yapo.errors import YapoError
from yapo.evaluate.judge.base import Judge, Judgement
from yapo.evaluate.judge.cultural import JudgeRequest
from yapo.evaluate.metrics import PairScore
from yapo.evaluate.scoring import Throughput
from yapo.evaluate.textgen import generate_texts
from yapo.vectors.base import SteeringVector
from yapo.vectors.steer import Steer


@dataclass
class OpenConfig:
    """How open-ended answers are generated."""

    chat: bool | Literal["auto"] = "auto"
    batch_size: int = 8
    max_new_tokens: int = 128

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class OpenAnswer:
    """One question in one setting: the model's answer and its grade."""

    id: str
    question_id: str
    country: str
    language: str
    setting: Setting
    answer: str
    judgement: Judgement

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["judgement"] = self.judgement.to_json()
        return data


@dataclass
class OpenRun:
    """All answers of one condition, the generation cost, and the judge failures."""

    answers: list[OpenAnswer]
    throughput: Throughput = field(default_factory=Throughput)

    @property
    def failures(self) -> int:
        return sum(1 for a in self.answers if not a.judgement.ok)

    def failure_messages(self, limit: int = 10) -> list[str]:
        failed = [a for a in self.answers if not a.judgement.ok]
        return [f"{a.id}/{a.setting}: {a.judgement.error}" for a in failed[:limit]]

    def pairs(self) -> list[PairScore]:
        by_item: dict[str, dict[str, OpenAnswer]] = {}
        for answer in self.answers:
            by_item.setdefault(answer.id, {})[answer.setting] = answer
        pairs = []
        for item_id, settings in by_item.items():
            first = next(iter(settings.values()))
            values: dict[str, float] = {}
            for setting in SETTINGS:
                score = settings[setting].judgement.normalized if setting in settings else None
                values[setting] = float("nan") if score is None else score
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


def run_open(
    model: nn.Module,
    tokenizer: Any,
    questions: Sequence[OpenQuestion],
    judge: Judge,
    config: OpenConfig | None = None,
    *,
    vector: SteeringVector | None = None,
    multiplier: float = 0.0,
    direction: int = 1,
    key_prefix: str = "",
) -> OpenRun:
    """Answer every question in both settings (steered when asked), then judge them all."""
    steer = Steer(vector, multiplier, direction)
    return run_open_steered(model, tokenizer, questions, judge, config, steer, key_prefix)


def run_open_steered(
    model: nn.Module,
    tokenizer: Any,
    questions: Sequence[OpenQuestion],
    judge: Judge,
    config: OpenConfig | None,
    steer: Steer,
    key_prefix: str = "",
) -> OpenRun:
    """:func:`run_open` under one :class:`Steer` (the form the evaluation code passes on);
    ``key_prefix`` keeps the judge cache's keys of different conditions apart."""
    config = config or OpenConfig()
    if not questions:
        raise YapoError("there are no open-ended questions to evaluate")
    jobs = [(q, setting) for q in questions for setting in SETTINGS]
    prompts = [format_prompt(tokenizer, q.question(s), chat=config.chat) for q, s in jobs]
    outputs, stats = generate_texts(
        model,
        tokenizer,
        prompts,
        steer=steer,
        max_new_tokens=config.max_new_tokens,
        batch_size=config.batch_size,
    )
    requests = [
        JudgeRequest(
            key=f"{key_prefix}{q.id}/{s}",
            question=q.question(s),
            answer=output,
            reference=q.reference,
            country=q.country,
            language=q.language,
        )
        for (q, s), output in zip(jobs, outputs)
    ]
    judgements = judge.judge(requests)
    if len(judgements) != len(requests):
        raise YapoError(
            f"the judge returned {len(judgements)} judgements for {len(requests)} answers"
        )
    answers = [
        OpenAnswer(
            id=q.id,
            question_id=q.question_id,
            country=q.country,
            language=q.language,
            setting=s,
            answer=output,
            judgement=judgement,
        )
        for (q, s), output, judgement in zip(jobs, outputs, judgements)
    ]
    return OpenRun(answers, stats)
