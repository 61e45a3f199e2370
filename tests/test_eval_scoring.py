"""Log-likelihood scoring: batched = one at a time = a plain forward; steering is exact."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from tests.conftest import HIDDEN, make_model, make_sae
from tests.test_eval_support import make_eval_tokenizer

from yapo import DenseVector, SparseVector, YapoError, decoder_blocks
from yapo.evaluate.scoring import encode_pair, score_choices, score_choices_with_stats

PROMPTS = [
    "w5 w6 w7 Answer :",
    "w9",
    "w11 w12 w13 w14 w15 w16 w17 w18 w19 w20 w21",
    "w30 w31 .",
]
CHOICES = [
    ["A", "B", "C"],
    ["w40 w41 w42", "w43", "w44 w45"],
    ["w50", "w51 w52 w53 w54", "w55 w56", "w57"],
    ["D", "w60 w61"],
]


def oracle(
    model: torch.nn.Module, tokenizer: Any, prompt: str, choice: str, steer: Any = None
) -> float:
    """Sum of the choice's token log-probs from one unpadded forward (optionally hooked)."""
    context = tokenizer(prompt)["input_ids"]
    continuation = tokenizer(choice, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([context + continuation])
    handle = None
    if steer is not None:
        vector, multiplier, direction = steer
        block = decoder_blocks(model)[vector.layer]

        def add_delta(_module: Any, _args: Any, output: Any) -> Any:
            hidden = output[0] if isinstance(output, tuple) else output
            steered = hidden + vector.delta(hidden, multiplier, direction)
            return (steered, *output[1:]) if isinstance(output, tuple) else steered

        handle = block.register_forward_hook(add_delta)
    try:
        with torch.no_grad():
            logits = model(ids).logits[0].float()
    finally:
        if handle is not None:
            handle.remove()
    log_probs = torch.log_softmax(logits, dim=-1)
    start = len(context)
    return float(sum(log_probs[t - 1, ids[0, t]] for t in range(start, ids.shape[1])))


def _sliding_gemma3() -> torch.nn.Module:
    """Gemma 3 with a 4-token sliding window on its local layers: shorter than the prompts,
    so the cached path must get the window right across the prefix/choice boundary."""
    from tests.conftest import _COMMON
    from transformers import AutoModelForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    config = Gemma3TextConfig(**_COMMON, head_dim=8, sliding_window=4)
    config.layer_types = ["sliding_attention", "full_attention"] * (config.num_hidden_layers // 2)
    return AutoModelForCausalLM.from_config(config).eval()


@pytest.mark.parametrize("prefix_cache", [True, False], ids=["prefix-cache", "whole-rows"])
@pytest.mark.parametrize("arch", ["llama", "gpt2", "gemma2", "gemma3", "gemma3-sliding"])
def test_batched_scores_equal_one_at_a_time_and_the_oracle(arch: str, prefix_cache: bool) -> None:
    model = _sliding_gemma3() if arch == "gemma3-sliding" else make_model(arch)
    tokenizer = make_eval_tokenizer()
    options = {"prefix_cache": prefix_cache}
    batched = score_choices(model, tokenizer, PROMPTS, CHOICES, batch_size=5, **options)
    single = [
        [
            score_choices(model, tokenizer, [p], [[c]], batch_size=1, **options)[0][0]
            for c in choices
        ]
        for p, choices in zip(PROMPTS, CHOICES)
    ]
    expected = [
        [oracle(model, tokenizer, p, c) for c in choices] for p, choices in zip(PROMPTS, CHOICES)
    ]
    for row_b, row_s, row_e in zip(batched, single, expected):
        assert row_b == pytest.approx(row_s, abs=1e-4)
        assert row_b == pytest.approx(row_e, abs=1e-4)
    everything = score_choices(model, tokenizer, PROMPTS, CHOICES, batch_size=64, **options)
    for row_b, row_all in zip(batched, everything):
        assert row_b == pytest.approx(row_all, abs=1e-4)


def test_prefix_cache_runs_each_prompt_once() -> None:
    model = make_model("llama")
    tokenizer = make_eval_tokenizer()
    _, cached = score_choices_with_stats(model, tokenizer, PROMPTS, CHOICES, batch_size=64)
    _, whole = score_choices_with_stats(
        model, tokenizer, PROMPTS, CHOICES, batch_size=64, prefix_cache=False
    )
    rows = sum(len(c) for c in CHOICES)
    assert cached.sequences == whole.sequences == rows
    assert (cached.forward_passes, whole.forward_passes) == (2, 1)
    # With 4 rows per batch, whole prompts go together: (4), (3), (2), (3) options.
    _, small = score_choices_with_stats(model, tokenizer, PROMPTS, CHOICES, batch_size=4)
    assert small.forward_passes == 2 * 4 and small.sequences == rows
    prompt_tokens = [len(tokenizer(p)["input_ids"]) for p in PROMPTS]
    choice_tokens = [len(c.split()) for choices in CHOICES for c in choices]
    assert whole.tokens == sum(n * len(c) for n, c in zip(prompt_tokens, CHOICES)) + sum(
        choice_tokens
    )
    # Each prompt minus its last token once, then [last token, *choice] per row.
    assert cached.tokens == sum(n - 1 for n in prompt_tokens) + sum(k + 1 for k in choice_tokens)


def test_normalize_divides_by_the_number_of_choice_tokens() -> None:
    model = make_model("llama")
    tokenizer = make_eval_tokenizer()
    total = score_choices(model, tokenizer, PROMPTS, CHOICES)
    mean = score_choices(model, tokenizer, PROMPTS, CHOICES, normalize=True)
    for options, row_total, row_mean in zip(CHOICES, total, mean):
        lengths = [len(c.split()) for c in options]
        assert row_mean == pytest.approx([t / n for t, n in zip(row_total, lengths)], abs=1e-6)


def _vectors(model: torch.nn.Module) -> list[DenseVector | SparseVector]:
    g = torch.Generator().manual_seed(3)
    dense = DenseVector.create(torch.randn(HIDDEN, generator=g), model, 1, method="bipo")
    sae = make_sae("jumprelu")
    sparse = SparseVector.create(torch.randn(sae.d_sae, generator=g), model, 1, sae, method="yapo")
    return [dense, sparse]


@pytest.mark.parametrize("prefix_cache", [True, False], ids=["prefix-cache", "whole-rows"])
@pytest.mark.parametrize("kind", ["dense", "sparse"])
def test_steered_scores_equal_a_manually_steered_forward(kind: str, prefix_cache: bool) -> None:
    model = make_model("llama")
    tokenizer = make_eval_tokenizer()
    vector = _vectors(model)[0 if kind == "dense" else 1]
    plain = score_choices(model, tokenizer, PROMPTS, CHOICES)
    for multiplier, direction in [(2.0, 1), (1.5, -1)]:
        steered = score_choices(
            model,
            tokenizer,
            PROMPTS,
            CHOICES,
            vector=vector,
            multiplier=multiplier,
            direction=direction,
            batch_size=3,
            prefix_cache=prefix_cache,
        )
        for p, options, row in zip(PROMPTS, CHOICES, steered):
            expected = [
                oracle(model, tokenizer, p, c, (vector, multiplier, direction)) for c in options
            ]
            assert row == pytest.approx(expected, abs=1e-4)
        flat = [x for row in steered for x in row]
        assert flat != pytest.approx([x for row in plain for x in row], abs=1e-3)
    # The hooks are gone afterwards, and λ = 0 is the unsteered model.
    assert score_choices(model, tokenizer, PROMPTS, CHOICES) == plain
    zero = score_choices(model, tokenizer, PROMPTS, CHOICES, vector=vector, multiplier=0.0)
    assert zero == plain


def test_chat_rendered_prompts_get_no_second_bos() -> None:
    tokenizer = make_eval_tokenizer(chat=True)
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "w5 w6"}], tokenize=False, add_generation_prompt=True
    )
    ids, n_choice = encode_pair(tokenizer, rendered, "w7 w8")
    assert ids.count(tokenizer.bos_token_id) == 1 and ids[0] == tokenizer.bos_token_id
    assert n_choice == 2
    plain_ids, _ = encode_pair(tokenizer, "w5 w6", "w7")
    assert plain_ids[0] == tokenizer.bos_token_id


def test_throughput_is_counted() -> None:
    model = make_model("llama")
    tokenizer = make_eval_tokenizer()
    _, stats = score_choices_with_stats(
        model, tokenizer, PROMPTS, CHOICES, batch_size=4, prefix_cache=False
    )
    rows = sum(len(c) for c in CHOICES)
    assert stats.sequences == rows
    assert stats.forward_passes == -(-rows // 4)
    expected_tokens = sum(
        len(encode_pair(tokenizer, p, c)[0])
        for p, options in zip(PROMPTS, CHOICES)
        for c in options
    )
    assert stats.tokens == expected_tokens
    report = stats.to_json()
    assert report["sequences_per_second"] > 0 and report["tokens_per_second"] > 0


def test_bad_inputs_raise_clear_errors() -> None:
    model = make_model("llama")
    tokenizer = make_eval_tokenizer()
    with pytest.raises(YapoError, match="prompts but"):
        score_choices(model, tokenizer, ["w1"], [["A"], ["B"]])
    with pytest.raises(YapoError, match="empty"):
        score_choices(model, tokenizer, ["w1"], [["A", ""]])
    with pytest.raises(YapoError, match="no choices"):
        score_choices(model, tokenizer, ["w1"], [[]])
    with pytest.raises(YapoError, match="batch_size"):
        score_choices(model, tokenizer, ["w1"], [["A"]], batch_size=0)
    with pytest.raises(YapoError, match="direction"):
        score_choices(model, tokenizer, ["w1"], [["A"]], direction=2)
    assert score_choices(model, tokenizer, [], []) == []
