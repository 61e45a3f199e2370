"""SAE training on tiny models and synthetic data (fast; no Hub, no default model)."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast
from typer.testing import CliRunner

from yapo.errors import YapoError
from yapo.models import decoder_blocks
from yapo.sae import SAE, load_sae
from yapo.sae.training import (
    ActivationCache,
    ActivationStore,
    SAETrainConfig,
    SAETrainer,
    StoreConfig,
    TrainableSAE,
    build_cache,
    evaluate_sae,
    layer_states,
    merge_caches,
)
from yapo.sae.training.activations import token_windows
from yapo.sae.training.corpus import iter_corpus
from yapo.sae.training.trainer import _aux_loss

WORDS = [
    "the",
    "cat",
    "dog",
    "sat",
    "on",
    "a",
    "mat",
    "red",
    "blue",
    "green",
    "big",
    "small",
    "house",
    "tree",
    "runs",
    "jumps",
    "over",
    "under",
]


def _texts(n: int, seed: int = 0) -> list[str]:
    rng = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        length = int(torch.randint(3, 40, (1,), generator=rng))
        idx = torch.randint(0, len(WORDS), (length,), generator=rng)
        out.append(" ".join(WORDS[i] for i in idx))
    return out


@pytest.fixture(scope="module")
def tiny() -> tuple[Any, Any]:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=40,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    model = AutoModelForCausalLM.from_config(config).eval()
    model.requires_grad_(False)
    raw = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    raw.train_from_iterator(
        [" ".join(WORDS)],
        trainers.WordLevelTrainer(special_tokens=["[PAD]", "[BOS]", "[UNK]"]),
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw, pad_token="[PAD]", bos_token="[BOS]", unk_token="[UNK]"
    )
    return model, tokenizer


def _direct_states(model: Any, tokenizer: Any, texts: list[str], layer: int, context: int) -> Any:
    """Oracle: full forward pass per window, hidden_states[layer + 1], BOS dropped."""
    rows = []
    for text in texts:
        for window in token_windows(text, tokenizer, context):
            if len(window) < 2:
                continue
            with torch.no_grad():
                out = model(input_ids=torch.tensor([window]), output_hidden_states=True)
            rows.append(out.hidden_states[layer + 1][0, 1:])
    return torch.cat(rows)


# ------------------------------------------------------------ activation store
def test_layer_states_stop_early_and_match_hidden_states(tiny: tuple[Any, Any]) -> None:
    model, _ = tiny
    ids = torch.randint(3, 40, (2, 9))
    calls = []
    handle = decoder_blocks(model)[2].register_forward_hook(lambda *a: calls.append(1))
    try:
        states = layer_states(model, ids, torch.ones_like(ids), 1)
    finally:
        handle.remove()
    assert calls == []  # the block after L never ran
    with torch.no_grad():
        full = model(input_ids=ids, output_hidden_states=True).hidden_states[2]
    torch.testing.assert_close(states, full, rtol=0, atol=0)


def test_store_yields_exactly_layer_states_without_pad_or_bos(tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny
    texts = _texts(7)
    config = StoreConfig(layer=2, context_size=16, model_batch_size=3, min_window_tokens=2)
    store = ActivationStore(model, tokenizer, texts, config)
    streamed = torch.cat(list(store))
    expected = _direct_states(model, tokenizer, texts, 2, 16)
    assert streamed.shape == expected.shape
    torch.testing.assert_close(streamed, expected, rtol=1e-5, atol=1e-5)


def test_shuffle_buffer_is_a_bounded_permutation(tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny
    config = StoreConfig(layer=1, context_size=16, model_batch_size=4, min_window_tokens=2)
    store = ActivationStore(model, tokenizer, _texts(20), config)
    ordered = torch.cat(list(store))
    batches = list(store.shuffled_batches(batch_size=8, buffer_size=64, seed=1))
    assert all(len(b) == 8 for b in batches)
    served = torch.cat(batches)
    assert len(ordered) - 8 < len(served) <= len(ordered)
    assert not torch.equal(served, ordered[: len(served)])  # actually shuffled
    # the served rows are a sub-multiset of the stream (equal prefixes give equal rows)
    stream_rows = Counter(tuple(row) for row in ordered.tolist())
    served_rows = Counter(tuple(row) for row in served.tolist())
    assert not served_rows - stream_rows


def test_cache_matches_store_and_resumes(tiny: tuple[Any, Any], tmp_path: Path) -> None:
    model, tokenizer = tiny
    texts = _texts(30)
    config = StoreConfig(layer=1, context_size=16, model_batch_size=2, min_window_tokens=2)
    direct = torch.cat(list(ActivationStore(model, tokenizer, texts, config)))
    partial = build_cache(
        ActivationStore(model, tokenizer, texts, config),
        tmp_path / "c",
        max_tokens=100,
        shard_tokens=40,
        progress=False,
    )
    assert 100 <= partial.tokens < len(direct)
    cache = build_cache(
        ActivationStore(model, tokenizer, texts, config),
        tmp_path / "c",
        shard_tokens=40,
        progress=False,
    )
    assert cache.tokens == len(direct)
    torch.testing.assert_close(cache.data().float(), direct, rtol=1e-3, atol=1e-3)
    other = StoreConfig(layer=2, context_size=16, model_batch_size=2, min_window_tokens=2)
    with pytest.raises(YapoError, match="other settings"):
        build_cache(ActivationStore(model, tokenizer, texts, other), tmp_path / "c")
    # caches made in parallel over parts of a corpus merge into one
    half = len(texts) // 2
    parts = [
        build_cache(
            ActivationStore(model, tokenizer, chunk, config), tmp_path / name, progress=False
        )
        for name, chunk in (("p1", texts[:half]), ("p2", texts[half:]))
    ]
    merged = merge_caches([p.folder for p in parts], tmp_path / "merged")
    torch.testing.assert_close(merged.data(), cache.data())
    assert build_cache(
        ActivationStore(model, tokenizer, texts, config), merged.folder
    ).tokens == len(direct)
    # batches are deterministic in (seed, step): starting at step 5 = skipping 5 batches
    full = cache.batches(16, seed=3)
    skipped = [next(full) for _ in range(5)]
    assert len(skipped) == 5
    torch.testing.assert_close(next(full), next(cache.batches(16, seed=3, start_step=5)))


# ------------------------------------------------------------ synthetic training
def _planted(d: int = 32, m: int = 64, active: int = 3, seed: int = 0) -> tuple[Any, Any]:
    g = torch.Generator().manual_seed(seed)
    dictionary = torch.randn(m, d, generator=g)
    dictionary /= dictionary.norm(dim=1, keepdim=True)

    def batches(start_step: int) -> Any:
        step = start_step
        while True:
            gen = torch.Generator().manual_seed(1000 + step)
            idx = torch.rand(512, m, generator=gen).argsort(1)[:, :active]
            coef = torch.zeros(512, m).scatter(1, idx, 1 + torch.rand(512, active, generator=gen))
            yield coef @ dictionary + 0.5
            step += 1

    return dictionary, batches


@pytest.mark.parametrize(
    ("architecture", "extra"),
    [
        ("topk", {"k": 3}),
        ("jumprelu", {"l0_coefficient": 3e-3, "l0_warmup_steps": 100, "threshold_init": 0.1}),
    ],
)
def test_training_recovers_planted_dictionary(
    architecture: str, extra: dict[str, Any], tmp_path: Path
) -> None:
    torch.manual_seed(0)
    dictionary, batches = _planted()
    config = SAETrainConfig(
        d_in=32,
        d_sae=128,
        architecture=architecture,  # type: ignore[arg-type]
        steps=400,
        batch_size=512,
        lr=3e-3,
        dead_tokens=20_000,
        aux_k=32,
        log_every=5,
        checkpoint_every=10_000,
        **extra,
    )
    result = SAETrainer(config, batches, tmp_path).run(progress=False)
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["mse"] < 0.3 * lines[0]["mse"]  # first 5 steps vs last 5
    assert lines[-1]["fvu"] < 0.15
    assert 2 <= lines[-1]["l0"] <= 8
    cos = dictionary @ result.sae.W_dec.t() / result.sae.W_dec.norm(dim=1)
    recovered = (cos.max(dim=1).values > 0.9).float().mean()
    assert recovered >= 0.9, f"only {recovered:.2f} of planted directions recovered"


def test_sparse_topk_gradients_equal_dense_autograd() -> None:
    """The sparse TopK path (no dense code matrix) must give the textbook gradients."""
    torch.manual_seed(3)
    config = SAETrainConfig(d_in=16, d_sae=48, architecture="topk", k=5)
    sae = TrainableSAE(config, b_dec=torch.randn(16))
    with torch.no_grad():
        sae.b_enc.normal_()
    x = torch.randn(20, 16)
    dead = torch.zeros(48, dtype=torch.bool)
    dead[::3] = True
    out = sae(x)
    loss = (out["recon"] - x).pow(2).sum() + _aux_loss(sae, x, out, dead, aux_k=4)
    loss.backward()
    sparse_grads = [p.grad.clone() for p in (sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec)]
    # dense oracle
    params = [
        p.detach().clone().requires_grad_(True)
        for p in (sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec)
    ]
    w_enc, b_enc, w_dec, b_dec = params
    pre = (x - b_dec) @ w_enc + b_enc
    values, indices = pre.topk(5, dim=-1)
    codes = torch.zeros_like(pre).scatter(-1, indices, torch.relu(values))
    recon = codes @ w_dec + b_dec
    residual = (x - recon).detach()
    aux_values, aux_indices = pre.masked_fill(~dead, float("-inf")).topk(4, dim=-1)
    aux_codes = torch.zeros_like(pre).scatter(-1, aux_indices, torch.relu(aux_values))
    aux = (residual - aux_codes @ w_dec).pow(2).sum(-1).mean()
    aux = aux / (residual - residual.mean(0)).pow(2).sum(-1).mean()
    ((recon - x).pow(2).sum() + aux).backward()
    for sparse, dense in zip(sparse_grads, params):
        assert dense.grad is not None
        torch.testing.assert_close(sparse, dense.grad, rtol=1e-4, atol=1e-5)


def test_resume_continues_identically(tmp_path: Path) -> None:
    _, batches = _planted(seed=1)

    def config() -> SAETrainConfig:
        return SAETrainConfig(
            d_in=32, d_sae=64, architecture="jumprelu", steps=30, batch_size=512,
            lr=1e-3, dead_tokens=2_000, aux_k=16, log_every=5, checkpoint_every=10,
        )  # fmt: skip

    straight = SAETrainer(config(), batches, tmp_path / "a").run(progress=False)
    SAETrainer(config(), batches, tmp_path / "b").run(progress=False, stop_after=10)
    assert not (tmp_path / "b" / "sae").exists()
    resumed = SAETrainer(config(), batches, tmp_path / "b").run(progress=False)
    for name in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold"):
        assert torch.equal(getattr(straight.sae, name), getattr(resumed.sae, name)), name

    def metrics(p: Path) -> list[dict[str, float]]:
        rows = [json.loads(x) for x in (p / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]

    assert metrics(tmp_path / "a") == metrics(tmp_path / "b")
    changed = config()
    changed.lr = 5e-3
    with pytest.raises(YapoError, match="different run"):
        SAETrainer(changed, batches, tmp_path / "b").run(progress=False)


def test_saved_sae_works_on_raw_activations(tmp_path: Path) -> None:
    _, batches = _planted(seed=2)
    for architecture in ("jumprelu", "topk"):
        config = SAETrainConfig(
            d_in=32, d_sae=64, architecture=architecture, k=4, steps=20, batch_size=512,  # type: ignore[arg-type]
            log_every=10, checkpoint_every=100, metadata={"hook_layer": 3},
        )  # fmt: skip
        trainer = SAETrainer(config, batches, tmp_path / architecture)
        trainer.run(progress=False)
        loaded = load_sae(tmp_path / architecture / "sae")
        assert loaded.activation == architecture and loaded.metadata["hook_layer"] == 3
        x = next(batches(99)) * 7.0  # raw activations of another scale than training's
        assert trainer.model is not None
        with torch.no_grad():
            trained = trainer.model(x * trainer.scale)
        torch.testing.assert_close(
            loaded(x), trained["recon"] / trainer.scale, rtol=1e-4, atol=1e-4
        )
        torch.testing.assert_close(
            loaded.encode(x),
            trainer.model.codes(x * trainer.scale) / trainer.scale,
            rtol=1e-4,
            atol=1e-4,
        )
        torch.testing.assert_close(loaded.W_dec.norm(dim=1), torch.ones(64))


# ------------------------------------------------------------------ evaluation
def _identity_sae(d: int) -> SAE:
    eye = torch.eye(d)
    return SAE(
        torch.cat([eye, -eye], 1),
        torch.zeros(2 * d),
        torch.cat([eye, -eye], 0),
        torch.zeros(d),
        activation="relu",
    )


def test_evaluation_oracles(tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny
    texts = _texts(10, seed=5)
    perfect = evaluate_sae(model, tokenizer, _identity_sae(32), texts, 1, progress=False)
    assert perfect.variance_explained == pytest.approx(1.0, abs=1e-5)
    assert abs(perfect.ce_increase) < 1e-4
    assert perfect.l0 == pytest.approx(32, abs=0.5)  # one of ±x_i is positive
    states = _direct_states(model, tokenizer, texts, 1, 256)
    mean = states.mean(0)
    constant = SAE(torch.zeros(32, 8), torch.zeros(8), torch.randn(8, 32), mean, activation="relu")
    result = evaluate_sae(model, tokenizer, constant, texts, 1, progress=False)
    assert result.variance_explained == pytest.approx(0.0, abs=1e-4)
    assert result.l0 == 0 and result.dead_fraction == 1.0 and result.dense_fraction == 0.0
    assert abs(result.ce_increase) > 1e-3  # replacing the layer by its mean changes the loss
    assert abs(result.ce_increase_with_error) < 1e-5  # adding the error back is exact
    assert result.tokens == len(states)


# ------------------------------------------------------------------------ CLI
def test_cli_train_and_eval(tiny: tuple[Any, Any], tmp_path: Path) -> None:
    from yapo.cli.main import app

    model, tokenizer = tiny
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("\n".join(json.dumps({"text": t}) for t in _texts(40)) + "\n")
    heldout = tmp_path / "heldout.txt"
    heldout.write_text("\n\n".join(_texts(5, seed=9)))
    runner = CliRunner()
    run = tmp_path / "run"
    common = ["sae", "train", "--model", str(tmp_path / "model"), "--layer", "1"]
    args = [*common, "--corpus", str(corpus), "--width", "64", "--out", str(run)]
    args += ["--architecture", "topk", "--k", "4", "--batch-size", "64", "--epochs", "2"]
    result = runner.invoke(app, [*args, "--no-progress", "--save-dtype", "float16"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    cache = ActivationCache(run / "activations")
    assert summary["steps"] == math.ceil(cache.tokens * 2 / 64)
    cfg = json.loads((run / "sae" / "cfg.json").read_text())
    assert cfg["dtype"] == "float16" and cfg["hook_name"] == "blocks.1.hook_resid_post"
    recipe = cfg["metadata"]["training"]
    assert recipe["k"] == 4 and "scale" in recipe and "metadata" not in recipe  # said once
    assert (run / "checkpoint" / "state.safetensors").is_file()
    out_json = tmp_path / "eval.json"
    result = runner.invoke(
        app,
        ["sae", "eval", "--sae", str(run / "sae"), "--model", str(tmp_path / "model"),
         "--corpus", str(heldout), "--output", str(out_json), "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    metrics = json.loads(out_json.read_text())
    assert metrics["layer"] == 1 and metrics["l0"] <= 4
    assert abs(metrics["ce_increase_with_error"]) < 1e-4
    # streaming mode (no cache) trains too
    stream = [*common, "--corpus", str(corpus), "--width", "32", "--out", str(tmp_path / "s")]
    stream += ["--stream", "--steps", "3", "--batch-size", "32", "--buffer-size", "128"]
    result = runner.invoke(app, [*stream, "--no-progress"])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "s" / "activations").exists()
    # JumpReLU's initial threshold is an option, and a useless one is refused up front.
    bad = [*common, "--corpus", str(corpus), "--width", "32", "--out", str(tmp_path / "j")]
    bad += ["--stream", "--steps", "1", "--threshold-init", "0"]
    result = runner.invoke(app, [*bad, "--no-progress"])
    assert isinstance(result.exception, YapoError)  # `yapo` maps it to "error: ..." + exit 2
    assert "threshold_init must be positive, got 0.0" in str(result.exception)


def test_corpus_reader(tmp_path: Path) -> None:
    text = tmp_path / "a.txt"
    text.write_text("first para\nline two\n\n\nsecond para\n")
    jsonl = tmp_path / "b.jsonl"
    jsonl.write_text('{"text": "x"}\n\n{"text": "y"}\n')
    assert list(iter_corpus([text, jsonl])) == ["first para\nline two", "second para", "x", "y"]
    bad = tmp_path / "c.jsonl"
    bad.write_text('{"body": "x"}\n')
    with pytest.raises(YapoError, match="no 'text' field"):
        list(iter_corpus([bad]))
    with pytest.raises(YapoError, match="not found"):
        list(iter_corpus([tmp_path / "missing.txt"]))


def test_default_layer_matches_packaged_sae() -> None:
    from yapo.sae.default import DEFAULT_LAYER
    from yapo.sae.formats import default_sae_folder

    if not (default_sae_folder() / "cfg.json").is_file():
        pytest.skip("no packaged default SAE in this checkout")
    sae = load_sae("default")
    assert DEFAULT_LAYER == sae.metadata["hook_layer"] == 14  # chosen by patching (model card)
    assert sae.metadata["hook_name"] == "blocks.14.hook_resid_post"
    assert sae.d_in == 640
