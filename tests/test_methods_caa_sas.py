"""CAA and SAS against straightforward recomputations from Hugging Face hidden states."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tests.conftest import make_model, make_sae, make_tokenizer
from tests.methods_support import tiny_pairs

from yapo.errors import YapoError
from yapo.methods import answer_positions, train, train_caa, train_sas
from yapo.methods.api import _tokenize
from yapo.methods.batches import TokenizedSequence
from yapo.methods.sas import sparsify
from yapo.vectors import DenseVector, SparseVector, load_vector

LAYER = 1


def _answer_state(model: torch.nn.Module, seq: TokenizedSequence, position: str) -> torch.Tensor:
    """h_L at the answer position(s), from a plain forward of the sequence alone."""
    with torch.no_grad():
        out = model(input_ids=seq.input_ids[None], output_hidden_states=True)
    states = out.hidden_states[LAYER + 1][0]
    response = torch.nonzero(seq.response_mask).flatten().tolist()
    body = response[:-1]  # the final token is EOS (id 2)
    pick = {"last": body[-1:], "first": body[:1], "eos": response[-1:], "mean": body}[position]
    return states[pick].mean(dim=0)


@pytest.mark.parametrize("position", ["last", "first", "eos", "mean"])
def test_caa_is_the_mean_difference_at_the_answer_position(position: str) -> None:
    model = make_model("gemma3")
    pairs = _tokenize(make_tokenizer(), tiny_pairs(10), 512, "auto")
    vector = train_caa(model, LAYER, pairs, 0, position=position, eos_token_id=2, batch_size=3)
    expected = torch.stack(
        [
            _answer_state(model, p.chosen, position) - _answer_state(model, p.rejected, position)
            for p in pairs
        ]
    ).mean(dim=0)
    assert isinstance(vector, DenseVector) and vector.meta.method == "caa"
    torch.testing.assert_close(vector.vector, expected, atol=1e-5, rtol=1e-4)
    assert vector.meta.hyperparameters["position"] == position


def test_answer_positions() -> None:
    seq = TokenizedSequence(
        torch.tensor([1, 5, 6, 70, 71, 72, 2]),
        torch.tensor([0, 0, 0, 1, 1, 1, 1], dtype=torch.bool),
    )
    assert answer_positions(seq, "first", 2).tolist() == [3]
    assert answer_positions(seq, "last", 2).tolist() == [5]
    assert answer_positions(seq, "eos", 2).tolist() == [6]
    assert answer_positions(seq, "mean", 2).tolist() == [3, 4, 5]
    assert answer_positions(seq, "last", None).tolist() == [6]
    with pytest.raises(YapoError, match="position"):
        answer_positions(seq, "middle", 2)  # type: ignore[arg-type]


def test_sas_is_the_sparsified_code_contrast() -> None:
    model = make_model("llama")
    sae = make_sae("jumprelu", d_sae=96).requires_grad_(False)
    pairs = _tokenize(make_tokenizer(), tiny_pairs(10), 512, "auto")
    vector = train_sas(model, LAYER, sae, pairs, 0, eos_token_id=2, min_frequency=0.3, top_k=5)
    chosen = torch.stack([sae.encode(_answer_state(model, p.chosen, "last")) for p in pairs])
    rejected = torch.stack([sae.encode(_answer_state(model, p.rejected, "last")) for p in pairs])
    contrast = chosen.mean(0) - rejected.mean(0)
    frequent = ((chosen > 0).float().mean(0) >= 0.3) | ((rejected > 0).float().mean(0) >= 0.3)
    candidates = torch.where(frequent, contrast, torch.zeros_like(contrast))
    top = set(candidates.abs().topk(5).indices.tolist())
    assert isinstance(vector, SparseVector) and vector.meta.method == "sas"
    assert set(torch.nonzero(vector.vector).flatten().tolist()) == top
    for i in top:
        assert float(vector.vector[i]) == pytest.approx(float(contrast[i]), abs=1e-5)


def test_sparsify_keeps_frequent_then_largest() -> None:
    v = torch.tensor([0.5, -2.0, 1.0, 3.0, 0.0])
    chosen = torch.tensor([[1.0, 0, 1, 0, 0], [1.0, 0, 1, 0, 0]])
    rejected = torch.tensor([[0.0, 1, 0, 0, 0], [0.0, 0, 0, 0, 0]])
    # latent 3 never fires (frequency 0): dropped; latent 1 fires in half the rejected
    assert sparsify(v, chosen, rejected, 0.5, None).tolist() == [0.5, -2.0, 1.0, 0.0, 0.0]
    assert sparsify(v, chosen, rejected, 0.5, 2).tolist() == [0.0, -2.0, 1.0, 0.0, 0.0]
    with pytest.raises(YapoError):
        sparsify(v, chosen, rejected, 1.5, None)


@pytest.mark.parametrize("method", ["caa", "sas"])
def test_caa_and_sas_run_folders(method: str, tmp_path: Path) -> None:
    sae = make_sae() if method == "sas" else None
    result = train(
        method,
        data=tiny_pairs(8),
        model=make_model("llama"),
        tokenizer=make_tokenizer(),
        layer=LAYER,
        sae=sae,
        out=tmp_path / "run",
        progress=False,
    )
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["settings"]["method"] == method and config["finished"] is True
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert record["nonzero"] == int((result.vector.vector != 0).sum()) > 0
    loaded = load_vector(tmp_path / "run" / "vector", sae=sae)
    assert torch.equal(loaded.vector, result.vector.vector)
    if method == "sas":
        assert record["nonzero"] <= 64
