"""The shared steering edits (yapo.vectors.edits) against Eq. 3 written out.

Every computation of the sparse edit — the fast inference form, the form from the
trainer's cached codes — must equal the straightforward SAE round trip at every
position, and the RePS null edits must equal their definitions.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from conftest import HIDDEN, make_model, make_sae
from yapo.errors import YapoError
from yapo.methods.batches import Batch, SequenceCache, SparseCode
from yapo.methods.steering import DenseSteering, SparseSteering
from yapo.sae.model import SAE
from yapo.vectors.edits import (
    DenseEdit,
    SparseEdit,
    dense_null_delta,
    sparse_delta,
    sparse_delta_cached,
    sparse_null_delta_cached,
    sparse_null_delta_reference,
)

ACTIVATIONS = ["jumprelu", "relu", "topk"]


def _eq3(sae: SAE, hidden: Tensor, u: Tensor) -> Tensor:
    """``h' - h`` with ``h' = Dec(ReLU(Enc(h) + u)) + (h - Dec(Enc(h)))``, per position."""
    s = sae.encode(hidden)
    steered = (torch.relu(s + u) @ sae.W_dec + sae.b_dec) + (hidden - (s @ sae.W_dec + sae.b_dec))
    return steered - hidden


def _mixed_u(d_sae: int, seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(d_sae, generator=g)
    u[torch.rand(d_sae, generator=g) < 0.4] = 0.0
    return u


def _cache(sae: SAE, lengths: list[int], seed: int) -> tuple[SequenceCache, Batch, list[Tensor]]:
    """A trainer cache of sequences of different lengths, filled as the trainer fills it."""
    g = torch.Generator().manual_seed(seed)
    cache = SequenceCache()
    rows = []
    for key, t in enumerate(lengths):
        states = torch.randn(t, HIDDEN, generator=g) * 2
        codes = sae.encode(states)
        positions, latents = torch.nonzero(codes, as_tuple=True)
        cache.states[key] = states
        cache.codes[key] = SparseCode(positions, latents, codes[positions, latents])
        rows.append(states)
    seq = max(lengths)
    batch = Batch(
        torch.zeros(len(lengths), seq, dtype=torch.long),
        torch.zeros(len(lengths), seq, dtype=torch.long),
        torch.zeros(len(lengths), seq, dtype=torch.long),
        list(range(len(lengths))),
    )
    return cache, batch, rows


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("sign", ["mixed", "positive", "negative"])
def test_fast_form_equals_eq3(activation: str, sign: str) -> None:
    sae = make_sae(activation, seed=2).requires_grad_(False)
    u = _mixed_u(sae.d_sae, 5)
    u = u.abs() if sign == "positive" else -u.abs() if sign == "negative" else u
    hidden = torch.randn(2, 7, HIDDEN, generator=torch.Generator().manual_seed(9)) * 2
    oracle = _eq3(sae, hidden, u)
    fast = sparse_delta(sae, hidden, u).expand_as(hidden)
    torch.testing.assert_close(fast, oracle, atol=1e-5, rtol=1e-4)
    edit = SparseEdit(sae)
    torch.testing.assert_close(edit.delta(hidden, u, edit.plan(u)).expand_as(hidden), fast)
    torch.testing.assert_close(SparseEdit(sae, "reference").delta(hidden, u), oracle)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_cached_form_equals_eq3_at_every_position(activation: str) -> None:
    sae = make_sae(activation, seed=4).requires_grad_(False)
    lengths = [5, 3, 6]
    cache, batch, rows = _cache(sae, lengths, seed=1)
    codes = cache.batch_codes(batch, sae.d_sae, torch.device("cpu"))
    u = _mixed_u(sae.d_sae, 6)
    flat = sparse_delta_cached(sae, codes, u).view(len(lengths), max(lengths), HIDDEN)
    states = cache.padded_states(batch, torch.device("cpu"))
    shaped = SparseEdit(sae).cached_delta(states, codes, u)
    torch.testing.assert_close(shaped, flat)
    for row, t in enumerate(lengths):
        torch.testing.assert_close(flat[row, :t], _eq3(sae, rows[row], u), atol=1e-5, rtol=1e-4)


def test_cached_and_live_give_silent_latents_no_gradient() -> None:
    """The ReLU form: a latent silent in the batch with u_i = 0 gets exactly zero gradient."""
    sae = make_sae("jumprelu", seed=4).requires_grad_(False)
    cache, batch, rows = _cache(sae, [1, 1], seed=3)
    codes = cache.batch_codes(batch, sae.d_sae, torch.device("cpu"))
    u = _mixed_u(sae.d_sae, 8)
    u[::2] = 0.0
    u.requires_grad_(True)
    weights = torch.randn(2, HIDDEN, generator=torch.Generator().manual_seed(0))
    (sparse_delta_cached(sae, codes, u) * weights).sum().backward()
    assert u.grad is not None
    cached_grad = u.grad.clone()
    u.grad = None
    live = SparseEdit(sae, "reference").delta(torch.cat(rows), u)
    (live * weights).sum().backward()
    torch.testing.assert_close(cached_grad, u.grad, atol=1e-4, rtol=1e-4)
    silent = ~codes.active_mask & (u.detach() == 0)
    assert bool(silent.any())
    assert float(cached_grad[silent].abs().max()) == 0.0


def test_dense_null_removes_only_the_positive_component() -> None:
    g = torch.Generator().manual_seed(2)
    hidden, v = torch.randn(3, 5, HIDDEN, generator=g), torch.randn(HIDDEN, generator=g) * 3
    nulled = hidden + dense_null_delta(hidden, v)
    along = hidden @ v
    torch.testing.assert_close(nulled @ v, torch.minimum(along, torch.zeros(())), atol=1e-4, rtol=0)
    orthogonal = hidden - (along / (v @ v)).unsqueeze(-1) * v
    torch.testing.assert_close(nulled - (nulled @ v / (v @ v)).unsqueeze(-1) * v, orthogonal)
    assert dense_null_delta(hidden, torch.zeros(HIDDEN)).abs().max() == 0
    edit = DenseEdit()
    torch.testing.assert_close(edit.cached_null_delta(hidden, None, v), edit.null_delta(hidden, v))


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_sparse_null_cached_equals_live_at_every_position(activation: str) -> None:
    sae = make_sae(activation, seed=5).requires_grad_(False)
    lengths = [6, 2]
    cache, batch, rows = _cache(sae, lengths, seed=7)
    codes = cache.batch_codes(batch, sae.d_sae, torch.device("cpu"))
    v = _mixed_u(sae.d_sae, 3)
    flat = sparse_null_delta_cached(sae, codes, v).view(len(lengths), max(lengths), HIDDEN)
    for row, t in enumerate(lengths):
        s = sae.encode(rows[row])
        u = -(torch.relu(s @ v) / (v @ v)).unsqueeze(-1) * v  # per-position u_t
        oracle = _eq3(sae, rows[row], u)
        live = sparse_null_delta_reference(sae, rows[row], v)
        torch.testing.assert_close(live, oracle, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(flat[row, :t], live, atol=1e-5, rtol=1e-4)
    zero = sparse_null_delta_reference(sae, rows[0], torch.zeros(sae.d_sae))
    assert float(zero.abs().max()) == 0.0


def test_edits_cast_to_the_states_and_refuse_bad_forms() -> None:
    sae = make_sae("relu")
    hidden = torch.randn(2, 3, HIDDEN).to(torch.bfloat16)
    assert DenseEdit().delta(hidden, torch.ones(HIDDEN)).dtype == torch.bfloat16
    assert SparseEdit(sae).delta(hidden, _mixed_u(sae.d_sae, 1)).dtype == torch.bfloat16
    with pytest.raises(YapoError, match="unknown sparse form"):
        SparseEdit(sae, "slow")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs the batch's SAE codes"):
        SparseEdit(sae).cached_delta(hidden, None, _mixed_u(sae.d_sae, 1))


def test_trainer_and_saved_vector_use_the_same_edit() -> None:
    """A trained vector changes the stream exactly as the trainer's live path did."""
    model = make_model("llama")
    sae = make_sae("jumprelu", seed=1)
    hidden = torch.randn(2, 4, HIDDEN, generator=torch.Generator().manual_seed(3)) * 2
    for steering in (DenseSteering(HIDDEN, 2.0), SparseSteering(sae, 2.0)):
        with torch.no_grad():
            steering.vector.copy_(_mixed_u(steering.vector.numel(), 4))
        vector = steering.to_vector(model, 1, steering.method, {})
        assert type(vector.edit) is type(steering.edit)
        with torch.no_grad():
            trained = steering.hook_delta(hidden, -1).expand_as(hidden)
        used = vector.delta(hidden, 2.0, -1).expand_as(hidden)
        torch.testing.assert_close(used, trained, atol=1e-5, rtol=1e-4)
