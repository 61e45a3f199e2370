"""Vector files round-trip, BiPO releases load, and misfits are refused with reasons."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tests.conftest import HIDDEN, make_model, make_sae

from yapo import DenseVector, MismatchError, SparseVector, YapoError, load_vector
from yapo.vectors.base import CONFIG_FILE, VECTOR_FILE


def test_dense_round_trip(tmp_path: Path) -> None:
    model = make_model("llama")
    vector = DenseVector.create(
        torch.randn(HIDDEN), model, 2, method="caa", hyperparameters={"pairs": 10}
    )
    vector.save(tmp_path / "v")
    config = json.loads((tmp_path / "v" / CONFIG_FILE).read_text())
    assert config["kind"] == "dense" and config["method"] == "caa" and config["layer"] == 2
    assert config["d_model"] == HIDDEN and config["model_fingerprint"]["model_type"] == "llama"
    assert config["hyperparameters"] == {"pairs": 10} and config["version"]
    loaded = load_vector(tmp_path / "v")
    assert isinstance(loaded, DenseVector) and torch.equal(loaded.vector, vector.vector)
    assert loaded.meta == vector.meta


def test_sparse_round_trip_checks_the_sae(tmp_path: Path) -> None:
    model = make_model("llama")
    sae = make_sae("jumprelu", seed=1)
    sae.save(tmp_path / "sae")
    sae = __import__("yapo").load_sae(tmp_path / "sae")
    vector = SparseVector.create(torch.randn(sae.d_sae), model, 1, sae, method="yapo")
    vector.save(tmp_path / "v")
    config = json.loads((tmp_path / "v" / CONFIG_FILE).read_text())
    assert config["sae_reference"] == str(tmp_path / "sae")
    assert config["sae_checksum"] == sae.checksum() and config["d_sae"] == sae.d_sae
    loaded = load_vector(tmp_path / "v")  # SAE found through the saved reference
    assert isinstance(loaded, SparseVector) and torch.equal(loaded.vector, vector.vector)
    hidden = torch.randn(2, 3, HIDDEN)
    torch.testing.assert_close(loaded.delta(hidden, 2.0, -1), vector.delta(hidden, 2.0, -1))
    other = make_sae("jumprelu", seed=2)
    with pytest.raises(MismatchError, match="checksum"):
        load_vector(tmp_path / "v", sae=other)


def test_bipo_release_pt_file(tmp_path: Path) -> None:
    tensor = torch.randn(HIDDEN)
    path = tmp_path / "vec_ep20_layer15.pt"
    torch.save(tensor, path)
    vector = load_vector(path)
    assert isinstance(vector, DenseVector) and vector.layer == 15 and vector.meta.method == "bipo"
    assert torch.equal(vector.vector, tensor)
    unnamed = tmp_path / "vector.pt"
    torch.save(tensor, unnamed)
    with pytest.raises(YapoError, match="pass layer="):
        load_vector(unnamed)
    assert load_vector(unnamed, layer=3).layer == 3
    torch.save({"not": "a tensor"}, tmp_path / "dict_layer1.pt")
    with pytest.raises(YapoError, match="cannot read|not a bare tensor"):
        load_vector(tmp_path / "dict_layer1.pt")


def test_vector_for_another_model_is_refused(tmp_path: Path) -> None:
    llama, gpt2 = make_model("llama"), make_model("gpt2")
    vector = DenseVector.create(torch.randn(HIDDEN), llama, 1)
    with pytest.raises(MismatchError, match="model_type llama vs gpt2"), vector.apply(gpt2):
        pass
    wide = DenseVector.create(torch.randn(HIDDEN), llama, 1)
    wide.meta.d_model = 64
    with pytest.raises(MismatchError, match="hidden size 64"):
        wide.check_fits(llama)
    deep = DenseVector.create(torch.randn(HIDDEN), llama, 1)
    deep.meta.layer = 9
    deep.meta.model_fingerprint = None
    with pytest.raises(MismatchError, match="steers layer 9 but the model has only 4 blocks"):
        deep.check_fits(llama)
    with pytest.raises(YapoError, match="direction must be"), vector.apply(llama, direction=2):
        pass


def test_broken_vector_folders(tmp_path: Path) -> None:
    with pytest.raises(YapoError, match="vector not found"):
        load_vector(tmp_path / "missing")
    folder = tmp_path / "v"
    folder.mkdir()
    with pytest.raises(YapoError, match=f"{CONFIG_FILE} is missing"):
        load_vector(folder)
    (folder / CONFIG_FILE).write_text("{not json")
    (folder / VECTOR_FILE).write_bytes(b"junk")
    with pytest.raises(YapoError, match="cannot read vector folder"):
        load_vector(folder)
    model = make_model("llama")
    DenseVector.create(torch.randn(HIDDEN), model, 1).save(folder)
    (folder / CONFIG_FILE).write_text(json.dumps({"kind": "dense", "layer": 1}))
    with pytest.raises(YapoError, match="lacks"):
        load_vector(folder)


def test_save_replaces_atomically(tmp_path: Path) -> None:
    model = make_model("llama")
    first = DenseVector.create(torch.zeros(HIDDEN), model, 1)
    second = DenseVector.create(torch.ones(HIDDEN), model, 1)
    first.save(tmp_path / "v")
    second.save(tmp_path / "v")
    assert torch.equal(load_vector(tmp_path / "v").vector, torch.ones(HIDDEN))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v"]
