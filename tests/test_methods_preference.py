"""The preference trainer (BiPO dense, YaPO sparse): fast path = straightforward path, and it learns."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from tests.conftest import HIDDEN, make_model, make_sae, make_tokenizer
from tests.methods_support import steerable_model, tiny_pairs

from yapo.errors import YapoError
from yapo.methods import PreferenceConfig, TrainingDiverged, train
from yapo.methods.api import _tokenize
from yapo.methods.batches import BatchCodes, collate
from yapo.methods.logprobs import full_logprobs
from yapo.methods.preference import (
    PreferenceTrainer,
    direction_for,
    epoch_order,
    preference_loss,
)
from yapo.methods.steering import DenseSteering, SparseSteering
from yapo.vectors import SparseVector, load_vector, sparse_delta_reference

FAST = {
    "learning_rate": 0.05,
    "lr_scale": 1.0,
    "warmup_steps": 1,
    "batch_size": 4,
    "progress": False,
}


def _train(method: str, arch: str = "llama", sae: Any = None, **kwargs: Any) -> Any:
    settings = {**FAST, **kwargs}
    return train(
        method,
        data=settings.pop("data", tiny_pairs(12)),
        model=settings.pop("model", None) or make_model(arch),
        tokenizer=make_tokenizer(),
        layer=settings.pop("layer", 1),
        sae=sae,
        **settings,
    )


@pytest.mark.parametrize(
    ("method", "arch", "activation"),
    [
        ("bipo", "llama", None),
        ("bipo", "gemma2", None),
        ("yapo", "llama", "jumprelu"),
        ("yapo", "gemma3", "relu"),
        ("yapo", "qwen2", "topk"),
    ],
)
def test_cached_loss_equals_no_cache_loss_at_every_step(
    method: str, arch: str, activation: str | None
) -> None:
    sae = make_sae(activation) if activation else None
    fast = _train(method, arch, sae=sae, epochs=3, cache=True)
    slow = _train(method, arch, sae=sae, epochs=3, cache=False)
    assert len(fast.losses()) == len(slow.losses()) == 9
    assert max(abs(a - b) for a, b in zip(fast.losses(), slow.losses())) < 1e-4
    assert min(fast.losses()) < math.log(2) - 1e-3  # v moved: the comparison is not trivial
    assert float(fast.vector.vector.norm()) > 0.1
    torch.testing.assert_close(fast.vector.vector, slow.vector.vector, atol=1e-4, rtol=1e-3)


def _margins(model: Any, vector: Any, pairs: Any, direction: int, multiplier: float) -> Any:
    tokenized = _tokenize(make_tokenizer(), pairs, 512, "auto")
    batch = collate(tokenized, list(range(len(tokenized))), 0)
    with torch.no_grad():
        ref = full_logprobs(model, batch.input_ids, batch.attention_mask, batch.response_mask)
        with vector.apply(model, multiplier=multiplier, direction=direction):
            pol = full_logprobs(model, batch.input_ids, batch.attention_mask, batch.response_mask)
    return preference_loss(pol, ref, direction, 0.1)[1]


def test_yapo_raises_margin_for_plus_and_lowers_it_for_minus() -> None:
    model = steerable_model()
    sae = make_sae()
    pairs = tiny_pairs(12)
    result = _train("yapo", sae=sae, model=model, data=pairs, epochs=8)
    assert sum(result.losses()[-3:]) / 3 < 0.3
    plus = _margins(model, result.vector, pairs, 1, 1.0)
    minus = _margins(model, result.vector, pairs, -1, 1.0)
    assert float(plus.mean()) > 0.5 and float((plus > 0).float().mean()) == 1.0
    assert float(minus.mean()) < -0.5 and float((minus < 0).float().mean()) == 1.0
    held_out = tiny_pairs(6, seed=5)  # new prompts: the learned preference generalises
    assert float(_margins(model, result.vector, held_out, 1, 1.0).mean()) > 0


def test_latents_that_never_fire_stay_exactly_zero() -> None:
    sae = make_sae("relu", d_sae=96)
    with torch.no_grad():
        sae.b_enc[:40] = -1e4  # these latents can never fire
    model = make_model("llama")
    trainer = _trainer("yapo", model, sae, epochs=4)
    result = trainer.train()
    v = result.vector.vector
    fired = torch.zeros(sae.d_sae, dtype=torch.bool)
    for code in trainer.train_cache.codes.values():
        fired[code.latents] = True
    assert not bool(fired[:40].any())
    assert bool((v[:40] == 0).all())
    assert bool((v[~fired] == 0).all())  # also latents that are merely silent on this data
    assert int((v != 0).sum()) > 5
    assert result.records[-1]["nonzero"] == int((v != 0).sum())


def _trainer(
    method: str, model: Any, sae: Any = None, multiplier: float = 1.0, **settings: Any
) -> PreferenceTrainer:
    config = PreferenceConfig(
        learning_rate=0.05, lr_scale=1.0, warmup_steps=1, multiplier=multiplier, **settings
    )
    steering = SparseSteering(sae, multiplier) if sae else DenseSteering(HIDDEN, multiplier)
    pairs = _tokenize(make_tokenizer(), tiny_pairs(12), 512, "auto")
    return PreferenceTrainer(model, 1, steering, pairs, 0, config, method=method, progress=False)


@pytest.mark.parametrize("activation", ["jumprelu", "relu", "topk"])
def test_sparse_fast_delta_equals_eq3_in_value_and_gradient(activation: str) -> None:
    sae = make_sae(activation).requires_grad_(False)
    g = torch.Generator().manual_seed(1)
    states = torch.randn(2, 5, HIDDEN, generator=g) * 2
    codes = sae.encode(states.view(-1, HIDDEN))
    active = torch.nonzero(codes.abs().sum(0) > 0).flatten()
    mask = torch.zeros(sae.d_sae, dtype=torch.bool)
    mask[active] = True
    batch_codes = BatchCodes(active, codes[:, active], mask)
    for direction in (1, -1):
        a, b = SparseSteering(sae, 1.5), SparseSteering(sae, 1.5)
        with torch.no_grad():
            init = torch.randn(sae.d_sae, generator=g) * 0.5
            init[::3] = 0.0
            a.vector.copy_(init)
            b.vector.copy_(init)
        fast = a.fast_delta(states, batch_codes, direction)
        slow = b.hook_delta(states, direction)
        u = 1.5 * direction * init
        torch.testing.assert_close(slow, sparse_delta_reference(sae, states, u))
        torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-4)
        weights = torch.randn(fast.shape, generator=g)
        (fast * weights).sum().backward()
        (slow * weights).sum().backward()
        assert a.vector.grad is not None and b.vector.grad is not None
        torch.testing.assert_close(a.vector.grad, b.vector.grad, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("method", ["bipo", "yapo"])
def test_saved_vector_reproduces_training_time_steering(method: str, tmp_path: Path) -> None:
    model = make_model("llama")
    sae = make_sae() if method == "yapo" else None
    trainer = _trainer(method, model, sae, multiplier=2.0, epochs=2)
    result = trainer.train()
    folder = result.vector.save(tmp_path / "vec")
    loaded = load_vector(folder, sae=sae)
    assert loaded.meta.method == method
    assert loaded.meta.hyperparameters == {}  # none given to the bare trainer
    assert isinstance(loaded, SparseVector) == (method == "yapo")
    batch = collate(trainer.train_pairs[:4], [0, 1, 2, 3], 0)
    for direction in (1, -1):
        with torch.no_grad():
            trained = trainer.policy_logprobs(batch, trainer.train_cache, direction)
            with loaded.apply(model, multiplier=2.0, direction=direction):
                applied = full_logprobs(
                    model, batch.input_ids, batch.attention_mask, batch.response_mask
                )
        torch.testing.assert_close(applied, trained, atol=1e-4, rtol=0)


def test_vector_records_method_and_hyperparameters() -> None:
    result = _train("bipo", epochs=1, beta=0.2, seed=3)
    hyper = result.vector.meta.hyperparameters
    assert result.vector.meta.method == "bipo"
    assert hyper["beta"] == 0.2 and hyper["seed"] == 3 and hyper["learning_rate"] == 0.05
    assert hyper["train_pairs"] == 12 and hyper["layer"] == 1


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_checkpoint(tmp_path: Path) -> None:
    def poison(record: dict[str, Any]) -> None:
        if record["step"] == 4:  # after epoch 1 (3 steps) and one more step
            vector.data.fill_(float("nan"))

    model = make_model("llama")
    trainer = _trainer("bipo", model, epochs=3)
    vector = trainer.steering.vector
    from yapo.methods.runs import RunFolder

    trainer.run = RunFolder(tmp_path / "run")
    trainer.run.start({"settings": {}}, resume=False)
    trainer.callbacks = [poison]
    with pytest.raises(TrainingDiverged, match=r"NaN or infinite at step 5.*epoch-0001"):
        trainer.train()
    checkpoints = trainer.run.checkpoints()
    assert [p.name for _, p in checkpoints] == ["epoch-0001"]
    assert bool(torch.isfinite(load_vector(checkpoints[0][1] / "vector").vector).all())


def test_directions_and_orders_are_seeded() -> None:
    draws = [direction_for(0, s) for s in range(1, 201)]
    assert set(draws) == {1, -1} and 70 < draws.count(1) < 130
    assert draws == [direction_for(0, s) for s in range(1, 201)]
    assert draws != [direction_for(1, s) for s in range(1, 201)]
    assert all(direction_for(0, s, bidirectional=False) == 1 for s in range(1, 50))
    order = epoch_order(0, 0, 10)
    assert sorted(order) == list(range(10)) and order != epoch_order(0, 1, 10)


def test_learning_rate_schedule_warms_up_then_decays() -> None:
    result = _train("bipo", epochs=4, warmup_steps=4)  # 12 steps
    lrs = [r["lr"] for r in result.records if r["kind"] == "train"]
    assert lrs[:5] == pytest.approx([0.0, 0.0125, 0.025, 0.0375, 0.05])
    assert all(a >= b for a, b in itertools.pairwise(lrs[4:])) and lrs[-1] < 0.01


def test_bad_settings_are_refused() -> None:
    with pytest.raises(YapoError, match="batch_size"):
        _train("bipo", batch_size=0)
    with pytest.raises(YapoError, match="unknown training setting"):
        _train("bipo", learning_rat=0.1)
    with pytest.raises(YapoError, match="unknown method"):
        _train("dpo")
    with pytest.raises(YapoError, match="SAE"):
        _train("yapo")  # a tiny model is not the default one: an SAE must be given
