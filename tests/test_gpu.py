"""CUDA checks: run with `python -m pytest -m gpu` on a machine with a GPU (skipped otherwise)."""

from __future__ import annotations

import pytest
import torch
from tests.conftest import HIDDEN, make_model, make_sae

from yapo import DenseVector, SparseVector

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_steering_on_cuda_half_precision(dtype: torch.dtype) -> None:
    model = make_model("gemma3").to("cuda", dtype)
    sae = make_sae("jumprelu").to("cuda")
    ids = torch.randint(3, 100, (2, 6), device="cuda")
    with torch.no_grad():
        base = model(ids, output_hidden_states=True).hidden_states
    for vector in (
        DenseVector.create(torch.randn(HIDDEN), model, 1),
        SparseVector.create(torch.randn(sae.d_sae), model, 1, sae),
    ):
        with torch.no_grad(), vector.apply(model, multiplier=2.0):
            steered = model(ids, output_hidden_states=True).hidden_states
        expected = base[2] + vector.delta(base[2], 2.0, 1)
        assert steered[2].dtype == dtype and steered[2].device.type == "cuda"
        torch.testing.assert_close(steered[2], expected)


def test_sae_on_cpu_steers_model_on_cuda() -> None:
    """The delta follows the activation's device, wherever the SAE lives."""
    model = make_model("llama").to("cuda")
    sae = make_sae("relu")
    vector = SparseVector.create(torch.randn(sae.d_sae), model, 1, sae)
    ids = torch.randint(3, 100, (1, 4), device="cuda")
    with torch.no_grad(), vector.apply(model, multiplier=1.0):
        out = model(ids).logits
    assert out.device.type == "cuda" and torch.isfinite(out).all()
