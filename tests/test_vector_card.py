"""Vector folders carry a Hub model card, and ``owner/name`` loads through the Hub cache."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
from huggingface_hub import ModelCard
from tests.conftest import HIDDEN, make_model, make_sae

from yapo import DenseVector, SparseVector, YapoError, load_sae, load_vector
from yapo.vectors.base import VectorMeta
from yapo.vectors.card import (
    CARD_FILE,
    card_metadata,
    is_hub_reference,
    read_card_metadata,
    write_card,
)

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def test_dense_folder_card_front_matter(tmp_path: Path) -> None:
    model = make_model("llama")
    hyper = {"data": "pairs/power.csv", "learning_rate": 1.0, "epochs": 2}
    vector = DenseVector.create(torch.randn(HIDDEN), model, 2, method="bipo", hyperparameters=hyper)
    vector.save(tmp_path / "v", metrics={"final_loss": 0.31, "mcq_rca": 0.41})
    text = (tmp_path / "v" / CARD_FILE).read_text()
    assert text.startswith("---\n")
    card = ModelCard.load(tmp_path / "v" / CARD_FILE)  # the Hub's own parser
    data = card.data.to_dict()
    assert data["library_name"] == "yapo" and "bipo" in data["tags"]
    yapo = data["yapo"]
    assert yapo["layer"] == 2 and "block L (0-based)" in yapo["layer_convention"]
    assert yapo["method"] == "bipo" and "BiPO" in yapo["objective"]
    assert yapo["training_data"] == "pairs/power.csv"
    assert yapo["metrics"] == {"final_loss": 0.31, "mcq_rca": 0.41}
    assert yapo["hyperparameters"]["learning_rate"] == 1.0
    assert yapo["model_fingerprint"]["model_type"] == "llama"
    assert "sae" not in yapo
    assert "base_model" not in data  # a model built from a config has no Hub id
    assert "final_loss: 0.31" in card.text and "--control-vector" in card.text
    assert read_card_metadata(tmp_path / "v") == data
    assert load_vector(tmp_path / "v").meta == vector.meta  # the card changes nothing else


def test_sparse_card_names_the_sae_and_checksum(tmp_path: Path) -> None:
    sae = make_sae()
    vector = SparseVector.create(torch.randn(96), make_model("llama"), 1, sae, method="yapo")
    vector.save(tmp_path / "v")
    yapo = read_card_metadata(tmp_path / "v")["yapo"]
    assert yapo["sae"] == {
        "reference": sae.reference,
        "checksum": sae.checksum(),
        "d_sae": 96,
    }
    assert yapo["kind"] == "sparse" and "SAE latent space" in yapo["objective"]
    assert "metrics" not in yapo  # none given: omitted, not null
    write_card(tmp_path / "v", vector, metrics={"rca": 0.5})
    assert read_card_metadata(tmp_path / "v")["yapo"]["metrics"] == {"rca": 0.5}


def test_base_model_for_hub_ids_and_the_default_model() -> None:
    def meta(model: str) -> DenseVector:
        return DenseVector(
            torch.zeros(4), VectorMeta(method="caa", layer=1, d_model=4, model=model)
        )

    assert card_metadata(meta("google/gemma-2-2b-it"))["base_model"] == "google/gemma-2-2b-it"
    assert card_metadata(meta("default"))["base_model"] == "google/gemma-3-270m"
    assert "base_model" not in card_metadata(meta("/models/local-copy"))


def test_hub_reference_detection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert is_hub_reference("owner/name") and is_hub_reference("owner/name@v1")
    assert is_hub_reference("owner/repo/vectors/power")
    assert not is_hub_reference("./owner/name") and not is_hub_reference("/abs/path")
    assert not is_hub_reference("plainname")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "v").mkdir(parents=True)
    assert not is_hub_reference("runs/v")  # an existing local folder wins


def _hub_cache(tmp_path: Path, vector_folder: Path, repo: str = "someone/power-vector") -> Path:
    """A folder laid out like the Hugging Face Hub cache holding one snapshot of ``repo``."""
    cache = tmp_path / "hub-cache"
    storage = cache / f"models--{repo.replace('/', '--')}"
    (storage / "refs").mkdir(parents=True)
    (storage / "refs" / "main").write_text(COMMIT)
    snapshot = storage / "snapshots" / COMMIT
    shutil.copytree(vector_folder, snapshot)
    return cache


def test_load_vector_from_offline_hub_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vector = DenseVector.create(torch.randn(HIDDEN), make_model("llama"), 2, method="caa")
    vector.save(tmp_path / "v")
    cache = _hub_cache(tmp_path, tmp_path / "v")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.chdir(tmp_path)
    loaded = load_vector("someone/power-vector")
    assert isinstance(loaded, DenseVector) and torch.equal(loaded.vector, vector.vector)
    assert loaded.meta == vector.meta
    with pytest.raises(YapoError, match="cannot be fetched"):
        load_vector("someone/not-cached")


def test_sparse_vector_in_a_repo_subfolder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sae = make_sae()
    sae.save(tmp_path / "sae")
    sae = load_sae(tmp_path / "sae")
    vector = SparseVector.create(torch.randn(96), make_model("llama"), 1, sae, method="yapo")
    vector.save(tmp_path / "repo" / "vectors" / "a")
    cache = _hub_cache(tmp_path, tmp_path / "repo", repo="someone/many")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    loaded = load_vector("someone/many/vectors/a")
    assert isinstance(loaded, SparseVector) and torch.equal(loaded.vector, vector.vector)
    with pytest.raises(YapoError, match="no vector folder"):
        load_vector("someone/many/vectors/b")


def test_cli_vector_owner_name_offline(tmp_path: Path, saved_model_dir: Path) -> None:
    """``--vector owner/name`` in a fresh process that only sees the env variables."""
    vector = DenseVector.create(torch.randn(HIDDEN) * 4, make_model("llama"), 2, method="caa")
    vector.save(tmp_path / "v")
    cache = _hub_cache(tmp_path, tmp_path / "v")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable, "-m", "yapo.cli.main", "generate", "w1 w2 w3", "--model",
        str(saved_model_dir), "--vector", "someone/power-vector", "--multiplier", "2",
        "--max-new-tokens", "6", "--json",
    ]  # fmt: skip
    done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    output = json.loads(done.stdout)[0]["output"]
    from yapo import load_model
    from yapo.generation import generate

    model, tokenizer = load_model(str(saved_model_dir))
    assert output == generate(model, tokenizer, "w1 w2 w3", vector=vector, multiplier=2.0,
                              max_new_tokens=6)[0]  # fmt: skip
