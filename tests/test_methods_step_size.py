"""Scale-free step size, warm-up from the run's length, best-validation vector, early stopping."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from tests.conftest import _COMMON, make_sae, make_tokenizer
from tests.methods_support import tiny_pairs
from transformers import AutoModelForCausalLM, LlamaConfig

from yapo.errors import YapoError
from yapo.methods import PreferenceConfig, train
from yapo.methods.runs import RunFolder
from yapo.sae import SAE

EXACT = {"max_grad_norm": None, "adam_eps": 1e-12, "warmup_steps": 1, "progress": False}


def _model(stream_scale: float = 1.0) -> Any:
    """A tiny Llama whose residual stream is exactly ``stream_scale`` × the base model's.

    Every block reads the stream through an RMSNorm, so scaling the embeddings and every
    block's output projections scales the whole stream (eps ~0 keeps it exact) while the
    final norm leaves the logits unchanged. The head is scaled ×30 so the task is learnable.
    """
    torch.manual_seed(0)
    config = LlamaConfig(**_COMMON, rms_norm_eps=1e-12)
    model = AutoModelForCausalLM.from_config(config).eval().requires_grad_(False)
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(30.0)
        model.get_input_embeddings().weight.mul_(stream_scale)
        for block in model.model.layers:
            block.self_attn.o_proj.weight.mul_(stream_scale)
            block.mlp.down_proj.weight.mul_(stream_scale)
    return model


def _sae(stream_scale: float = 1.0) -> SAE:
    """A ReLU SAE that codes the scaled stream as ``stream_scale`` × the base codes."""
    sae = make_sae("relu")
    with torch.no_grad():
        sae.b_enc.mul_(stream_scale)
        sae.b_dec.mul_(stream_scale)
    return sae


def _run(method: str, out: Path | None, stream_scale: float = 1.0, **settings: Any) -> Any:
    return train(
        method,
        data=tiny_pairs(12),
        model=_model(stream_scale),
        tokenizer=make_tokenizer(),
        layer=1,
        sae=_sae(stream_scale) if method == "yapo" else None,
        out=out,
        epochs=3,
        **{**EXACT, **settings},
    )


def _step_size(run: Path) -> dict[str, Any]:
    return dict(json.loads((run / "config.json").read_text())["step_size"])


@pytest.mark.parametrize("method", ["bipo", "yapo"])
def test_relative_step_is_the_absolute_step_times_the_measured_scale(
    method: str, tmp_path: Path
) -> None:
    relative = _run(method, tmp_path / "rel", learning_rate=0.02)
    size = _step_size(tmp_path / "rel")
    assert size["scale_measured"] is True and size["scale"] > 0
    assert size["effective_learning_rate"] == pytest.approx(0.02 * size["scale"])
    absolute = _run(method, tmp_path / "abs", learning_rate=0.02 * size["scale"], lr_scale=1.0)
    assert _step_size(tmp_path / "abs")["scale_measured"] is False
    assert relative.losses() == pytest.approx(absolute.losses(), abs=1e-6)
    assert torch.allclose(relative.vector.vector, absolute.vector.vector, atol=1e-6)


def test_measured_scale_is_the_rms_of_response_states() -> None:
    """The dense scale is sqrt(mean(h²)) over response positions of every training sequence."""
    from yapo.methods.api import _tokenize
    from yapo.methods.batches import collate
    from yapo.methods.preference import PreferenceTrainer
    from yapo.methods.steering import DenseSteering

    model, tokenizer = _model(), make_tokenizer()
    pairs = _tokenize(tokenizer, tiny_pairs(5), 512, False)
    trainer = PreferenceTrainer(
        model, 1, DenseSteering(32), pairs, 0, PreferenceConfig(cache=False), progress=False
    )
    batch = collate(pairs, list(range(5)), 0)
    hidden = model(batch.input_ids, attention_mask=batch.attention_mask, output_hidden_states=True)
    rows = hidden.hidden_states[2][batch.response_mask]  # output of block 1
    expected = float(rows.double().pow(2).mean().sqrt())
    assert trainer.measure_step_size().scale == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("method", ["bipo", "yapo"])
def test_relative_setting_is_invariant_to_the_stream_scale_and_absolute_is_not(
    method: str,
) -> None:
    base = _run(method, None, learning_rate=0.05)
    scaled = _run(method, None, stream_scale=100.0, learning_rate=0.05)
    assert min(base.losses()) < 0.6  # the vector learned: the comparison is not trivial
    assert base.losses() == pytest.approx(scaled.losses(), abs=1e-3)
    assert torch.allclose(base.vector.vector * 100.0, scaled.vector.vector, rtol=1e-3, atol=1e-3)

    absolute = 0.05 * 1.0  # one absolute rate for both models
    base_abs = _run(method, None, learning_rate=absolute, lr_scale=1.0)
    scaled_abs = _run(method, None, stream_scale=100.0, learning_rate=absolute, lr_scale=1.0)
    gap = max(abs(a - b) for a, b in zip(base_abs.losses(), scaled_abs.losses()))
    assert gap > 0.01


def test_warmup_follows_the_length_of_the_run(tmp_path: Path) -> None:
    settings = {**EXACT, "warmup_steps": None}
    result = train(
        "bipo",
        data=tiny_pairs(12),
        model=_model(),
        tokenizer=make_tokenizer(),
        layer=1,
        out=tmp_path / "run",
        epochs=10,  # 30 steps: warm-up = 10% = 3 steps
        **settings,
    )
    assert _step_size(tmp_path / "run")["warmup_steps"] == 3
    lrs = [r["lr"] for r in result.records if r["kind"] == "train"]
    peak = lrs.index(max(lrs))
    assert peak == 3 and all(a < b for a, b in itertools.pairwise(lrs[:4]))


def test_the_run_keeps_the_best_validation_vector_and_stops_after_patience(
    tmp_path: Path,
) -> None:
    out = tmp_path / "run"
    # two of the eight validation pairs prefer the other answer style: the validation loss
    # falls while the shared preference is learned, then rises as v over-commits to it
    held_out = tiny_pairs(8, seed=5)
    validation = [
        replace(p, chosen=p.rejected, rejected=p.chosen) if i < 2 else p
        for i, p in enumerate(held_out)
    ]
    result = train(
        "bipo",
        data=tiny_pairs(12),
        eval_data=validation,
        model=_model(),
        tokenizer=make_tokenizer(),
        layer=1,
        out=out,
        epochs=12,
        learning_rate=0.1,
        schedule="constant_with_warmup",
        early_stopping_patience=2,
        **EXACT,
    )
    evals = [r for r in result.records if r["kind"] == "eval"]
    losses = [r["eval_loss"] for r in evals]
    # oracle: the patience rule replayed on the evaluation losses
    best, stale, stop_at = float("inf"), 0, len(losses)
    for i, loss in enumerate(losses):
        best, stale = (loss, 0) if loss < best else (best, stale + 1)
        if stale >= 2:
            stop_at = i + 1
            break
    assert len(losses) == stop_at
    assert 0 < min(range(len(losses)), key=losses.__getitem__) < len(losses) - 1  # fell, rose
    best_index = min(range(len(losses)), key=losses.__getitem__)
    best_step = evals[best_index]["step"]
    config = json.loads((out / "config.json").read_text())
    assert config["best_step"] == best_step and config["finished"] is True
    assert stop_at < 12 and config["stopped_early"] is True  # it did stop early
    # the saved vector is the one of the best evaluation (its epoch checkpoint's vector)
    checkpoint = dict(RunFolder(out).checkpoints())[best_step]
    state = RunFolder.load_checkpoint(checkpoint)
    assert torch.equal(state.tensors["vector"], result.vector.vector)
    from yapo.vectors import load_vector

    assert torch.equal(load_vector(out / "vector").vector, result.vector.vector)


def test_bad_step_settings_are_refused() -> None:
    for bad in ({"lr_scale": 0.0}, {"warmup_fraction": 1.5}, {"early_stopping_patience": 0}):
        with pytest.raises(YapoError):
            PreferenceConfig(**bad).validate()  # type: ignore[arg-type]
