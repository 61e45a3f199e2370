"""SAS: CAA's contrast taken in SAE space, sparsified, applied through the sparse transform.

Per pair, the SAE code ``Enc(h_L)`` at the answer position (the mean code over the
positions for ``position="mean"``) of the chosen and of the rejected response. Then

    v = mean(code_chosen) − mean(code_rejected)

keeping only latents that matter: a latent survives if it fires on at least
``min_frequency`` of the chosen or of the rejected answers (rare latents are noise
at this sample size), and of those only the ``top_k`` largest ``|v_i|`` (``None``:
all). The result is a :class:`SparseVector` (method ``"sas"``), applied with YaPO's
transform ``h' = Dec(ReLU(Enc(h) + d·λ·v)) + (h − Dec(Enc(h)))``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from yapo.errors import YapoError
from yapo.methods.batches import TokenizedPair
from yapo.methods.caa import AnswerPosition, contrast
from yapo.sae.model import SAE
from yapo.vectors.sparse import SparseVector


def sparsify(
    v: Tensor, chosen: Tensor, rejected: Tensor, min_frequency: float, top_k: int | None
) -> Tensor:
    """Zero the latents that fire too rarely, then all but the ``top_k`` largest ``|v|``."""
    if not 0.0 <= min_frequency <= 1.0:
        raise YapoError(f"min_frequency must be in [0, 1], got {min_frequency}")
    if top_k is not None and top_k < 1:
        raise YapoError(f"top_k must be >= 1, got {top_k}")
    frequent = ((chosen > 0).float().mean(dim=0) >= min_frequency) | (
        (rejected > 0).float().mean(dim=0) >= min_frequency
    )
    kept = torch.where(frequent, v, torch.zeros_like(v))
    if top_k is not None and int((kept != 0).sum()) > top_k:
        top = kept.abs().topk(top_k).indices
        mask = torch.zeros_like(kept, dtype=torch.bool)
        mask[top] = True
        kept = torch.where(mask, kept, torch.zeros_like(kept))
    return kept


def train_sas(
    model: nn.Module,
    layer: int,
    sae: SAE,
    pairs: Sequence[TokenizedPair],
    pad_token_id: int,
    *,
    position: AnswerPosition = "last",
    eos_token_id: int | None = None,
    min_frequency: float = 0.1,
    top_k: int | None = 64,
    batch_size: int = 8,
    hyperparameters: dict[str, Any] | None = None,
) -> SparseVector:
    """The SAS vector of ``pairs`` at ``layer`` through ``sae`` (see module docstring)."""
    chosen, rejected = contrast(
        model,
        layer,
        pairs,
        pad_token_id,
        lambda states: sae.encode(states).mean(dim=0),
        position=position,
        eos_token_id=eos_token_id,
        batch_size=batch_size,
    )
    v = sparsify((chosen - rejected).mean(dim=0), chosen, rejected, min_frequency, top_k)
    hyper = {
        "position": position,
        "min_frequency": min_frequency,
        "top_k": top_k,
        "pairs": len(pairs),
        **(hyperparameters or {}),
    }
    return SparseVector.create(v.cpu(), model, layer, sae, method="sas", hyperparameters=hyper)
