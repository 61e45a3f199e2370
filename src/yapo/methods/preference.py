"""The one preference trainer of BiPO (dense ``v``) and YaPO (sparse ``v`` through an SAE).

Bi-directional DPO (paper Eq. 4, Algorithm 1): each optimizer step draws
``d ∈ {-1, +1}`` and minimises, over a batch of pairs (prompt, chosen ``y_w``,
rejected ``y_l``),

    -log σ(d·β·[(log π(y_w|h') - log π(y_w|h)) - (log π(y_l|h') - log π(y_l|h))])

where ``h'`` is the steered layer-``L`` stream (``u = d·λ·v``), log π is summed over
response tokens, and only ``v`` (initialised at zero) is trained, with AdamW, a
warm-up + cosine schedule and gradient clipping. ``objective="reps"`` trains the same
vector with RePS instead (reference-free, a steering and a null term every step; see
:mod:`yapo.methods.objectives`); everything below holds for both objectives.

Fast by design, with the same numbers as the straightforward way (``cache=False``):
the layer-``L`` states, the reference log-probs and (YaPO) the SAE codes of every
sequence are computed once; each step runs only blocks ``L+1..N`` on
``states + delta``, with logits only at response positions, chosen and rejected in one
batch. Resume is bit-identical (see :mod:`yapo.methods.state`), and data-parallel
processes agree with one process (see :mod:`yapo.methods.distributed`).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from yapo._config import config_field
from yapo._finite import finite_problem
from yapo.errors import YapoError
from yapo.intervene import LayerSplit, add_to_layer, input_device
from yapo.methods.batches import Batch, SequenceCache, SparseCode, TokenizedPair, collate
from yapo.methods.distributed import Processes
from yapo.methods.early_stopping import BestTracker
from yapo.methods.logprobs import ResponseIndex, check_split_exact, full_logprobs, split_logprobs
from yapo.methods.objectives import (
    DEFAULT_REPS_FACTORS,
    OBJECTIVES,
    RepsTerms,
    reps_factor,
    reps_loss,
)
from yapo.methods.objectives import preference_loss as preference_loss  # re-exported
from yapo.methods.runs import RunFolder
from yapo.methods.scale import ScaleMeter, StepSize, check_scale, response_rows
from yapo.methods.state import capture, restore
from yapo.methods.steering import SparseSteering, Steering
from yapo.vectors.base import SteeringVector

StepCallback = Callable[[dict[str, Any]], None]
SCHEDULES = ("cosine", "linear", "constant", "constant_with_warmup")


class TrainingDiverged(YapoError):
    """The loss or the gradient became NaN or infinite."""


@dataclass
class PreferenceConfig:
    """Every setting of the preference trainer.

    The step size is *relative* (see :mod:`yapo.methods.scale`): the AdamW rate is
    ``learning_rate × scale``, where ``scale`` is measured on the training data (the RMS
    of what ``v`` is added to) unless ``lr_scale`` gives it; ``lr_scale=1`` makes
    ``learning_rate`` and ``weight_decay`` absolute, as in the paper (5e-4, decay 0 —
    the authors' scripts declare 0.05 but never pass it to their trainer). Warm-up is a
    fraction of the run's steps unless ``warmup_steps`` is given (the paper's 100 is
    longer than a whole small run). With evaluation pairs the run keeps the vector of
    the best evaluation loss (``keep_best``) and can stop early after
    ``early_stopping_patience`` evaluations without improvement.
    """

    beta: float = config_field(0.1, "DPO β.")
    learning_rate: float = config_field(
        0.01,
        "Learning rate relative to the measured scale of what v steers "
        "(absolute with --lr-scale 1; the paper: --lr 5e-4 --lr-scale 1).",
    )
    lr_scale: float | None = config_field(
        None, "Scale --lr and --weight-decay are relative to (default: measured)."
    )
    weight_decay: float = config_field(
        0.0, "AdamW decay, relative like --lr (holds |v_i| near scale/wd)."
    )
    adam_betas: tuple[float, float] = config_field((0.9, 0.999), "AdamW's β1, β2.")
    adam_eps: float = config_field(1e-8, "AdamW's ε.")
    warmup_steps: int | None = config_field(
        None, "Warm-up steps (default: --warmup-fraction of the run)."
    )
    warmup_fraction: float = config_field(0.1, "Warm-up as a fraction of the run's steps.")
    schedule: str = config_field("cosine", "cosine | linear | constant | constant_with_warmup")
    early_stopping_patience: int | None = config_field(
        None, "Stop after N evaluations without a lower eval loss (needs eval data)."
    )
    keep_best: bool = config_field(
        True, "With eval data, keep the vector of the best eval loss (else the last)."
    )
    max_grad_norm: float | None = config_field(1.0, "Gradient clipping (0: off).")
    batch_size: int = config_field(4, "Pairs per optimizer step (global).")
    epochs: int = config_field(20, "Passes over the training pairs.")
    seed: int = config_field(0, "Seed of the directions drawn, the pair order and the split.")
    multiplier: float = config_field(1.0, "Steering strength λ during training.")
    bidirectional: bool = config_field(True, "False: d = +1 at every step.")
    objective: str = config_field(
        "bipo", "bipo (bi-directional DPO) | reps (RePS, reference-free)."
    )
    reps_factors: tuple[float, ...] = config_field(
        DEFAULT_REPS_FACTORS, "RePS: the factors α drawn per step (times λ)."
    )
    max_prompt_length: int = config_field(512, "Most prompt tokens kept per pair.")
    cache: bool = config_field(True, "False: the straightforward path (full forward every step).")
    max_steps: int | None = config_field(None, "Stop after this many steps.")
    eval_every: int | None = config_field(
        None, "Also evaluate every N steps (evaluation also runs after every epoch)."
    )
    checkpoint_every: int | None = config_field(
        None, "Also checkpoint every N steps (a checkpoint is also written every epoch)."
    )
    cache_batch_size: int = config_field(8, "Pairs per forward pass when filling the cache.")
    eval_batch_size: int = config_field(8, "Pairs per forward pass when evaluating.")
    verify_split: bool = config_field(
        True, "Check the layer split against a full forward before training."
    )

    def __post_init__(self) -> None:
        self.adam_betas = (float(self.adam_betas[0]), float(self.adam_betas[1]))
        self.reps_factors = tuple(float(f) for f in self.reps_factors)

    def validate(self) -> None:
        problems = []
        if self.batch_size < 1:
            problems.append(f"batch_size must be >= 1, got {self.batch_size}")
        if self.epochs < 1:
            problems.append(f"epochs must be >= 1, got {self.epochs}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            problems.append(f"learning_rate must be > 0, got {self.learning_rate}")
        if not self.beta > 0:
            problems.append(f"beta must be > 0, got {self.beta}")
        if self.warmup_steps is not None and self.warmup_steps < 0:
            problems.append(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if not 0 <= self.warmup_fraction < 1:
            problems.append(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
        if self.lr_scale is not None and not (math.isfinite(self.lr_scale) and self.lr_scale > 0):
            problems.append(f"lr_scale must be a positive number, got {self.lr_scale}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            problems.append(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            problems.append(
                f"early_stopping_patience must be >= 1, got {self.early_stopping_patience}"
            )
        if self.schedule not in SCHEDULES:
            problems.append(f"schedule must be one of {', '.join(SCHEDULES)}")
        if self.max_steps is not None and self.max_steps < 1:
            problems.append(f"max_steps must be >= 1, got {self.max_steps}")
        for name in ("eval_every", "checkpoint_every"):
            value = getattr(self, name)
            if value is not None and value < 1:
                problems.append(f"{name} must be >= 1, got {value}")
        if self.objective not in OBJECTIVES:
            problems.append(f"objective must be one of {', '.join(OBJECTIVES)}")
        if not self.reps_factors or not all(math.isfinite(f) and f > 0 for f in self.reps_factors):
            problems.append(f"reps_factors must be positive numbers, got {self.reps_factors}")
        if problems:
            raise YapoError("invalid training settings: " + "; ".join(problems))

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["adam_betas"] = list(self.adam_betas)
        data["reps_factors"] = list(self.reps_factors)
        return data

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in fields(cls)}


@dataclass
class TrainResult:
    """A finished run: the vector, every metrics record, and the run folder (if any)."""

    vector: SteeringVector
    records: list[dict[str, Any]] = field(default_factory=list)
    run_folder: Path | None = None
    steps: int = 0

    def losses(self) -> list[float]:
        return [float(r["loss"]) for r in self.records if r.get("kind") == "train"]


def direction_for(seed: int, step: int, bidirectional: bool = True) -> int:
    """The ``d`` of (1-based) step ``step``: a function of the seed and the step only."""
    if not bidirectional:
        return 1
    return 1 if int(np.random.default_rng([seed, step]).integers(0, 2)) else -1


def epoch_order(seed: int, epoch: int, n: int) -> list[int]:
    """The shuffled pair order of one epoch (a function of the seed and the epoch only)."""
    return [int(i) for i in np.random.default_rng([seed, 1_000_003, epoch]).permutation(n)]


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[None]:
    """Eval mode and no parameter gradients for the duration (restored afterwards)."""
    was_training = model.training
    flags = [p.requires_grad for p in model.parameters()]
    model.train(False)
    model.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)
        model.train(was_training)


class PreferenceTrainer:
    """Trains ``steering.vector`` on tokenized preference pairs (see module docstring)."""

    def __init__(
        self,
        model: nn.Module,
        layer: int,
        steering: Steering,
        train_pairs: Sequence[TokenizedPair],
        pad_token_id: int,
        config: PreferenceConfig,
        *,
        eval_pairs: Sequence[TokenizedPair] = (),
        method: str | None = None,
        hyperparameters: dict[str, Any] | None = None,
        run: RunFolder | None = None,
        processes: Processes | None = None,
        callbacks: Sequence[StepCallback] = (),
        progress: bool = True,
    ) -> None:
        config.validate()
        if not train_pairs:
            raise YapoError("no training pairs")
        self.model = model
        self.split = LayerSplit(model, layer)
        self.layer = self.split.layer
        self.device = input_device(model)
        self.steering = steering.to(self.device)
        self.train_pairs = list(train_pairs)
        self.eval_pairs = list(eval_pairs)
        self.pad_token_id = int(pad_token_id)
        self.config = config
        self.method = method or steering.method
        self.hyperparameters = dict(hyperparameters or {})
        self.run = run
        self.processes = processes or Processes()
        self.callbacks = list(callbacks)
        self.progress = progress and self.processes.main
        self.train_cache = SequenceCache()
        self.eval_cache = SequenceCache()
        self.split_difference: float | None = None
        self.best = BestTracker(config.early_stopping_patience)

    # ------------------------------------------------------------------ sizes
    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.train_pairs) / self.config.batch_size)

    @property
    def total_steps(self) -> int:
        total = self.steps_per_epoch * self.config.epochs
        return min(total, self.config.max_steps) if self.config.max_steps else total

    # ------------------------------------------------------------------ cache
    @torch.no_grad()
    def fill_cache(self, pairs: Sequence[TokenizedPair], cache: SequenceCache, label: str) -> None:
        """Layer-``L`` states, reference log-probs and (YaPO) SAE codes, once per sequence."""
        from tqdm.auto import tqdm

        size = self.config.cache_batch_size
        starts = range(0, len(pairs), size)
        for start in tqdm(starts, desc=f"caching {label}", disable=not self.progress, leave=False):
            ids = list(range(start, min(start + size, len(pairs))))
            batch = collate([pairs[i] for i in ids], ids, self.pad_token_id).to(self.device)
            if self.config.verify_split and self.split_difference is None:
                # two pairs suffice, and full logits of a big vocabulary are large
                few = collate([pairs[i] for i in ids[:2]], ids[:2], self.pad_token_id)
                few = few.to(self.device)
                self.split_difference = check_split_exact(
                    self.split, few.input_ids, few.attention_mask, few.response_mask
                )
            states = self.split.lower(batch.input_ids, batch.attention_mask)
            index = ResponseIndex.build(batch.input_ids, batch.response_mask)
            reference = split_logprobs(self.split, states, batch.attention_mask, index)
            lengths = batch.attention_mask.sum(dim=1).tolist()
            for row, key in enumerate(batch.sequence_ids):
                seq_states = states[row, : int(lengths[row])].clone()
                cache.states[key] = seq_states
                cache.reference[key] = float(reference[row])
                if isinstance(self.steering, SparseSteering):
                    cache.codes[key] = SparseCode(*self.steering.encode_sparse(seq_states))

    @torch.no_grad()
    def measure_step_size(self) -> StepSize:
        """The run's effective AdamW rate and decay (see :mod:`yapo.methods.scale`).

        The scale is the RMS of what ``v`` is added to, over the response positions of
        every training sequence, batched as the cache is filled so that the cached and
        straightforward paths measure exactly the same number.
        """
        cfg = self.config
        if cfg.lr_scale is not None:
            return StepSize(cfg.learning_rate, cfg.weight_decay, cfg.lr_scale, measured=False)
        meter = ScaleMeter()
        size = cfg.cache_batch_size
        for start in range(0, len(self.train_pairs), size):
            ids = list(range(start, min(start + size, len(self.train_pairs))))
            batch = collate([self.train_pairs[i] for i in ids], ids, self.pad_token_id)
            batch = batch.to(self.device)
            if cfg.cache:
                states = self.train_cache.padded_states(batch, self.device)
            else:
                states = self.split.lower(batch.input_ids, batch.attention_mask)
            meter.add(self.steering.scale_values(response_rows(states, batch.response_mask)))
        what = "the SAE codes" if self.steering.needs_codes else "the layer-L states"
        scale = check_scale(meter.rms, what)
        return StepSize(cfg.learning_rate, cfg.weight_decay, scale, measured=True)

    @property
    def warmup_steps(self) -> int:
        if self.config.warmup_steps is not None:
            return self.config.warmup_steps
        return round(self.config.warmup_fraction * self.total_steps)

    # ------------------------------------------------------------ log-probs
    def policy_logprobs(
        self, batch: Batch, cache: SequenceCache, direction: float, null: bool = False
    ) -> Tensor:
        """Steered response log-probs of the batch's rows (with gradient to ``v``).

        ``direction`` is ``d`` (BiPO) or RePS's factor ``α``; with ``null`` the stream
        goes through RePS's null intervention instead (and ``direction`` is unused).
        """
        steering = self.steering
        if not self.config.cache:

            def delta(h: Tensor) -> Tensor:
                return steering.null_hook_delta(h) if null else steering.hook_delta(h, direction)

            with add_to_layer(self.model, self.layer, delta):
                return full_logprobs(
                    self.model, batch.input_ids, batch.attention_mask, batch.response_mask
                )
        states = cache.padded_states(batch, self.device)
        codes = None
        if steering.needs_codes:
            assert isinstance(steering, SparseSteering)
            codes = cache.batch_codes(batch, steering.sae.d_sae, self.device)
        if null:
            steered = states + steering.null_fast_delta(states, codes)
        else:
            steered = states + steering.fast_delta(states, codes, direction)
        index = ResponseIndex.build(batch.input_ids, batch.response_mask)
        return split_logprobs(self.split, steered, batch.attention_mask, index)

    def reference_logprobs(self, batch: Batch, cache: SequenceCache) -> Tensor:
        if self.config.cache:
            return cache.references(batch, self.device)
        with torch.no_grad():
            return full_logprobs(
                self.model, batch.input_ids, batch.attention_mask, batch.response_mask
            ).float()

    def pair_losses(
        self,
        pairs: Sequence[TokenizedPair],
        ids: list[int],
        cache: SequenceCache,
        direction: int,
        step: int = 0,
    ) -> tuple[Tensor, Tensor]:
        """Per-pair losses and margins of the configured objective.

        BiPO: the DPO loss at ``d = direction`` and its margin. RePS: both of its terms
        (``direction`` is unused; the factor ``α`` is drawn from ``step``) and ``Δ⁺``.
        """
        batch = collate([pairs[i] for i in ids], ids, self.pad_token_id).to(self.device)
        cfg = self.config
        if cfg.objective == "reps":
            terms = self.reps_terms(batch, cache, reps_factor(cfg.seed, step, cfg.reps_factors))
            return terms.losses, terms.steer_margin
        policy = self.policy_logprobs(batch, cache, direction)
        reference = self.reference_logprobs(batch, cache)
        return preference_loss(policy.float(), reference, direction, cfg.beta)

    def reps_terms(self, batch: Batch, cache: SequenceCache, factor: float) -> RepsTerms:
        """RePS's two terms for a batch: steered at ``α = factor`` (so ``u = α·λ·v``) and
        through the null intervention; β± come from the cached unsteered log-probs."""
        steered = self.policy_logprobs(batch, cache, factor)
        nulled = self.policy_logprobs(batch, cache, 1.0, null=True)
        reference = self.reference_logprobs(batch, cache)
        lengths = batch.response_mask.sum(dim=1)
        return reps_loss(steered.float(), nulled.float(), reference, lengths)

    # ------------------------------------------------------------------- eval
    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Loss and reward accuracy (d·margin > 0) on the evaluation pairs, for d = +1 and -1."""
        if self.config.objective == "reps":
            return self._evaluate_reps()
        out: dict[str, float] = {}
        n = len(self.eval_pairs)
        size = self.config.eval_batch_size
        for direction in (1, -1):
            totals = torch.zeros(3, dtype=torch.float64, device=self.device)
            for start in range(0, n, size):
                ids = self.processes.share(list(range(start, min(start + size, n))))
                if ids:
                    losses, margins = self.pair_losses(
                        self.eval_pairs, ids, self.eval_cache, direction
                    )
                    totals[0] += losses.sum().double()
                    totals[1] += (direction * margins > 0).sum().double()
                    totals[2] += len(ids)
            self.processes.sum(totals)
            count = max(float(totals[2]), 1.0)
            out[f"eval_loss_d{direction:+d}"] = float(totals[0]) / count
            out[f"eval_reward_accuracy_d{direction:+d}"] = float(totals[1]) / count
        out["eval_loss"] = (out["eval_loss_d+1"] + out["eval_loss_d-1"]) / 2
        return out

    def _evaluate_reps(self) -> dict[str, float]:
        """RePS on the evaluation pairs: its steering term averaged over every factor (the
        exact expectation of the per-step draw) under the ``d+1`` keys, its null term
        under ``d-1``, and ``eval_loss`` their mean (= the training objective); accuracy
        is the fraction of ``Δ > 0``. Same keys as BiPO, so plots and early stopping
        read both objectives alike."""
        factors = self.config.reps_factors
        n = len(self.eval_pairs)
        size = self.config.eval_batch_size
        totals = torch.zeros(5, dtype=torch.float64, device=self.device)
        for start in range(0, n, size):
            ids = self.processes.share(list(range(start, min(start + size, n))))
            if not ids:
                continue
            batch = collate([self.eval_pairs[i] for i in ids], ids, self.pad_token_id)
            batch = batch.to(self.device)
            reference = self.reference_logprobs(batch, self.eval_cache)
            nulled = self.policy_logprobs(batch, self.eval_cache, 1.0, null=True).float()
            lengths = batch.response_mask.sum(dim=1)
            for factor in factors:
                steered = self.policy_logprobs(batch, self.eval_cache, factor).float()
                terms = reps_loss(steered, nulled, reference, lengths)
                totals[0] += terms.steer_loss.sum().double() / len(factors)
                totals[1] += (terms.steer_margin > 0).sum().double() / len(factors)
            totals[2] += terms.null_loss.sum().double()
            totals[3] += (terms.null_margin > 0).sum().double()
            totals[4] += len(ids)
        self.processes.sum(totals)
        count = max(float(totals[4]), 1.0)
        out = {
            "eval_loss_d+1": float(totals[0]) / count,
            "eval_reward_accuracy_d+1": float(totals[1]) / count,
            "eval_loss_d-1": float(totals[2]) / count,
            "eval_reward_accuracy_d-1": float(totals[3]) / count,
        }
        out["eval_loss"] = (out["eval_loss_d+1"] + out["eval_loss_d-1"]) / 2
        return out

    # ------------------------------------------------------------------ train
    def make_optimizer(self, step_size: StepSize) -> tuple[torch.optim.Optimizer, Any]:
        from transformers import get_scheduler

        cfg = self.config
        optimizer = torch.optim.AdamW(
            [self.steering.vector],
            lr=step_size.learning_rate,
            betas=cfg.adam_betas,
            eps=cfg.adam_eps,
            weight_decay=step_size.weight_decay,
        )
        scheduler = get_scheduler(
            cfg.schedule,
            optimizer,
            num_warmup_steps=self.warmup_steps,
            num_training_steps=self.total_steps,
        )
        return optimizer, scheduler

    def current_vector(self) -> SteeringVector:
        return self.steering.to_vector(self.model, self.layer, self.method, self.hyperparameters)

    def _step(self, step: int, ids: list[int], direction: int) -> dict[str, Any]:
        """One optimizer step's forward and backward; returns the global statistics."""
        vector = self.steering.vector
        vector.grad = None
        local = self.processes.share(ids)
        stats = torch.zeros(4, dtype=torch.float64, device=self.device)
        if local:
            losses, margins = self.pair_losses(
                self.train_pairs, local, self.train_cache, direction, step
            )
            loss: Tensor = losses.sum() / len(ids)
            loss.backward()  # type: ignore[no-untyped-call]
            stats[0] = losses.detach().sum().double()
            sign = 1 if self.config.objective == "reps" else direction  # RePS: Δ⁺ > 0
            stats[1] = (sign * margins.detach() > 0).sum().double()
            stats[2] = margins.detach().sum().double()
        stats[3] = len(local)
        if vector.grad is None:
            vector.grad = torch.zeros_like(vector)
        self.processes.sum(vector.grad)
        self.processes.sum(stats)
        n = float(stats[3])
        return {
            "loss": float(stats[0]) / n,
            "accuracy": float(stats[1]) / n,
            "margin": float(stats[2]) / n,
        }

    def _diverged(self, step: int, epoch: int, direction: int, what: str) -> TrainingDiverged:
        good = self.run.last_good_checkpoint(warn=False) if self.run else None
        last = good[0] if good else None
        where = (
            f"the last good checkpoint is {last} (continue from it with --resume after "
            "changing nothing, or start again with a lower --lr / --multiplier)"
            if last
            else "no checkpoint was written yet"
        )
        return TrainingDiverged(
            f"training stopped: the {what} became NaN or infinite at step {step} "
            f"(epoch {epoch + 1}, d = {direction:+d}); {where}"
        )

    def train(self, resume: bool = False) -> TrainResult:
        """Run (or, with ``resume``, continue from the newest checkpoint) to the end."""
        from tqdm.auto import tqdm

        cfg = self.config
        with frozen(self.model):
            if cfg.cache:
                self.fill_cache(self.train_pairs, self.train_cache, "train")
                if self.eval_pairs:
                    self.fill_cache(self.eval_pairs, self.eval_cache, "eval")
            step_size = self.measure_step_size()
            if self.run is not None and self.processes.main:
                self.run.update_config(
                    step_size={**step_size.to_json(), "warmup_steps": self.warmup_steps}
                )
            optimizer, scheduler = self.make_optimizer(step_size)
            step = 0
            records: list[dict[str, Any]] = []
            if resume and self.run is not None:
                found = self.run.last_good_checkpoint()  # skips broken ones, with a warning
                if found:
                    checkpoint = found[1]
                    restore(checkpoint, self.steering.vector, optimizer, scheduler)
                    self.best.load(checkpoint.tensors, checkpoint.info)
                    step = checkpoint.step
                records = self.run.truncate_metrics(step)
            bar = tqdm(
                total=self.total_steps,
                initial=step,
                desc=self.method,
                disable=not self.progress,
                dynamic_ncols=True,
            )
            try:
                while step < self.total_steps and not self.best.should_stop:
                    step, new = self._one_step(step, optimizer, scheduler)
                    records.extend(new)
                    bar.update(1)
                    bar.set_postfix(loss=f"{new[0]['loss']:.4f}", d=new[0]["d"])
                    for callback in self.callbacks:
                        callback(new[0])
            finally:
                bar.close()
            if cfg.keep_best and self.best.best_vector is not None:
                with torch.no_grad():
                    self.steering.vector.copy_(self.best.best_vector)
            vector = self.current_vector()
            run_path = None
            if self.run is not None:
                run_path = self.run.path
                if self.processes.main:
                    vector.save(self.run.vector_path, metrics=self._card_metrics(records, step))
                    self.run.plot(records, f"{self.method} — layer {self.layer}")
                    self.run.update_config(finished=True, steps=step, **self.best.to_json())
                self.processes.barrier()
        return TrainResult(vector, records, run_path, step)

    def _card_metrics(self, records: list[dict[str, Any]], step: int) -> dict[str, Any]:
        """Key numbers for the vector's model card: steps, final and best losses, scale."""
        losses = [float(r["loss"]) for r in records if r.get("kind") == "train"]
        tail = losses[-10:]
        metrics: dict[str, Any] = {"steps": step}
        if tail:
            metrics["final_train_loss_mean_last_10"] = round(sum(tail) / len(tail), 4)
        metrics.update({k: v for k, v in self.best.to_json().items() if v is not None})
        return metrics

    def _one_step(
        self, done: int, optimizer: torch.optim.Optimizer, scheduler: Any
    ) -> tuple[int, list[dict[str, Any]]]:
        cfg = self.config
        epoch, position = divmod(done, self.steps_per_epoch)
        step = done + 1
        order = epoch_order(cfg.seed, epoch, len(self.train_pairs))
        ids = order[position * cfg.batch_size : (position + 1) * cfg.batch_size]
        direction = direction_for(cfg.seed, step, cfg.bidirectional)
        started = time.perf_counter()
        stats = self._step(step, ids, direction)
        vector = self.steering.vector
        assert vector.grad is not None
        if not math.isfinite(stats["loss"]):
            raise self._diverged(step, epoch, direction, "loss")
        if not bool(torch.isfinite(vector.grad).all()):
            raise self._diverged(step, epoch, direction, "gradient")
        if cfg.max_grad_norm is not None:
            grad_norm = float(torch.nn.utils.clip_grad_norm_([vector], cfg.max_grad_norm))
        else:
            grad_norm = float(vector.grad.norm())
        lr = float(scheduler.get_last_lr()[0])
        if not math.isfinite(grad_norm):  # finite entries, overflowing norm: clipping gives 0
            raise self._diverged(step, epoch, direction, "gradient norm")
        optimizer.step()
        if finite_problem(vector) is not None:
            raise self._diverged(step, epoch, direction, "vector (or its norm)")
        scheduler.step()
        seconds = time.perf_counter() - started
        record: dict[str, Any] = {
            "kind": "train",
            "step": step,
            "epoch": epoch + 1,
            "d": direction,
            "loss": stats["loss"],
            "reward_accuracy": stats["accuracy"],
            f"reward_accuracy_d{direction:+d}": stats["accuracy"],
            "margin": stats["margin"],
            "lr": lr,
            "grad_norm": grad_norm,
            "vector_norm": float(vector.detach().norm()),
            "nonzero": int((vector.detach() != 0).sum()),
            "pairs": len(ids),
            "seconds": round(seconds, 4),
        }
        new = [record]
        if self.run is not None:
            self.run.append(record)
        epoch_end = position + 1 == self.steps_per_epoch
        last = step == self.total_steps
        eval_due = epoch_end or last or (cfg.eval_every is not None and step % cfg.eval_every == 0)
        if self.eval_pairs and eval_due:
            losses = self.evaluate()
            self.best.update(step, losses["eval_loss"], vector)
            evaluation: dict[str, Any] = {"kind": "eval", "step": step, "epoch": epoch + 1}
            evaluation.update(losses)
            evaluation["best_step"] = self.best.best_step
            new.append(evaluation)
            if self.run is not None:
                self.run.append(evaluation)
        last = last or self.best.should_stop
        if self.run is not None:
            self._maybe_checkpoint(step, epoch, epoch_end, last, optimizer, scheduler)
        return step, new

    def _maybe_checkpoint(
        self,
        step: int,
        epoch: int,
        epoch_end: bool,
        last: bool,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
    ) -> None:
        assert self.run is not None
        every = self.config.checkpoint_every
        if not (epoch_end or last or (every is not None and step % every == 0)):
            return
        name = f"epoch-{epoch + 1:04d}" if epoch_end else f"step-{step:07d}"
        if self.processes.main:
            tensors, info = self.best.state()
            state = capture(
                step, self.steering.vector, optimizer, scheduler, {"epoch": epoch + 1, **info}
            )
            state.tensors.update(tensors)
            folder = self.run.save_checkpoint(name, state, self.current_vector())
            self.run.remove_step_checkpoints(keep=folder)
        self.processes.barrier()
