"""SAE loaders reproduce the published formulas, and save → load is bit-exact."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from tests.conftest import HIDDEN, make_model, make_sae

from yapo import MismatchError, YapoError, load_sae
from yapo.sae.formats import check_sae_fits_model


def _gemma_scope_arrays(d_in: int = HIDDEN, d_sae: int = 64) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "W_enc": rng.standard_normal((d_in, d_sae)).astype(np.float32) / 4,
        "W_dec": rng.standard_normal((d_sae, d_in)).astype(np.float32) / 4,
        "b_enc": rng.standard_normal(d_sae).astype(np.float32) * 0.1,
        "b_dec": rng.standard_normal(d_in).astype(np.float32) * 0.1,
        "threshold": rng.uniform(0, 0.5, d_sae).astype(np.float32),
    }


def _jumprelu_oracle(x: torch.Tensor, arrays: dict[str, np.ndarray]) -> torch.Tensor:
    pre = x @ torch.from_numpy(arrays["W_enc"]) + torch.from_numpy(arrays["b_enc"])
    return torch.relu(pre) * (pre > torch.from_numpy(arrays["threshold"]))


def test_gemma_scope_npz_reproduces_jumprelu(tmp_path: Path) -> None:
    arrays = _gemma_scope_arrays()
    path = tmp_path / "params.npz"
    np.savez(path, **arrays)
    x = torch.randn(5, HIDDEN)
    for ref in (path, tmp_path):  # the file, or the folder holding it
        sae = load_sae(ref)
        assert sae.activation == "jumprelu" and sae.d_sae == 64
        codes = sae.encode(x)
        torch.testing.assert_close(codes, _jumprelu_oracle(x, arrays))
        assert (codes > 0).any() and (codes == 0).any()
        recon = codes @ torch.from_numpy(arrays["W_dec"]) + torch.from_numpy(arrays["b_dec"])
        torch.testing.assert_close(sae.decode(codes), recon)


def test_saelens_folder_reproduces_jumprelu(tmp_path: Path) -> None:
    arrays = _gemma_scope_arrays()
    save_file(
        {k: torch.from_numpy(v) for k, v in arrays.items()}, tmp_path / "sae_weights.safetensors"
    )
    cfg = {
        "architecture": "jumprelu",
        "d_in": HIDDEN,
        "d_sae": 64,
        "apply_b_dec_to_input": False,
        "normalize_activations": "none",
        "model_name": "gemma-2-2b",
        "hook_name": "blocks.15.hook_resid_post",
        "neuronpedia_id": "gemma-2-2b/15-gemmascope-res-65k",
    }
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    sae = load_sae(tmp_path)
    x = torch.randn(4, HIDDEN)
    torch.testing.assert_close(sae.encode(x), _jumprelu_oracle(x, arrays))
    assert sae.neuronpedia_id() == "gemma-2-2b/15-gemmascope-res-65k"
    assert sae.metadata["hook_name"] == "blocks.15.hook_resid_post"


def test_saelens_topk_and_relu_configs(tmp_path: Path) -> None:
    arrays = _gemma_scope_arrays()
    del arrays["threshold"]
    save_file(
        {k: torch.from_numpy(v) for k, v in arrays.items()}, tmp_path / "sae_weights.safetensors"
    )
    x = torch.randn(3, HIDDEN)
    pre = x @ torch.from_numpy(arrays["W_enc"]) + torch.from_numpy(arrays["b_enc"])
    (tmp_path / "cfg.json").write_text(
        json.dumps({"architecture": "topk", "d_in": HIDDEN, "d_sae": 64, "k": 5})
    )
    codes = load_sae(tmp_path).encode(x)
    assert ((codes > 0).sum(-1) <= 5).all()
    top = pre.topk(5, dim=-1)
    torch.testing.assert_close(codes.gather(-1, top.indices), torch.relu(top.values))
    (tmp_path / "cfg.json").write_text(
        json.dumps(
            {
                "architecture": "standard",
                "activation_fn_str": "relu",
                "d_in": HIDDEN,
                "d_sae": 64,
                "apply_b_dec_to_input": True,
            }
        )
    )
    shifted = (x - torch.from_numpy(arrays["b_dec"])) @ torch.from_numpy(arrays["W_enc"])
    torch.testing.assert_close(
        load_sae(tmp_path).encode(x), torch.relu(shifted + torch.from_numpy(arrays["b_enc"]))
    )


@pytest.mark.parametrize("activation", ["jumprelu", "relu", "topk"])
def test_save_load_round_trip_is_bit_exact(tmp_path: Path, activation: str) -> None:
    sae = make_sae(activation, seed=11)
    sae.metadata.update({"hook_layer": 1, "model_name": "tiny"})
    sae.save(tmp_path / "sae")
    loaded = load_sae(tmp_path / "sae")
    for name in ("W_enc", "W_dec", "b_enc", "b_dec"):
        assert torch.equal(getattr(loaded, name), getattr(sae, name)), name
    if activation == "jumprelu":
        assert torch.equal(loaded.threshold, sae.threshold)
    assert loaded.activation == activation and loaded.k == sae.k
    assert loaded.checksum() == sae.checksum()
    assert loaded.metadata["hook_layer"] == 1
    cfg = json.loads((tmp_path / "sae" / "cfg.json").read_text())
    assert cfg["d_in"] == HIDDEN and cfg["metadata"]["model_name"] == "tiny"
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())


def test_float16_save_is_close(tmp_path: Path) -> None:
    sae = make_sae("jumprelu")
    sae.save(tmp_path / "half", dtype=torch.float16)
    loaded = load_sae(tmp_path / "half")
    assert loaded.W_enc.dtype == torch.float32  # maths stays in float32
    torch.testing.assert_close(loaded.W_enc, sae.W_enc.half().float())


def test_bad_sae_files_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(YapoError, match="SAE not found"):
        load_sae(tmp_path / "nope")
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"this is not a zip file")
    with pytest.raises(YapoError, match="cannot read .*Gemma Scope"):
        load_sae(corrupt)
    partial = tmp_path / "partial.npz"
    arrays = _gemma_scope_arrays()
    del arrays["threshold"]
    np.savez(partial, **arrays)
    with pytest.raises(YapoError, match=r"missing arrays \['threshold'\]"):
        load_sae(partial)
    folder = tmp_path / "lens"
    folder.mkdir()
    (folder / "cfg.json").write_text("{}")
    with pytest.raises(YapoError, match="sae_weights.safetensors is missing"):
        load_sae(folder)
    (folder / "sae_weights.safetensors").write_bytes(b"garbage")
    with pytest.raises(YapoError, match="cannot read"):
        load_sae(folder)
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(YapoError, match="is not an SAE"):
        load_sae(other)


def test_sae_of_the_wrong_size_is_refused() -> None:
    model = make_model("llama")
    sae = make_sae("jumprelu", d_in=HIDDEN * 2)
    with pytest.raises(MismatchError, match=r"size 64, but the model's hidden size is 32"):
        check_sae_fits_model(sae, model)
    with pytest.raises(MismatchError, match="expects d_in=64"):
        sae.encode(torch.randn(2, HIDDEN))
