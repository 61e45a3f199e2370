"""Training JumpReLU and TopK sparse autoencoders on activation batches.

JumpReLU follows the Gemma Scope recipe (Rajamanoharan et al. 2024, "Jumping Ahead"):
``f = pre · H(pre − θ)`` with ``θ = exp(log_threshold)``; the loss is
``‖x − x̂‖² + λ·Σ H(pre − θ)`` (an L0 penalty). The step function has no useful gradient,
so θ gets straight-through pseudo-derivatives through a rectangle kernel of width ε
(``bandwidth``); λ is warmed up linearly so early training is not dominated by
sparsity. TopK (Gao et al. 2024) keeps the ``k`` largest pre-activations; its L0 is ``k``
by construction.

Shared choices, and why:

* inputs are scaled to unit mean squared norm during training (one scalar measured on
  the first batches), so ε, λ and learning rates mean the same at every layer and model;
  the scale is folded back into the weights before saving, so the saved SAE works on
  raw activations (decoder rows stay unit-norm, codes are in raw units);
* the input is centred by ``b_dec`` before encoding (the pre-encoder bias, saved as
  SAELens ``apply_b_dec_to_input``): Gemma's residual stream has a large, nearly
  constant component (a few "massive" dimensions) that would otherwise swamp every
  pre-activation of a freshly initialised SAE;
* decoder rows are kept at unit norm — the gradient component along each row is removed
  before the step and rows are renormalized after — so the sparsity penalty cannot be
  dodged by shrinking codes and growing decoder rows;
* dead latents (no activation in the last ``dead_tokens`` tokens) get the AuxK loss:
  the top ``aux_k`` dead pre-activations must reconstruct the main reconstruction's
  residual, which gives them gradient toward useful directions until they fire again;
* checkpoints hold weights, Adam moments, counters and the step in safetensors + JSON
  (no pickle); data order is a function of (seed, step), so a resumed run continues
  exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from yapo._io import append_jsonl, atomic_dir, write_json
from yapo.errors import YapoError
from yapo.sae.model import SAE

Architecture = Literal["jumprelu", "topk"]
CHECKPOINT = "checkpoint"
BatchSource = Callable[[int], Iterator[Tensor]]  # start_step -> batches


@dataclass
class SAETrainConfig:
    """Hyperparameters of one SAE training run (saved in ``config.json`` and the SAE)."""

    d_in: int
    d_sae: int
    architecture: Architecture = "jumprelu"
    steps: int = 1000
    batch_size: int = 4096
    lr: float = 3e-4
    adam_betas: tuple[float, float] = (0.0, 0.999)
    lr_warmup_steps: int = 50
    lr_decay_fraction: float = 0.2
    # JumpReLU
    l0_coefficient: float = 1e-3
    l0_warmup_steps: int = 200
    bandwidth: float = 1e-3
    threshold_init: float = 1e-3
    # TopK
    k: int = 64
    # subtract b_dec from the input before encoding (the "pre-encoder bias")
    pre_encoder_bias: bool = True
    # dead latents
    dead_tokens: int = 1_000_000
    aux_k: int = 512
    aux_coefficient: float = 1 / 32
    # bookkeeping
    seed: int = 0
    scale_batches: int = 8
    log_every: int = 10
    checkpoint_every: int = 200
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()  # an SAE trainer is never built from impossible settings
        self.adam_betas = (float(self.adam_betas[0]), float(self.adam_betas[1]))

    def validate(self) -> None:
        if self.architecture not in ("jumprelu", "topk"):
            raise YapoError(f"architecture must be 'jumprelu' or 'topk', not {self.architecture!r}")
        if self.d_sae < 1 or self.d_in < 1:
            raise YapoError("SAE sizes must be positive")
        if self.architecture == "topk" and not 0 < self.k <= self.d_sae:
            raise YapoError(f"k must be in 1..{self.d_sae}, got {self.k}")
        if self.steps < 1 or self.batch_size < 1:
            raise YapoError("steps and batch_size must be positive")
        if not self.threshold_init > 0:
            raise YapoError(f"threshold_init must be positive, got {self.threshold_init}")


# --------------------------------------------------------- JumpReLU pieces
def _rectangle(x: Tensor) -> Tensor:
    return ((x > -0.5) & (x < 0.5)).to(x.dtype)


class _JumpReLU(torch.autograd.Function):
    """``pre · H(pre − θ)``; θ gets the straight-through (rectangle-kernel) gradient."""

    @staticmethod
    def forward(ctx: Any, pre: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return pre * (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor, None]:
        pre, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_pre = (pre > threshold).to(pre.dtype) * grad
        grad_threshold = (
            (-(threshold / eps) * _rectangle((pre - threshold) / eps) * grad)
            .reshape(-1, threshold.shape[-1])
            .sum(0)
        )
        return grad_pre, grad_threshold, None


class _Step(torch.autograd.Function):
    """``H(pre − θ)``; θ gets the straight-through gradient, ``pre`` none (Gemma Scope)."""

    @staticmethod
    def forward(ctx: Any, pre: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor, None]:
        pre, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_threshold = (
            (-(1.0 / eps) * _rectangle((pre - threshold) / eps) * grad)
            .reshape(-1, threshold.shape[-1])
            .sum(0)
        )
        return torch.zeros_like(pre), grad_threshold, None


# ------------------------------------------------------------------ module
class TrainableSAE(nn.Module):
    """The parameters being trained, in the normalized-input space."""

    def __init__(self, config: SAETrainConfig, b_dec: Tensor | None = None) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(config.seed)
        w_dec = torch.randn(config.d_sae, config.d_in, generator=generator)
        w_dec /= w_dec.norm(dim=1, keepdim=True)
        self.config = config
        self.W_dec = nn.Parameter(w_dec)
        self.W_enc = nn.Parameter(w_dec.t().contiguous())
        self.b_enc = nn.Parameter(torch.zeros(config.d_sae))
        self.b_dec = nn.Parameter(b_dec.clone() if b_dec is not None else torch.zeros(config.d_in))
        self.log_threshold = nn.Parameter(
            torch.full((config.d_sae,), math.log(config.threshold_init)),
            requires_grad=config.architecture == "jumprelu",
        )

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Reconstruction and what the losses need: ``pre`` (JumpReLU: differentiable),
        ``recon``, ``l0``, and ``fired`` (which latents were active in the batch)."""
        cfg = self.config
        if cfg.architecture == "topk":
            return self._forward_topk(x)
        pre = self._encoder_input(x) @ self.W_enc + self.b_enc
        threshold = self.log_threshold.exp()
        codes = _JumpReLU.apply(pre, threshold, cfg.bandwidth)  # type: ignore[no-untyped-call]
        l0 = _Step.apply(pre, threshold, cfg.bandwidth).sum(-1).mean()  # type: ignore[no-untyped-call]
        recon = codes @ self.W_dec + self.b_dec
        return {"pre": pre, "recon": recon, "l0": l0, "fired": (codes > 0).any(0)}

    def _forward_topk(self, x: Tensor) -> dict[str, Tensor]:
        """TopK with sparse gradients: only ``k`` latents per token get any.

        The dense encoder product is computed without autograd; the kept values are
        re-attached through :class:`_GatherPre` (sparse backward into ``W_enc``) and decoded
        with ``embedding_bag`` (sparse in ``W_dec``), so a step costs one dense matmul
        instead of five — what makes CPU training of a 4k-latent SAE practical.
        """
        x_in = self._encoder_input(x)
        with torch.no_grad():
            pre = x_in @ self.W_enc + self.b_enc
            values, indices = pre.topk(self.config.k, dim=-1)
        values = _GatherPre.apply(x_in, self.W_enc, self.b_enc, indices, values)  # type: ignore[no-untyped-call]
        codes = torch.relu(values)
        recon = _sparse_decode(indices, codes, self.W_dec) + self.b_dec
        active = codes > 0
        fired = torch.zeros(self.config.d_sae, dtype=torch.bool, device=x.device)
        fired[indices[active]] = True
        l0 = active.sum(-1).to(x.dtype).mean()
        return {"pre": pre, "recon": recon, "l0": l0, "fired": fired}

    def _encoder_input(self, x: Tensor) -> Tensor:
        return x - self.b_dec if self.config.pre_encoder_bias else x

    def codes(self, x: Tensor) -> Tensor:
        """Dense codes (for tests and inspection; training never materializes them)."""
        with torch.no_grad():
            pre = self._encoder_input(x) @ self.W_enc + self.b_enc
            if self.config.architecture == "jumprelu":
                return pre * (pre > self.log_threshold.exp()).to(pre.dtype)
            values, indices = pre.topk(self.config.k, dim=-1)
            return torch.zeros_like(pre).scatter(-1, indices, torch.relu(values))

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8))

    @torch.no_grad()
    def project_decoder_grad(self) -> None:
        """Remove the part of each decoder row's gradient that would change its norm."""
        if self.W_dec.grad is None:
            return
        parallel = (self.W_dec.grad * self.W_dec).sum(dim=1, keepdim=True)
        self.W_dec.grad -= parallel * self.W_dec

    def to_sae(self, scale: float, metadata: dict[str, Any]) -> SAE:
        """An :class:`SAE` for raw activations: the input scale is folded into the biases.

        Training saw ``x·scale``. With ``pre_raw = pre/scale`` (biases and thresholds
        divided by ``scale``) the codes are ``codes/scale`` and, decoding with the same
        unit-norm rows plus ``b_dec/scale``, the reconstruction is ``recon/scale``:
        exactly the raw-space version of the trained map, TopK order included.
        """
        cfg = self.config
        return SAE(
            self.W_enc.detach(),
            self.b_enc.detach() / scale,
            self.W_dec.detach(),
            self.b_dec.detach() / scale,
            activation=cfg.architecture,
            threshold=self.log_threshold.detach().exp() / scale
            if cfg.architecture == "jumprelu"
            else None,
            k=cfg.k if cfg.architecture == "topk" else None,
            apply_b_dec_to_input=cfg.pre_encoder_bias,
            metadata=metadata,
        )


def _aux_loss(
    model: TrainableSAE, x: Tensor, out: dict[str, Tensor], dead: Tensor, aux_k: int
) -> Tensor:
    """AuxK: the top dead latents must reconstruct what the live ones missed."""
    n_dead = int(dead.sum())
    if n_dead == 0:
        return x.new_zeros(())
    residual = (x - out["recon"]).detach()
    with torch.no_grad():
        masked = out["pre"].detach().masked_fill(~dead, float("-inf"))
        values, indices = masked.topk(min(aux_k, n_dead), dim=-1)
    values = _GatherPre.apply(model._encoder_input(x), model.W_enc, model.b_enc, indices, values)  # type: ignore[no-untyped-call]
    aux_recon = _sparse_decode(indices, torch.relu(values), model.W_dec)
    error = (residual - aux_recon).pow(2).sum(-1).mean()
    baseline = (residual - residual.mean(0)).pow(2).sum(-1).mean().clamp_min(1e-12)
    return error / baseline


class _GatherPre(torch.autograd.Function):
    """``values[b, i] = x[b]·W_enc[:, idx[b, i]] + b_enc[idx[b, i]]`` (precomputed), with a
    sparse backward: ``∂W_enc = xᵀ·G`` where ``G`` has only the selected entries."""

    @staticmethod
    def forward(
        ctx: Any, x: Tensor, w_enc: Tensor, b_enc: Tensor, indices: Tensor, values: Tensor
    ) -> Tensor:
        ctx.save_for_backward(x, w_enc, indices)
        ctx.d_sae = w_enc.shape[1]
        return values.clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor, Tensor, None, None]:
        x, w_enc, indices = ctx.saved_tensors
        batch, k = indices.shape
        rows = indices.reshape(-1)
        cols = torch.arange(batch, device=x.device).repeat_interleave(k)
        flat = grad.reshape(-1)
        sparse = torch.sparse_coo_tensor(
            torch.stack([rows, cols]), flat, (ctx.d_sae, batch), check_invariants=False
        )
        grad_w = torch.sparse.mm(sparse, x).t().contiguous()
        grad_b = torch.zeros(ctx.d_sae, dtype=grad.dtype, device=grad.device).index_add_(
            0, rows, flat
        )
        grad_x = torch.sparse.mm(sparse.t(), w_enc.t()) if ctx.needs_input_grad[0] else None
        return grad_x, grad_w, grad_b, None, None


def _sparse_decode(indices: Tensor, codes: Tensor, w_dec: Tensor) -> Tensor:
    """``Σ_i codes[b, i]·W_dec[indices[b, i]]`` without building the dense code matrix."""
    return nn.functional.embedding_bag(indices, w_dec, per_sample_weights=codes, mode="sum")


def _lr_factor(step: int, cfg: SAETrainConfig) -> float:
    warm = min(1.0, (step + 1) / max(1, cfg.lr_warmup_steps))
    decay_start = int(cfg.steps * (1 - cfg.lr_decay_fraction))
    if step < decay_start or cfg.lr_decay_fraction <= 0:
        return warm
    return warm * max(0.0, (cfg.steps - step) / max(1, cfg.steps - decay_start))


# ----------------------------------------------------------------- trainer
@dataclass
class TrainResult:
    sae: SAE
    steps: int
    seconds: float
    final_metrics: dict[str, float]


class SAETrainer:
    """Trains one SAE on batches from ``source(start_step)``; writes into ``out``.

    ``out`` receives ``config.json``, ``metrics.jsonl`` (one line per ``log_every``
    steps), ``checkpoint/`` (every ``checkpoint_every`` steps and at the end) and
    ``sae/`` (the final SAE in the SAELens layout). Starting again on an ``out`` with a
    checkpoint resumes from it; the configuration must match.
    """

    def __init__(self, config: SAETrainConfig, source: BatchSource, out: str | Path) -> None:
        self.config = config
        self.source = source
        self.out = Path(out)
        self.model: TrainableSAE | None = None
        self.optimizer: torch.optim.Adam | None = None
        self.step = 0
        self.scale = 1.0
        self.tokens_since_fired = torch.zeros(config.d_sae, dtype=torch.long)
        self.seconds = 0.0

    # ---------------------------------------------------------------- setup
    def _initialise(self) -> None:
        cfg = self.config
        batches = self.source(0)
        sample = torch.cat([next(batches) for _ in range(cfg.scale_batches)])
        self.scale = float(1.0 / sample.pow(2).sum(-1).mean().sqrt())
        self.model = TrainableSAE(cfg, b_dec=(sample * self.scale).mean(0))
        self.optimizer = self._make_optimizer(self.model)

    def _make_optimizer(self, model: TrainableSAE) -> torch.optim.Adam:
        params = [p for p in model.parameters() if p.requires_grad]
        return torch.optim.Adam(params, lr=self.config.lr, betas=self.config.adam_betas)

    def _config_json(self) -> dict[str, Any]:
        return asdict(self.config)

    def _training_json(self) -> dict[str, Any]:
        """The recipe saved with the SAE (its metadata is already at the top level)."""
        recipe = {k: v for k, v in self._config_json().items() if k != "metadata"}
        return {**recipe, "scale": self.scale}

    # ---------------------------------------------------------- checkpoints
    def save_checkpoint(self) -> None:
        assert self.model is not None and self.optimizer is not None
        tensors: dict[str, Tensor] = {
            f"param.{n}": p.detach().contiguous().clone() for n, p in self.model.named_parameters()
        }
        names = {id(p): n for n, p in self.model.named_parameters()}
        adam_steps: dict[str, float] = {}
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                state = self.optimizer.state.get(p, {})
                for key in ("exp_avg", "exp_avg_sq"):
                    if key in state:
                        tensors[f"adam.{names[id(p)]}.{key}"] = state[key].clone()
                if "step" in state:
                    adam_steps[names[id(p)]] = float(state["step"])
        tensors["tokens_since_fired"] = self.tokens_since_fired.clone()
        with atomic_dir(self.out / CHECKPOINT) as tmp:
            save_file(tensors, str(tmp / "state.safetensors"))
            write_json(
                tmp / "state.json",
                {
                    "step": self.step,
                    "scale": self.scale,
                    "seconds": self.seconds,
                    "adam_steps": adam_steps,
                    "config": self._config_json(),
                },
            )

    def load_checkpoint(self) -> bool:
        folder = self.out / CHECKPOINT
        if not (folder / "state.json").is_file():
            return False
        state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
        saved, wanted = state["config"], json.loads(json.dumps(self._config_json()))
        if saved != wanted:
            diff = sorted(k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k))
            raise YapoError(
                f"{self.out} holds a checkpoint of a different run (settings differ: {diff}); "
                "use another --out or delete the folder"
            )
        tensors = load_file(str(folder / "state.safetensors"))
        self.model = TrainableSAE(self.config)
        with torch.no_grad():
            for name, param in self.model.named_parameters():
                param.copy_(tensors[f"param.{name}"])
        self.optimizer = self._make_optimizer(self.model)
        for name, param in self.model.named_parameters():
            if f"adam.{name}.exp_avg" in tensors:
                self.optimizer.state[param] = {
                    "step": torch.tensor(state["adam_steps"][name]),
                    "exp_avg": tensors[f"adam.{name}.exp_avg"].clone(),
                    "exp_avg_sq": tensors[f"adam.{name}.exp_avg_sq"].clone(),
                }
        self.tokens_since_fired = tensors["tokens_since_fired"].clone()
        self.step = int(state["step"])
        self.scale = float(state["scale"])
        self.seconds = float(state["seconds"])
        return True

    # ---------------------------------------------------------------- train
    def train_step(self, x_raw: Tensor) -> dict[str, float]:
        assert self.model is not None and self.optimizer is not None
        cfg, model = self.config, self.model
        x = x_raw * self.scale
        for group in self.optimizer.param_groups:
            group["lr"] = cfg.lr * _lr_factor(self.step, cfg)
        out = model(x)
        mse = (out["recon"] - x).pow(2).sum(-1).mean()
        variance = (x - x.mean(0)).pow(2).sum(-1).mean()
        loss = mse
        sparsity_coefficient = 0.0
        if cfg.architecture == "jumprelu":
            sparsity_coefficient = cfg.l0_coefficient * min(
                1.0, (self.step + 1) / max(1, cfg.l0_warmup_steps)
            )
            loss = loss + sparsity_coefficient * out["l0"]
        dead = self.tokens_since_fired >= cfg.dead_tokens
        aux = _aux_loss(model, x, out, dead, cfg.aux_k) if cfg.aux_coefficient > 0 else None
        if aux is not None:
            loss = loss + cfg.aux_coefficient * aux
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        model.project_decoder_grad()
        self.optimizer.step()
        model.normalize_decoder()
        with torch.no_grad():
            self.tokens_since_fired += len(x)
            self.tokens_since_fired[out["fired"]] = 0
        self.step += 1
        return {
            "loss": float(loss.detach()),
            "mse": float(mse.detach()),
            "fvu": float(mse.detach() / variance.clamp_min(1e-12)),
            "l0": float(out["l0"]),
            "aux": float(aux.detach()) if aux is not None else 0.0,
            "dead_fraction": float(dead.float().mean()),
            "sparsity_coefficient": sparsity_coefficient,
            "lr": self.optimizer.param_groups[0]["lr"],
        }

    def run(self, progress: bool = True, stop_after: int | None = None) -> TrainResult:
        """Train to ``config.steps`` (or ``stop_after`` more steps, for tests of resume)."""
        from tqdm.auto import tqdm

        torch.manual_seed(self.config.seed)
        self.out.mkdir(parents=True, exist_ok=True)
        if not self.load_checkpoint():
            self._initialise()
            write_json(self.out / "config.json", self._config_json())
            metrics_path = self.out / "metrics.jsonl"
            if metrics_path.exists():
                metrics_path.unlink()
        cfg = self.config
        last = min(cfg.steps, self.step + stop_after) if stop_after is not None else cfg.steps
        bar = tqdm(total=cfg.steps, initial=self.step, desc="SAE", disable=not progress)
        batches = self.source(self.step)
        window: list[dict[str, float]] = []
        metrics: dict[str, float] = {}
        tick = time.monotonic()
        while self.step < last:
            x = next(batches)
            metrics = self.train_step(x)
            window.append(metrics)
            bar.update(1)
            if self.step % cfg.log_every == 0 or self.step == last:
                now = time.monotonic()
                self.seconds += now - tick
                tick = now
                mean = {k: sum(m[k] for m in window) / len(window) for k in window[0]}
                record = {"step": self.step, "tokens": self.step * cfg.batch_size, **mean}
                record["seconds"] = round(self.seconds, 1)
                append_jsonl(self.out / "metrics.jsonl", record)
                bar.set_postfix(fvu=f"{mean['fvu']:.3f}", l0=f"{mean['l0']:.1f}")
                window = []
            if self.step % cfg.checkpoint_every == 0 or self.step == last:
                self.seconds += time.monotonic() - tick
                tick = time.monotonic()
                self.save_checkpoint()
        bar.close()
        assert self.model is not None
        sae = self.model.to_sae(
            self.scale,
            metadata={**cfg.metadata, "training": self._training_json()},
        )
        if self.step >= cfg.steps:
            sae.save(self.out / "sae")
        return TrainResult(sae, self.step, self.seconds, metrics)
