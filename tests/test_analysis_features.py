"""Feature inspection: projection into SAE space, top latents, corpus activity, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tests.conftest import HIDDEN, make_model, make_sae, make_tokenizer
from typer.testing import CliRunner

from yapo import DenseVector, MismatchError, SparseVector, YapoError, load_model, load_sae
from yapo.analysis.features import inspect_vector, latent_activity, render_html, top_latents
from yapo.analysis.projection import (
    compare_vectors,
    decoder_fit,
    encoder_direction,
    sae_coordinates,
)
from yapo.cli.main import app

LAYER = 1


def _planted(sae_size: int, entries: dict[int, float]) -> torch.Tensor:
    c = torch.zeros(sae_size)
    for index, value in entries.items():
        c[index] = value
    return c


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_decoder_fit_recovers_a_planted_combination_of_decoder_rows(seed: int) -> None:
    sae = make_sae("relu", d_sae=96, seed=seed)
    c = _planted(96, {3: 1.5, 40: 0.7, 77: 2.0, 90: 0.3})
    fit = decoder_fit(sae, c @ sae.W_dec)
    assert torch.nonzero(fit.coefficients).flatten().tolist() == [3, 40, 77, 90]
    torch.testing.assert_close(fit.coefficients, c, atol=1e-4, rtol=0)
    assert fit.relative_residual < 1e-5
    # With removals allowed, a negative weight is recovered too.
    c[10] = -1.2
    signed = decoder_fit(sae, c @ sae.W_dec, signed=True)
    torch.testing.assert_close(signed.coefficients, c, atol=1e-4, rtol=0)
    assert signed.nonzero == 5
    # Without them, the fit stays non-negative (and cannot be exact).
    unsigned = decoder_fit(sae, c @ sae.W_dec)
    assert bool((unsigned.coefficients >= 0).all())
    assert unsigned.relative_residual > 1e-3


def test_plain_nnls_is_non_negative_and_exact_inside_the_cone() -> None:
    sae = make_sae("relu", d_sae=96)
    c = torch.rand(96, generator=torch.Generator().manual_seed(3))
    fit = decoder_fit(sae, c @ sae.W_dec, sparsity=0.0, max_iter=4000, tol=1e-9)
    assert bool((fit.coefficients >= 0).all())
    assert fit.relative_residual < 1e-2
    assert fit.nonzero > 40  # without the L1 weight the fit is dense (hence the default)


def test_encoder_direction_is_the_change_of_pre_activations() -> None:
    sae = make_sae("jumprelu")
    g = torch.Generator().manual_seed(4)
    h, v = torch.randn(5, HIDDEN, generator=g), torch.randn(HIDDEN, generator=g)
    change = sae.pre_activations(h + v) - sae.pre_activations(h)
    torch.testing.assert_close(
        change, encoder_direction(sae, v).expand_as(change), atol=1e-5, rtol=0
    )
    with pytest.raises(MismatchError):
        encoder_direction(sae, torch.randn(HIDDEN + 1))


def test_top_latents_order_sign_decoder_norm_and_neuronpedia_link() -> None:
    sae = make_sae("jumprelu", d_sae=96)
    sae.metadata["neuronpedia_id"] = "gemma-2-2b/15-gemmascope-res-65k"
    coords = _planted(96, {5: 0.2, 17: -3.0, 60: 1.0})
    infos = top_latents(coords, sae, k=10)
    assert [i.index for i in infos] == [17, 60, 5]  # by |value|, zeros left out
    assert [i.sign for i in infos] == [-1, 1, 1]
    norm = float(sae.W_dec[17].detach().norm())
    assert infos[0].decoder_norm == pytest.approx(norm)
    assert infos[0].effective == pytest.approx(3.0 * norm)
    assert infos[0].neuronpedia == (
        "https://www.neuronpedia.org/gemma-2-2b/15-gemmascope-res-65k/17"
    )
    with pytest.raises(YapoError):
        top_latents(coords, sae, k=0)


DOCS = [
    "w4 w5 w6 w7 w8 w9",
    "w10 w11 w12",
    "w13 w5 w5 w14 w15 w16 w17 w18 w19",
    "w20",
    "w21 w22 w23 w24",
]


def _oracle_codes(
    model: torch.nn.Module, tokenizer: object, sae: object, text: str
) -> torch.Tensor:
    ids = tokenizer(text, return_tensors="pt")["input_ids"]  # type: ignore[operator]
    with torch.no_grad():
        states = model(ids, output_hidden_states=True).hidden_states[LAYER + 1][0]
    return sae.encode(states)[1:].detach()  # type: ignore[attr-defined,no-any-return]  # drop BOS


def test_latent_activity_matches_one_document_at_a_time() -> None:
    model, tokenizer, sae = make_model("llama"), make_tokenizer(), make_sae("relu")
    latents = [0, 7, 31, 64]
    activity = latent_activity(
        model, tokenizer, sae, LAYER, DOCS, latents, top_n=3, window=2, batch_size=2
    )
    codes = [_oracle_codes(model, tokenizer, sae, doc) for doc in DOCS]
    total = sum(c.shape[0] for c in codes)
    assert activity.tokens == total and activity.documents == len(DOCS)
    for latent in latents:
        found = activity.latents[latent]
        column = torch.cat([c[:, latent] for c in codes])
        assert found.active_tokens == int((column > 0).sum())
        assert found.density == pytest.approx(float((column > 0).float().mean()))
        assert found.max_activation == pytest.approx(float(column.max()), abs=1e-5)
        # one context per document, the documents with the highest peaks, best first
        peaks = sorted(
            ((float(c[:, latent].max()), d) for d, c in enumerate(codes) if c[:, latent].max() > 0),
            reverse=True,
        )[:3]
        assert [c.document for c in found.contexts] == [d for _, d in peaks]
        for context, (peak, doc) in zip(found.contexts, peaks):
            assert context.activation == pytest.approx(peak, abs=1e-5)
            words = DOCS[doc].split()
            assert context.tokens[context.center].strip() == words[context.position - 1]
            assert max(context.activations) == pytest.approx(context.activation, abs=1e-6)


def test_compare_a_yapo_vector_with_its_dense_equivalent() -> None:
    model, sae = make_model("llama"), make_sae("relu", d_sae=96)
    coords = _planted(96, {2: 1.0, 33: 0.5, 70: 2.0})
    sparse = SparseVector.create(coords, model, LAYER, sae, method="yapo")
    dense = DenseVector.create(coords @ sae.W_dec.detach(), model, LAYER, method="bipo")
    same = compare_vectors(sparse, dense, sae, top_k=3, names=("yapo", "bipo"))
    assert same.cosine_sae == pytest.approx(1.0, abs=1e-5)
    assert same.cosine_residual == pytest.approx(1.0, abs=1e-5)
    assert sorted(same.shared) == [2, 33, 70] and same.jaccard == 1.0
    assert same.sign_agreement == 1.0
    other = DenseVector.create(torch.randn(HIDDEN), model, LAYER, method="bipo")
    different = compare_vectors(sparse, other, sae, top_k=3)
    assert different.cosine_sae < 0.9
    # A sparse vector from another SAE has latents that mean other things.
    with pytest.raises(MismatchError):
        sae_coordinates(sparse, make_sae("relu", d_sae=96, seed=5))


def test_inspect_vector_reports_json_and_escaped_html() -> None:
    model, tokenizer, sae = make_model("llama"), make_tokenizer(), make_sae("relu")
    coords = _planted(sae.d_sae, {1: 1.0, 9: -0.5})
    vector = SparseVector.create(coords, model, LAYER, sae, method="yapo")
    report = inspect_vector(
        vector, top=5, model=model, tokenizer=tokenizer, documents=[*DOCS, "w30 <unk> w31"]
    )
    data = json.loads(json.dumps(report.to_json()))
    assert [latent["index"] for latent in data["latents"]] == [1, 9]
    assert set(data["corpus"]["latents"]) == {"1", "9"}
    page = render_html(report, title="<t>")
    assert "&lt;t&gt;" in page and "<t>" not in page
    assert "Latent 1" in page
    with pytest.raises(YapoError, match="SAE"):
        inspect_vector(DenseVector.create(torch.randn(HIDDEN), model, LAYER))


def test_cli_inspect_with_corpus_and_comparison(saved_model_dir: Path, tmp_path: Path) -> None:
    model, _ = load_model(str(saved_model_dir))
    make_sae("relu").save(tmp_path / "sae")
    sae = load_sae(tmp_path / "sae")
    coords = _planted(sae.d_sae, {4: 2.0, 50: 1.0})
    SparseVector.create(coords, model, LAYER, sae, method="yapo").save(tmp_path / "yapo")
    dense = coords @ sae.W_dec.detach() + 0.01 * torch.randn(HIDDEN)
    DenseVector.create(dense, model, LAYER, method="bipo").save(tmp_path / "bipo")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(DOCS) + "\n", encoding="utf-8")
    result = CliRunner().invoke(
        app,
        [
            "inspect",
            str(tmp_path / "yapo"),
            "--top",
            "4",
            "--corpus",
            str(corpus),
            "--compare",
            str(tmp_path / "bipo"),
            "--out",
            str(tmp_path / "out"),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "out" / "inspect.json").read_text())
    assert [latent["index"] for latent in data["latents"]] == [4, 50]
    assert data["corpus"]["documents"] == len(DOCS)
    assert data["comparison"]["shared"] == [4, 50]
    assert data["comparison"]["cosine_residual"] > 0.99
    assert (tmp_path / "out" / "features.html").read_text().startswith("<!doctype html>")
    # A dense vector alone needs an SAE to be projected into.
    result = CliRunner().invoke(app, ["inspect", str(tmp_path / "bipo")])
    assert result.exit_code != 0
