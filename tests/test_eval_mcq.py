r"""MCQ answering: log-likelihood picks the best-scoring option; \boxed{} answers are parsed."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from tests.conftest import HIDDEN, make_model
from tests.test_eval_support import make_eval_tokenizer, make_items

from yapo import DenseVector, YapoError
from yapo.data.prompts import format_mcq_prompt, format_prompt
from yapo.evaluate import mcq as mcq_module
from yapo.evaluate.mcq import McqConfig, mcq_choices, run_mcq
from yapo.evaluate.parsing import boxed_contents, parse_boxed_answer
from yapo.evaluate.scoring import Throughput, score_choices

OPTIONS = ["Couscous", "Ful medames", "Pancakes"]


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (r"The answer is \boxed{B}.", 1),
        (r"\boxed{(c)}", 2),
        (r"\boxed{A. Couscous}", 0),
        (r"\boxed{ 2 }", 1),
        (r"$\boxed{\text{C}}$", 2),
        (r"\boxed{ful medames}", 1),
        (r"First \boxed{A}, no wait: \boxed{C}", 2),
        (r"\boxed{D}", None),  # no fourth option
        (r"\boxed{0}", None),  # numbers are 1-based
        (r"\boxed{Answer}", None),
        ("B", None),  # no box at all
        (r"\boxed{B", None),  # cut off
        ("", None),
    ],
)
def test_boxed_answers(reply: str, expected: int | None) -> None:
    assert parse_boxed_answer(reply, OPTIONS) == expected


def test_boxed_contents_handles_nesting() -> None:
    assert boxed_contents(r"\boxed{\text{A}} and \boxed {B}") == [r"\text{A}", "B"]


@pytest.mark.parametrize("choices", ["text", "letter", "letter_text"])
def test_loglik_mode_picks_the_argmax_of_score_choices(choices: str) -> None:
    model = make_model("llama")
    tokenizer = make_eval_tokenizer()
    items = make_items()
    config = McqConfig(choices=choices, batch_size=7)  # type: ignore[arg-type]
    run = run_mcq(model, tokenizer, items, config)
    assert len(run.predictions) == 2 * len(items)
    for prediction in run.predictions:
        item = next(i for i in items if i.id == prediction.id)
        prompt = format_mcq_prompt(item.question(prediction.setting), item.options)
        scores = score_choices(model, tokenizer, [prompt], [mcq_choices(item, config.choices)])[0]
        assert prediction.scores == pytest.approx(scores, abs=1e-4)
        best = max(range(len(scores)), key=scores.__getitem__)
        assert prediction.prediction == best
        assert prediction.correct == (best == item.answer)
        assert prediction.western == (best == 2)
    assert run.unparseable == 0
    assert run.throughput.sequences == 2 * len(items) * 3
    pairs = run.pairs()
    assert len(pairs) == len(items)
    by_id = {p.id: p for p in pairs}
    for prediction in run.predictions:
        assert getattr(by_id[prediction.id], prediction.setting) == float(prediction.correct)
    rates = run.western_rate()
    for setting in ("localized", "nonlocalized"):
        chosen = [p.western for p in run.predictions if p.setting == setting]
        assert rates[setting] == pytest.approx(sum(chosen) / len(chosen))


def test_choice_strings_match_the_training_responses() -> None:
    item = make_items()[0]
    assert mcq_choices(item, "text") == item.options
    assert mcq_choices(item, "letter") == ["A", "B", "C"]
    assert mcq_choices(item, "letter_text")[1] == f"B. {item.options[1]}"


def test_steering_changes_loglik_predictions_like_score_choices() -> None:
    model = make_model("llama")
    tokenizer = make_eval_tokenizer()
    items = make_items()
    g = torch.Generator().manual_seed(0)
    vector = DenseVector.create(torch.randn(HIDDEN, generator=g) * 4, model, 2, method="bipo")
    run = run_mcq(model, tokenizer, items, vector=vector, multiplier=1.5, direction=-1)
    for prediction in run.predictions[:4]:
        item = next(i for i in items if i.id == prediction.id)
        prompt = format_mcq_prompt(item.question(prediction.setting), item.options)
        expected = score_choices(
            model, tokenizer, [prompt], [item.options], vector=vector, multiplier=1.5, direction=-1
        )[0]
        assert prediction.scores == pytest.approx(expected, abs=1e-4)


def test_generate_mode_parses_and_counts_unparseable(monkeypatch: pytest.MonkeyPatch) -> None:
    model = make_model("llama")
    tokenizer = make_eval_tokenizer(chat=True)
    items = make_items()[:3]
    seen: dict[str, Any] = {}
    replies = [
        r"\boxed{A}",
        r"\boxed{B}",
        "I do not know",
        r"\boxed{2}",
        r"\boxed{Z}",
        r"\boxed{C}",
    ]

    def scripted(_model: Any, _tokenizer: Any, prompts: list[str], **kwargs: Any) -> Any:
        seen["prompts"], seen["kwargs"] = prompts, kwargs
        return replies, Throughput(sequences=len(prompts))

    monkeypatch.setattr(mcq_module, "generate_texts", scripted)
    run = run_mcq(model, tokenizer, items, McqConfig(mode="generate", max_new_tokens=33))
    assert [p.prediction for p in run.predictions] == [0, 1, None, 1, None, 2]
    assert run.unparseable == 2
    assert [p.correct for p in run.predictions] == [
        items[0].answer == 0,
        items[0].answer == 1,
        False,
        items[1].answer == 1,
        False,
        items[2].answer == 2,
    ]
    assert run.predictions[2].output == "I do not know"
    first = seen["prompts"][0]
    expected_user = format_mcq_prompt(
        items[0].localized, items[0].options, instruction=mcq_module.BOXED_INSTRUCTION
    )
    assert first == format_prompt(tokenizer, expected_user, chat="auto")
    assert "\\boxed{}" in first and first.startswith("<bos>")
    assert seen["kwargs"]["max_new_tokens"] == 33


def test_generate_mode_runs_a_real_model() -> None:
    model = make_model("llama")
    tokenizer = make_eval_tokenizer()
    items = make_items()[:2]
    run = run_mcq(model, tokenizer, items, McqConfig(mode="generate", max_new_tokens=3))
    assert len(run.predictions) == 4
    # A random tiny model never writes a well-formed \boxed{}: all wrong, all reported.
    assert run.unparseable == 4 and not any(p.correct for p in run.predictions)
    assert run.throughput.sequences == 4 and run.throughput.tokens <= 12


def test_bad_configuration_is_refused() -> None:
    model = make_model("llama")
    tokenizer = make_eval_tokenizer()
    with pytest.raises(YapoError, match="mode"):
        run_mcq(model, tokenizer, make_items(), McqConfig(mode="vibes"))  # type: ignore[arg-type]
    with pytest.raises(YapoError, match="choices"):
        run_mcq(model, tokenizer, make_items(), McqConfig(choices="words"))  # type: ignore[arg-type]
    with pytest.raises(YapoError, match="no MCQ items"):
        run_mcq(model, tokenizer, [])
