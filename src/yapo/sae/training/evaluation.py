"""How good is an SAE on held-out text: reconstruction, sparsity, and what splicing costs.

Metrics (positions: every non-padding token except BOS, as in training):

* ``variance_explained`` — ``1 − Σ‖x − x̂‖² / Σ‖x − x̄‖²`` with x̄ the mean activation of
  the evaluated tokens (pooled over all tokens, not averaged per token);
* ``l0`` — mean number of active latents per token;
* ``dead_fraction`` — latents that never fire on the evaluated tokens;
  ``dense_fraction`` — latents that fire on more than ``dense_threshold`` of them;
* ``ce_clean`` — next-token cross-entropy of the unmodified model;
  ``ce_spliced`` — with block ``L``'s output replaced by the SAE reconstruction;
  ``ce_with_error`` — replaced by reconstruction + (x − reconstruction), which must
  equal the clean loss (a check that the splicing itself is exact);
  ``ce_increase`` = spliced − clean, ``ce_increase_with_error`` = with-error − clean.

The BOS position is left unmodified in the spliced runs (its huge-norm state is not
what the SAE was trained on, and steering never edits it either); the loss is
averaged over every predicted token.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from yapo.errors import YapoError
from yapo.intervene import add_to_layer, input_device
from yapo.models.layers import resolve_layer
from yapo.sae.model import SAE
from yapo.sae.training.activations import token_windows


@dataclass
class SAEEvaluation:
    tokens: int
    variance_explained: float
    mse: float
    l0: float
    dead_fraction: float
    dense_fraction: float
    ce_clean: float
    ce_spliced: float
    ce_with_error: float
    ce_increase: float
    ce_increase_with_error: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _constant(delta: Tensor) -> Callable[[Tensor], Tensor]:
    """A delta function that adds a precomputed delta (for one batch)."""

    def fn(_hidden: Tensor) -> Tensor:
        return delta

    return fn


def _next_token_loss(logits: Tensor, ids: Tensor, mask: Tensor) -> tuple[float, int]:
    """Summed cross-entropy over positions whose target is a real token, and their count."""
    targets = ids[:, 1:]
    valid = mask[:, 1:].bool()
    losses = nn.functional.cross_entropy(
        logits[:, :-1].float().reshape(-1, logits.shape[-1]),
        targets.reshape(-1),
        reduction="none",
    ).reshape(targets.shape)
    return float(losses[valid].sum()), int(valid.sum())


def evaluate_sae(
    model: nn.Module,
    tokenizer: Any,
    sae: SAE,
    texts: Iterable[str],
    layer: int,
    *,
    context_size: int = 256,
    batch_size: int = 8,
    max_tokens: int = 100_000,
    dense_threshold: float = 0.1,
    progress: bool = True,
) -> SAEEvaluation:
    """Evaluate ``sae`` at ``layer`` of ``model`` on ``texts`` (up to ``max_tokens`` tokens)."""
    from tqdm.auto import tqdm

    index = resolve_layer(model, layer)
    device = input_device(model)
    sae = sae.to(device)
    bos = getattr(tokenizer, "bos_token_id", None)
    pad = getattr(tokenizer, "pad_token_id", None)
    pad_id = int(pad if pad is not None else 0)
    windows, budget = _windows(texts, tokenizer, context_size, max_tokens)
    totals = _Totals.zeros(sae, device)
    bar = tqdm(total=budget, desc="eval", unit="tok", disable=not progress)
    for start in range(0, len(windows), batch_size):
        ids, mask = _padded(windows[start : start + batch_size], pad_id)
        ids, mask = ids.to(device), mask.to(device)
        keep = mask.bool().clone()
        if bos is not None:
            keep[:, 0] = False
        with torch.no_grad():
            _evaluate_batch(model, index, sae, ids, mask, keep, totals)
        bar.update(int(mask.sum()))
    bar.close()
    return totals.result(dense_threshold)


def _windows(
    texts: Iterable[str], tokenizer: Any, context_size: int, max_tokens: int
) -> tuple[list[list[int]], int]:
    """Token windows of 2+ tokens, in corpus order, until ``max_tokens`` are collected."""
    windows: list[list[int]] = []
    budget = 0
    for text in texts:
        for window in token_windows(text, tokenizer, context_size):
            if len(window) < 2 or budget >= max_tokens:
                continue
            windows.append(window)
            budget += len(window)
        if budget >= max_tokens:
            break
    if not windows:
        raise YapoError("no evaluation text: the corpus gave no windows of 2+ tokens")
    return windows, budget


def _padded(chunk: list[list[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """Right-padded ids and their attention mask."""
    length = max(len(w) for w in chunk)
    ids = torch.full((len(chunk), length), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, window in enumerate(chunk):
        ids[row, : len(window)] = torch.tensor(window)
        mask[row, : len(window)] = 1
    return ids, mask


@dataclass
class _Totals:
    """Running sums over the evaluated tokens, turned into metrics at the end.

    Summed (not averaged per batch) so that the metrics are pooled over tokens, as the
    module docstring defines them, whatever the batch size.
    """

    sums: dict[str, float]
    fired: Tensor
    x_sum: Tensor
    x_sq: float = 0.0
    n_tokens: int = 0
    n_targets: int = 0

    @classmethod
    def zeros(cls, sae: SAE, device: torch.device) -> _Totals:
        names = ("sq_err", "l0", "ce_clean", "ce_spliced", "ce_with_error")
        return cls(
            sums={name: 0.0 for name in names},
            fired=torch.zeros(sae.d_sae, dtype=torch.long, device=device),
            x_sum=torch.zeros(sae.d_in, dtype=torch.float64),
        )

    def result(self, dense_threshold: float) -> SAEEvaluation:
        sums, n_tokens = self.sums, self.n_tokens
        if n_tokens == 0:
            raise YapoError("no evaluation tokens left after dropping BOS and padding")
        total_variance = self.x_sq - float((self.x_sum.pow(2)).sum()) / n_tokens
        losses = {
            k: sums[k] / max(1, self.n_targets) for k in ("ce_clean", "ce_spliced", "ce_with_error")
        }
        frequency = self.fired.float().cpu() / n_tokens
        return SAEEvaluation(
            tokens=n_tokens,
            variance_explained=1.0 - sums["sq_err"] / max(total_variance, 1e-12),
            mse=sums["sq_err"] / n_tokens,
            l0=sums["l0"] / n_tokens,
            dead_fraction=float((self.fired == 0).float().mean()),
            dense_fraction=float((frequency > dense_threshold).float().mean()),
            ce_clean=losses["ce_clean"],
            ce_spliced=losses["ce_spliced"],
            ce_with_error=losses["ce_with_error"],
            ce_increase=losses["ce_spliced"] - losses["ce_clean"],
            ce_increase_with_error=losses["ce_with_error"] - losses["ce_clean"],
        )


def _evaluate_batch(
    model: nn.Module,
    index: int,
    sae: SAE,
    ids: Tensor,
    mask: Tensor,
    keep: Tensor,
    totals: _Totals,
) -> None:
    """One batch: the clean loss and block ``index``'s states, then the two spliced runs."""
    captured: dict[str, Tensor] = {}

    def capture(h: Tensor) -> Tensor:
        captured["h"] = h.detach()
        return torch.zeros_like(h)

    sums = totals.sums
    with add_to_layer(model, index, capture):
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
    ce, count = _next_token_loss(logits, ids, mask)
    sums["ce_clean"] += ce
    h = captured["h"]
    x = h[keep].float()
    codes = sae.encode(x)
    recon = sae.decode(codes)
    sums["sq_err"] += float((x - recon).pow(2).sum())
    sums["l0"] += float((codes > 0).sum())
    totals.fired += (codes > 0).sum(0)
    totals.x_sum += x.sum(0).double().cpu()
    totals.x_sq += float(x.double().pow(2).sum())
    totals.n_tokens += len(x)
    totals.n_targets += count
    for name, with_error in (("ce_spliced", False), ("ce_with_error", True)):
        full = h.float()
        recon_full = sae.decode(sae.encode(full))
        new = recon_full + (full - recon_full) if with_error else recon_full
        delta = ((new - full) * keep.unsqueeze(-1)).to(h.dtype)
        with add_to_layer(model, index, _constant(delta)):
            logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
        sums[name] += _next_token_loss(logits, ids, mask)[0]
