"""RePS, the reference-free objective, for dense (BiPO) and sparse (YaPO) vectors.

Oracles are written from the formula (docs/training.md, "RePS") with plain hooks and full
forwards; the trainer's fast path must agree with them and with its own no-cache path.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
from tests.conftest import HIDDEN, make_model, make_sae, make_tokenizer
from tests.methods_support import steerable_model, tiny_pairs
from torch import Tensor, nn

from yapo.errors import YapoError
from yapo.intervene import add_to_layer
from yapo.methods import PreferenceConfig, train
from yapo.methods.api import _tokenize
from yapo.methods.batches import BatchCodes, collate
from yapo.methods.logprobs import full_logprobs
from yapo.methods.objectives import preference_loss, reps_factor, reps_loss, reps_scales
from yapo.methods.preference import PreferenceTrainer
from yapo.methods.steering import DenseSteering, SparseSteering
from yapo.models.layers import decoder_blocks
from yapo.sae.model import SAE

FAST: dict[str, Any] = {
    "learning_rate": 0.05,
    "lr_scale": 1.0,
    "warmup_steps": 1,
    "batch_size": 4,
    "progress": False,
    "objective": "reps",
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


def _trainer(model: nn.Module, sae: SAE | None, **settings: Any) -> PreferenceTrainer:
    base: dict[str, Any] = {
        "learning_rate": 0.05,
        "lr_scale": 1.0,
        "warmup_steps": 1,
        "objective": "reps",
    }
    config = PreferenceConfig(**{**base, **settings})
    steering = (
        SparseSteering(sae, config.multiplier) if sae else DenseSteering(HIDDEN, config.multiplier)
    )
    pairs = _tokenize(make_tokenizer(), tiny_pairs(12), 512, "auto")
    method = "yapo" if sae else "bipo"
    return PreferenceTrainer(model, 1, steering, pairs, 0, config, method=method, progress=False)


# ----------------------------------------------------------------------------- the loss
def test_reps_loss_equals_the_formula_pair_by_pair() -> None:
    g = torch.Generator().manual_seed(0)
    steered = -torch.rand(6, generator=g) * 20
    nulled = -torch.rand(6, generator=g) * 20
    reference = -torch.rand(6, generator=g) * 20
    lengths = torch.tensor([3, 5, 2, 4, 1, 6])
    terms = reps_loss(steered, nulled, reference, lengths)
    for i in range(3):
        w, lo = i, i + 3
        beta_plus = max(float(reference[lo] - reference[w]), 1.0)
        beta_minus = max(float(reference[w] - reference[lo]), 1.0)
        plus = beta_plus * float(steered[w]) / int(lengths[w]) - float(steered[lo]) / int(
            lengths[lo]
        )
        minus = beta_minus * float(nulled[lo]) / int(lengths[lo]) - float(nulled[w]) / int(
            lengths[w]
        )
        expected = 0.5 * (math.log1p(math.exp(-plus)) + math.log1p(math.exp(-minus)))
        assert float(terms.steer_margin[i]) == pytest.approx(plus, rel=1e-5)
        assert float(terms.null_margin[i]) == pytest.approx(minus, rel=1e-5)
        assert float(terms.losses[i]) == pytest.approx(expected, rel=1e-5)
    plus_scale, minus_scale = reps_scales(reference)
    assert bool((plus_scale >= 1).all()) and bool((minus_scale >= 1).all())
    assert bool(((plus_scale == 1) | (minus_scale == 1)).all())  # at most one is up-weighted


def test_scales_are_constants_and_the_loss_has_no_reference_term() -> None:
    steered = torch.tensor([-4.0, -6.0], requires_grad=True)
    nulled = torch.tensor([-5.0, -5.0])
    reference = torch.tensor([-9.0, -3.0], requires_grad=True)
    terms = reps_loss(steered, nulled, reference, torch.tensor([2, 2]))
    terms.losses.sum().backward()  # type: ignore[no-untyped-call]
    assert reference.grad is None  # β± are detached: no gradient path through p
    # Moving the reference by a constant changes nothing (only differences enter β±).
    shifted = reps_loss(steered, nulled, reference.detach() + 7.0, torch.tensor([2, 2]))
    assert torch.equal(shifted.losses, terms.losses.detach())


def test_factors_are_seeded_and_cover_the_set() -> None:
    factors = (1.0, 2.0, 5.0)
    draws = [reps_factor(0, s, factors) for s in range(1, 301)]
    assert set(draws) == set(factors)
    assert draws == [reps_factor(0, s, factors) for s in range(1, 301)]
    assert draws != [reps_factor(1, s, factors) for s in range(1, 301)]


def test_bad_objective_settings_are_refused() -> None:
    with pytest.raises(YapoError, match="objective must be one of bipo, reps"):
        PreferenceConfig(objective="simpo").validate()
    with pytest.raises(YapoError, match="reps_factors"):
        PreferenceConfig(objective="reps", reps_factors=(1.0, -2.0)).validate()
    with pytest.raises(YapoError, match="reps_factors"):
        PreferenceConfig(reps_factors=()).validate()


# ------------------------------------------------------------------ the null intervention
def _null_dense_oracle(h: Tensor, v: Tensor) -> Tensor:
    """``h - ReLU(h·v)/‖v‖² v`` written out, row by row."""
    out = h.clone()
    flat = out.view(-1, h.shape[-1])
    for row in range(flat.shape[0]):
        dot = float(flat[row] @ v)
        if dot > 0:
            flat[row] = flat[row] - dot / float(v @ v) * v
    return out


def _null_sparse_oracle(sae: SAE, h: Tensor, v: Tensor) -> Tensor:
    """Eq. 3 with ``u_t = -ReLU(s_t·v)/‖v‖² v``: ``Dec(ReLU(s + u_t)) + h - Dec(s)``."""
    s = sae.encode(h)
    c = torch.relu(s @ v) / (v @ v)
    return sae.decode(torch.relu(s - c.unsqueeze(-1) * v)) + h - sae.decode(s)


def test_dense_null_removes_the_positive_component_along_v() -> None:
    g = torch.Generator().manual_seed(2)
    h = torch.randn(2, 5, HIDDEN, generator=g)
    steering = DenseSteering(HIDDEN, multiplier=3.0)
    with torch.no_grad():
        steering.vector.copy_(torch.randn(HIDDEN, generator=g))
    v = steering.vector.detach()
    nulled = (h + steering.null_hook_delta(h)).detach()
    torch.testing.assert_close(nulled, _null_dense_oracle(h, v), atol=1e-5, rtol=1e-5)
    assert float((nulled @ v).max()) < 1e-4  # no positive component left ...
    negative = (h @ v) < 0
    torch.testing.assert_close(nulled[negative], h[negative])  # ... and negative ones kept
    torch.testing.assert_close(steering.null_fast_delta(h, None), steering.null_hook_delta(h))
    with torch.no_grad():
        steering.vector.mul_(7.0)  # scale-free: neither λ nor ‖v‖ matters
    torch.testing.assert_close(h + steering.null_hook_delta(h), nulled, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("sparse", [False, True])
def test_null_is_the_identity_with_zero_gradient_at_v_zero(sparse: bool) -> None:
    sae = make_sae("relu").requires_grad_(False)
    steering = SparseSteering(sae) if sparse else DenseSteering(HIDDEN)
    h = torch.randn(2, 4, HIDDEN, generator=torch.Generator().manual_seed(3))
    delta = steering.null_hook_delta(h)
    assert float(delta.detach().abs().max()) == 0.0
    delta.sum().backward()
    grad = steering.vector.grad
    assert grad is None or float(grad.abs().max()) == 0.0


def _batch_codes(sae: SAE, states: Tensor) -> BatchCodes:
    codes = sae.encode(states.view(-1, states.shape[-1]))
    active = torch.nonzero(codes.abs().sum(0) > 0).flatten()
    mask = torch.zeros(sae.d_sae, dtype=torch.bool)
    mask[active] = True
    return BatchCodes(active, codes[:, active], mask)


@pytest.mark.parametrize("activation", ["jumprelu", "relu", "topk"])
def test_sparse_null_fast_equals_eq3_in_value_and_gradient(activation: str) -> None:
    sae = make_sae(activation).requires_grad_(False)
    g = torch.Generator().manual_seed(4)
    states = torch.randn(2, 5, HIDDEN, generator=g) * 2
    batch_codes = _batch_codes(sae, states)
    a, b = SparseSteering(sae, 1.5), SparseSteering(sae, 1.5)
    init = torch.randn(sae.d_sae, generator=g)
    init[::3] = 0.0
    with torch.no_grad():
        a.vector.copy_(init)
        b.vector.copy_(init)
    fast = a.null_fast_delta(states, batch_codes)
    slow = b.null_hook_delta(states)
    torch.testing.assert_close(states + slow, _null_sparse_oracle(sae, states, init))
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-4)
    weights = torch.randn(fast.shape, generator=g)
    (fast * weights).sum().backward()
    (slow * weights).sum().backward()
    assert a.vector.grad is not None and b.vector.grad is not None
    torch.testing.assert_close(a.vector.grad, b.vector.grad, atol=1e-4, rtol=1e-4)
    silent = ~batch_codes.active_mask & (init == 0)
    assert bool((a.vector.grad[silent] == 0).all())  # a silent latent at v_i = 0 stays put


# ---------------------------------------------------------------- the trainer, end to end
@pytest.mark.parametrize(
    ("method", "arch", "activation"),
    [("bipo", "llama", None), ("bipo", "gemma2", None), ("yapo", "llama", "jumprelu")],
)
def test_cached_reps_equals_no_cache_reps_at_every_step(
    method: str, arch: str, activation: str | None
) -> None:
    sae = make_sae(activation) if activation else None
    fast = _train(method, arch, sae=sae, epochs=3, cache=True)
    slow = _train(method, arch, sae=sae, epochs=3, cache=False)
    assert len(fast.losses()) == len(slow.losses()) == 9
    assert max(abs(a - b) for a, b in zip(fast.losses(), slow.losses())) < 1e-4
    assert float(fast.vector.vector.norm()) > 0.1  # v moved: the comparison is not trivial
    torch.testing.assert_close(fast.vector.vector, slow.vector.vector, atol=1e-4, rtol=1e-3)
    assert fast.vector.meta.hyperparameters["objective"] == "reps"


def _oracle_reps_losses(
    model: nn.Module, trainer: PreferenceTrainer, ids: list[int], factor: float
) -> list[float]:
    """RePS of ``ids`` from full forwards: steered through the saved vector's own hooks,
    nulled through a hand-written hook, the unsteered model for β±."""
    pairs = [trainer.train_pairs[i] for i in ids]
    batch = collate(pairs, ids, 0)
    args = (batch.input_ids, batch.attention_mask, batch.response_mask)
    steering = trainer.steering
    v = steering.vector.detach().clone()
    vector = trainer.current_vector()
    with torch.no_grad():
        reference = full_logprobs(model, *args)
        with vector.apply(model, multiplier=factor * steering.multiplier, direction=1):
            steered = full_logprobs(model, *args)
        if isinstance(steering, SparseSteering):
            sae = steering.sae

            def null(h: Tensor) -> Tensor:
                return _null_sparse_oracle(sae, h, v) - h
        else:

            def null(h: Tensor) -> Tensor:
                return _null_dense_oracle(h, v) - h

        with add_to_layer(model, 1, null):
            nulled = full_logprobs(model, *args)
    lengths = batch.response_mask.sum(dim=1)
    n = len(ids)
    out = []
    for i in range(n):
        w, lo = i, i + n
        beta_plus = max(float(reference[lo] - reference[w]), 1.0)
        beta_minus = max(float(reference[w] - reference[lo]), 1.0)
        plus = beta_plus * float(steered[w] / lengths[w]) - float(steered[lo] / lengths[lo])
        minus = beta_minus * float(nulled[lo] / lengths[lo]) - float(nulled[w] / lengths[w])
        out.append(
            0.5 * (-math.log(1 / (1 + math.exp(-plus))) - math.log(1 / (1 + math.exp(-minus))))
        )
    return out


@pytest.mark.parametrize("sparse", [False, True])
def test_trainer_loss_equals_the_oracle_after_training(sparse: bool) -> None:
    model = make_model("llama")
    sae = make_sae() if sparse else None
    trainer = _trainer(model, sae, epochs=2, multiplier=1.5, reps_factors=(1.0, 3.0))
    trainer.train()
    assert float(trainer.steering.vector.detach().norm()) > 0.1
    ids = [0, 3, 5, 7]
    for step in (1, 2, 3, 4):  # both factors get drawn
        factor = reps_factor(trainer.config.seed, step, trainer.config.reps_factors)
        with torch.no_grad():
            losses, _ = trainer.pair_losses(trainer.train_pairs, ids, trainer.train_cache, 1, step)
        oracle = _oracle_reps_losses(model, trainer, ids, factor)
        torch.testing.assert_close(losses, torch.tensor(oracle), atol=1e-4, rtol=1e-4)


@contextmanager
def _count_rows(block: nn.Module) -> Iterator[list[int]]:
    """Rows (sequences) that pass through ``block``, summed over calls."""
    seen: list[int] = []

    def hook(module: nn.Module, args: Any, kwargs: Any, output: Any) -> None:
        hidden = output[0] if isinstance(output, tuple) else output
        seen.append(int(hidden.shape[0]))

    handle = block.register_forward_hook(hook, with_kwargs=True)
    try:
        yield seen
    finally:
        handle.remove()


@pytest.mark.parametrize("sparse", [False, True])
def test_unsteered_model_runs_once_per_sequence_never_per_step(sparse: bool) -> None:
    model = make_model("llama")
    sae = make_sae() if sparse else None
    trainer = _trainer(model, sae, epochs=3, verify_split=False)
    blocks = decoder_blocks(model)
    with _count_rows(blocks[0]) as lower, _count_rows(blocks[-1]) as upper:
        result = trainer.train()
    n = len(trainer.train_pairs)
    assert result.steps == 9
    # Blocks 0..L (the unsteered part) saw every sequence exactly once, in the cache fill.
    assert sum(lower) == 2 * n
    # The top block: the unsteered reference pass once per sequence (β±), then per step
    # only the two steered passes (α and null) over the step's 2B rows.
    steps_rows = sum(2 * 2 * len(ids) for ids in _step_ids(trainer))
    assert sum(upper) == 2 * n + steps_rows
    # β± are the unsteered model's own log-probs, cached.
    batch = collate(trainer.train_pairs, list(range(n)), 0)
    with torch.no_grad():
        unsteered = full_logprobs(model, batch.input_ids, batch.attention_mask, batch.response_mask)
    cached = trainer.train_cache.references(batch, torch.device("cpu"))
    torch.testing.assert_close(cached, unsteered, atol=1e-4, rtol=1e-5)


def _step_ids(trainer: PreferenceTrainer) -> list[list[int]]:
    from yapo.methods.preference import epoch_order

    size = trainer.config.batch_size
    out = []
    for step in range(trainer.total_steps):
        epoch, position = divmod(step, trainer.steps_per_epoch)
        order = epoch_order(trainer.config.seed, epoch, len(trainer.train_pairs))
        out.append(order[position * size : (position + 1) * size])
    return out


class Killed(Exception):
    """Stands in for a process killed mid-run."""


@pytest.mark.parametrize("method", ["bipo", "yapo"])
def test_killed_and_resumed_reps_run_is_bit_identical(tmp_path: Path, method: str) -> None:
    def run(out: Path, **kwargs: Any) -> Any:
        return _train(
            method,
            sae=make_sae() if method == "yapo" else None,
            out=out,
            eval_data=tiny_pairs(4, seed=9),
            epochs=3,
            warmup_steps=2,
            checkpoint_every=2,
            **kwargs,
        )

    whole = run(tmp_path / "whole")

    def kill(record: dict[str, Any]) -> None:
        if record["step"] == 7:
            raise Killed

    with pytest.raises(Killed):
        run(tmp_path / "cut", callbacks=[kill])
    resumed = run(tmp_path / "cut", resume=True)
    assert torch.equal(resumed.vector.vector, whole.vector.vector)

    def comparable(path: Path) -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in path.open()]
        return [{k: v for k, v in r.items() if k != "seconds"} for r in lines]

    cut = comparable(tmp_path / "cut" / "metrics.jsonl")
    assert cut == comparable(tmp_path / "whole" / "metrics.jsonl")
    evals = [r for r in cut if r["kind"] == "eval"]
    assert evals and all(
        r["eval_loss"] == pytest.approx((r["eval_loss_d+1"] + r["eval_loss_d-1"]) / 2)
        for r in evals
    )


# ----------------------------------------------------------------------------- it learns
def _dpo_margins(model: nn.Module, vector: Any, pairs: Any, multiplier: float) -> Tensor:
    """The chosen-over-rejected margin that steering adds, from full forwards."""
    tokenized = _tokenize(make_tokenizer(), pairs, 512, "auto")
    batch = collate(tokenized, list(range(len(tokenized))), 0)
    args = (batch.input_ids, batch.attention_mask, batch.response_mask)
    with torch.no_grad():
        reference = full_logprobs(model, *args)
        with vector.apply(model, multiplier=multiplier, direction=1):
            policy = full_logprobs(model, *args)
    return preference_loss(policy, reference, 1, 0.1)[1]


@pytest.mark.parametrize("sparse", [False, True])
def test_reps_raises_the_chosen_over_rejected_margin(sparse: bool) -> None:
    model = steerable_model()
    sae = make_sae() if sparse else None
    pairs = tiny_pairs(12)
    result = _train(
        "yapo" if sparse else "bipo",
        sae=sae,
        model=model,
        data=pairs,
        epochs=8,
        reps_factors=(1.0, 2.0),
    )
    losses = result.losses()
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.5
    margins = _dpo_margins(model, result.vector, pairs, 1.0)
    assert float(margins.mean()) > 1.0 and float((margins > 0).float().mean()) >= 0.9
    held_out = _dpo_margins(model, result.vector, tiny_pairs(6, seed=5), 1.0)
    assert float(held_out.mean()) > 0  # the learned preference generalises to new prompts


# ---------------------------------------------------------------------- yapo compare / demo
def test_compare_accepts_the_reps_variants_and_trains_them_with_reps(tmp_path: Path) -> None:
    from yapo.compare import CompareConfig, _train, _training_key, comparison_training
    from yapo.methods.registry import DEFAULT_METHODS, method_objective, parse_methods

    assert parse_methods("yapo-reps, bipo-reps,caa") == ("yapo-reps", "bipo-reps", "caa")
    assert CompareConfig().methods == DEFAULT_METHODS  # the default comparison is unchanged
    CompareConfig(methods=("yapo-reps", "bipo-reps")).validate()
    assert method_objective("yapo-reps") == ("yapo", "reps")
    assert method_objective("bipo") == ("bipo", "bipo")
    with pytest.raises(YapoError, match="unknown method"):
        parse_methods("sas-reps")
    settings = CompareConfig(
        methods=("bipo-reps",), training=comparison_training(epochs=1), multiplier=1.0
    )
    pairs = tiny_pairs(8)
    sae = make_sae()
    keys = {m: _training_key(m, pairs, [], 1, sae, settings) for m in ("bipo", "bipo-reps")}
    assert keys["bipo"] != keys["bipo-reps"]  # a BiPO run is never reused for RePS
    assert "sae_checksum" in _training_key("yapo-reps", pairs, [], 1, sae, settings)
    for method in ("bipo-reps", "yapo-reps"):
        run_dir = tmp_path / method
        vector = _train(
            method=method,
            pairs=pairs,
            validation_pairs=[],
            model=make_model("llama"),
            tokenizer=make_tokenizer(),
            layer=1,
            sae=sae,
            run_dir=run_dir,
            settings=settings,
        )
        config = json.loads((run_dir / "config.json").read_text())["settings"]
        assert config["objective"] == "reps" and config["method"] == method.split("-")[0]
        assert vector.meta.method == method.split("-")[0]
        assert vector.meta.hyperparameters["objective"] == "reps"


# ------------------------------------------------------------------------- data parallel
_DP_WORKER = """
import sys
from pathlib import Path

import torch

from tests.conftest import make_model, make_sae, make_tokenizer
from tests.methods_support import tiny_pairs
from yapo.methods import train

torch.set_num_threads(1)
for method in ("bipo", "yapo"):
    result = train(
        method, data=tiny_pairs(10), eval_data=tiny_pairs(4, seed=1),
        model=make_model("llama"), tokenizer=make_tokenizer(), layer=1,
        sae=make_sae() if method == "yapo" else None, out=Path(sys.argv[1]) / method,
        epochs=2, batch_size=4, warmup_steps=1, learning_rate=0.05, lr_scale=1.0,
        objective="reps", reps_factors=(1.0, 2.0, 3.0), progress=False,
    )
    print(f"{method} steps={result.steps}")
"""


@pytest.mark.skipif(shutil.which("accelerate") is None, reason="accelerate CLI not installed")
def test_two_processes_train_the_same_reps_vector_as_one(tmp_path: Path) -> None:
    from tests.test_methods_distributed import _compare, _env, _free_port

    worker = tmp_path / "worker.py"
    worker.write_text(_DP_WORKER, encoding="utf-8")
    env = _env()
    single = subprocess.run(
        [sys.executable, str(worker), str(tmp_path / "one")],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert single.returncode == 0, single.stderr[-3000:]
    launch = [
        "accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(_free_port()), str(worker), str(tmp_path / "two"),
    ]  # fmt: skip
    double = subprocess.run(launch, env=env, capture_output=True, text=True, timeout=300)
    assert double.returncode == 0, double.stderr[-3000:]
    for method in ("bipo", "yapo"):
        assert double.stdout.count(f"{method} steps=6") == 2  # both ranks finished
        _compare(tmp_path / "one" / method, tmp_path / "two" / method, method)
