"""Activation patching: the patched run carries exactly the source state from layer j on."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from tests.conftest import ARCHITECTURES, LAYERS, make_model, make_tokenizer

from yapo import YapoError, add_to_layer, decoder_blocks
from yapo.analysis.patching import (
    CurvePoint,
    PatchingResult,
    PatchPair,
    patch_last_token,
    patch_layers,
    save_patching,
)

SHARED = [1, 5, 9, 14, 22, 7]  # <bos> w1 w5 w10 w18 w3
SOURCE = [*SHARED, 40]
TARGET = [*SHARED, 41]
ONE_TOKEN = [[50], [51], [52]]  # options read at the prompt's last position
SEVERAL = [[50, 60, 61], [51], [52, 62]]  # options of several tokens (right padding)


def _states(model: torch.nn.Module, ids: list[int], column: int = -1) -> torch.Tensor:
    """Output of every block at ``column``, ``(n_blocks, d)``, read by hooks on the blocks."""
    blocks = decoder_blocks(model)
    states: list[torch.Tensor] = []

    def hook(_m: torch.nn.Module, _a: object, out: object) -> None:
        states.append((out[0] if isinstance(out, tuple) else out)[0, column])  # type: ignore[index]

    handles = [b.register_forward_hook(hook) for b in blocks]
    try:
        with torch.no_grad():
            model(torch.tensor([ids]))
    finally:
        for h in handles:
            h.remove()
    return torch.stack(states)


def _option_scores(
    model: torch.nn.Module, prompt: list[int], options: list[list[int]]
) -> torch.Tensor:
    """Summed log-prob of each option after ``prompt``, one unbatched forward per option."""
    scores = []
    for option in options:
        with torch.no_grad():
            logits = model(torch.tensor([prompt + option])).logits[0].float()
        lp = torch.log_softmax(logits[len(prompt) - 1 : -1], -1)
        scores.append(float(lp.gather(-1, torch.tensor(option).unsqueeze(-1)).sum()))
    return torch.tensor(scores)


@pytest.mark.parametrize("use_cache", [True, False])
def test_patching_at_layer_j_reproduces_the_source_states_from_j_on(use_cache: bool) -> None:
    # Source and target differ only in the last token, so every other position is the
    # same in both runs: from block j on the patched run must *be* the source run there.
    model, tokenizer = make_model("llama"), make_tokenizer()
    layers = list(range(LAYERS))
    out = patch_last_token(
        model,
        tokenizer,
        [SOURCE],
        [TARGET],
        [ONE_TOKEN],
        [ONE_TOKEN],
        layers,
        use_cache=use_cache,
        keep_states=True,
    )
    assert out.patched_states is not None and out.source_states is not None
    source, target = _states(model, SOURCE), _states(model, TARGET)
    torch.testing.assert_close(out.source_states[0], source, rtol=0, atol=1e-6)
    expected_source = _option_scores(model, SOURCE, ONE_TOKEN)
    for k, j in enumerate(layers):
        patched = out.patched_states[0, k]
        torch.testing.assert_close(patched[j:], source[j:], rtol=0, atol=1e-5)
        if j > 0:  # before the patch the run is the unpatched target
            torch.testing.assert_close(patched[:j], target[:j], rtol=0, atol=1e-5)
            assert not torch.allclose(patched[:j], source[:j], atol=1e-3)
        # one-token answers are read from that very state: the localized run's answer
        torch.testing.assert_close(out.patched[0, k], expected_source, atol=1e-5, rtol=0)
    torch.testing.assert_close(
        out.target[0], _option_scores(model, TARGET, ONE_TOKEN), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(out.source[0], expected_source, atol=1e-5, rtol=0)


def _oracle(
    model: torch.nn.Module,
    source: list[int],
    target: list[int],
    options: list[list[int]],
    layer: int,
) -> torch.Tensor:
    """Unbatched runs of target + option with the target's last prompt state set to the source's."""
    value = _states(model, source)[layer]
    column = len(target) - 1

    def delta(h: torch.Tensor) -> torch.Tensor:
        change = torch.zeros_like(h)
        change[:, column] = value - h[:, column]
        return change

    with add_to_layer(model, layer, delta):
        return _option_scores(model, target, options)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_cached_patching_of_multi_token_options_matches_an_unbatched_oracle(arch: str) -> None:
    # Different source and target prompts and lengths, options of 1-3 tokens, checked
    # against an independent oracle built on yapo.add_to_layer; the cached form, the
    # full form and a one-row-per-forward chunking must all agree.
    model, tokenizer = make_model(arch), make_tokenizer()
    sources = [[1, 5, 6, 7, 8, 9], [1, 30, 31]]
    targets = [[1, 60, 61], [1, 70, 71, 72, 73, 74, 75]]
    options = [SEVERAL, [[90, 91], [92]]]
    layers = [0, 2, LAYERS - 1]
    cached = patch_last_token(model, tokenizer, sources, targets, options, options, layers)
    full = patch_last_token(
        model, tokenizer, sources, targets, options, options, layers, use_cache=False
    )
    tiny = patch_last_token(
        model, tokenizer, sources, targets, options, options, layers, max_logits=1
    )
    torch.testing.assert_close(cached.patched, full.patched, atol=1e-5, rtol=0)
    torch.testing.assert_close(cached.patched, tiny.patched, atol=1e-5, rtol=0)
    assert cached.lengths.tolist() == [[3, 1, 2], [2, 1, 0]]
    assert cached.patched[1, :, 2].isinf().all()  # the second item has two options
    for i, (source, target) in enumerate(zip(sources, targets)):
        n = len(options[i])
        expected_target = _option_scores(model, target, options[i])
        torch.testing.assert_close(cached.target[i, :n], expected_target, atol=1e-5, rtol=0)
        torch.testing.assert_close(
            cached.source[i, :n], _option_scores(model, source, options[i]), atol=1e-5, rtol=0
        )
        for k, layer in enumerate(layers):
            expected = _oracle(model, source, target, options[i], layer)
            torch.testing.assert_close(cached.patched[i, k, :n], expected, atol=1e-5, rtol=0)


def _pairs() -> list[PatchPair]:
    words = [f"w{i}" for i in range(4, 100)]
    pairs = []
    for i in range(5):
        stem = " ".join(words[7 * i : 7 * i + 3 + i])
        pairs.append(
            PatchPair(
                source=f"{stem} {words[60 + i]} w3",
                target=f"{stem} w3",
                choices=(" w90 w93", " w91", " w92 w94"),
                correct=i % 3,
                western=(i + 1) % 3 if i < 4 else None,
                id=f"item{i}",
            )
        )
    return pairs


def test_patch_layers_batches_reads_options_and_saves(tmp_path: Path) -> None:
    model, tokenizer = make_model("gemma3"), make_tokenizer()
    pairs = _pairs()
    one = patch_layers(model, tokenizer, pairs, batch_size=1)
    many = patch_layers(model, tokenizer, pairs, batch_size=3)
    assert one.layers == list(range(LAYERS))
    for a, b in zip(one.items, many.items):
        assert a.id == b.id
        assert a.localized.correct == pytest.approx(b.localized.correct, abs=1e-5)
        for pa, pb in zip(a.patched, b.patched):
            assert pa.correct == pytest.approx(pb.correct, abs=1e-5)
    # Probabilities are those of the option continuations, renormalised over the options.
    pair, item = pairs[0], one.items[0]
    prompt = tokenizer(pair.target)["input_ids"]
    options = [tokenizer(c, add_special_tokens=False)["input_ids"] for c in pair.choices]
    scores = _option_scores(model, prompt, options)
    probs = torch.softmax(scores, -1)
    assert item.nonlocalized.correct == pytest.approx(float(probs[pair.correct]), abs=1e-5)
    assert item.nonlocalized.western == pytest.approx(float(probs[pair.western or 0]), abs=1e-5)
    assert item.nonlocalized.option_mass == pytest.approx(float(scores.exp().sum()), abs=1e-6)
    normalized = patch_layers(model, tokenizer, pairs[:1], layers=[1], normalize=True)
    mean = scores / torch.tensor([len(o) for o in options])
    assert normalized.items[0].nonlocalized.correct == pytest.approx(
        float(torch.softmax(mean, -1)[pair.correct]), abs=1e-5
    )
    # The curve is the mean over items; the item without a Western option is left out of it.
    assert one.curve[1].p_correct == pytest.approx(
        sum(i.patched[1].correct for i in one.items) / 5, abs=1e-6
    )
    assert one.curve[1].p_western == pytest.approx(
        sum(i.patched[1].western or 0.0 for i in one.items[:4]) / 4, abs=1e-6
    )

    paths = save_patching(one, tmp_path / "out")
    data = json.loads(paths["json"].read_text())
    assert data["best_layer"] == one.best_layer
    assert [p["layer"] for p in data["curve"]] == one.layers
    assert len(data["items"]) == 5
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _point(p: float, w: float | None) -> CurvePoint:
    return CurvePoint(p_correct=p, p_western=w, accuracy=0.0, western_rate=None, option_mass=1.0)


def test_best_and_first_recovering_layer() -> None:
    curve = [_point(0.2, 0.5), _point(0.3, 0.4), _point(0.6, 0.2), _point(0.5, 0.3)]
    result = PatchingResult(
        layers=[0, 1, 2, 3],
        curve=curve,
        localized=_point(0.5, 0.3),  # effect 0.2
        nonlocalized=_point(0.2, 0.5),  # effect -0.3 → half the gap is -0.05
        items=[],
        n_blocks=4,
    )
    assert result.best_layer == 2  # effect 0.4
    assert result.first_recovering_layer == 2  # layer 1 has effect -0.1 < -0.05
    flat = PatchingResult(
        [0, 1], [_point(0.3, None)] * 2, _point(0.3, None), _point(0.4, None), [], 2
    )
    assert flat.best_layer == 0  # ties go to the earliest layer
    assert flat.first_recovering_layer is None  # localized is no better: no gap to recover
    assert "best layer: 0" in flat.summary()
    assert not math.isnan(flat.to_json()["curve"][0]["effect"])


def test_bad_inputs_are_refused() -> None:
    model, tokenizer = make_model("llama"), make_tokenizer()
    with pytest.raises(YapoError, match="at least two choices"):
        PatchPair("w4", "w5", (" w6",), 0)
    with pytest.raises(YapoError, match="out of range"):
        PatchPair("w4", "w5", (" w6", " w7"), 2)
    with pytest.raises(YapoError, match="same tokens"):
        patch_layers(model, tokenizer, [PatchPair("w4 w5", "w4 w6", (" w7", "w7"), 0)])
    with pytest.raises(YapoError, match="twice"):
        patch_last_token(
            model, tokenizer, [SOURCE], [TARGET], [ONE_TOKEN], [ONE_TOKEN], [1, 1 - LAYERS]
        )
    with pytest.raises(YapoError, match="out of range"):
        patch_layers(model, tokenizer, _pairs(), layers=[LAYERS])


def _mcq_file(path: Path) -> Path:
    rows = []
    for i in range(6):
        rows.append(
            {
                "id": f"q{i}",
                "question_id": f"q{i}",
                "language": "en",
                "country": "Egypt" if i % 2 else "Spain",
                "localized": f"w{10 + i} w{20 + i} w{30 + i} ?",
                "nonlocalized": f"w{10 + i} w{20 + i} ?",
                "options": [f"w{40 + i}", f"w{50 + i} w{60 + i}", f"w{70 + i}"],
                "answer": i % 3,
                "option_countries": ["Egypt", "Spain", "Western"],
            }
        )
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("choices", ["text", "letter"])
def test_cli_patch_writes_curve_and_prints_the_best_layer(tmp_path: Path, choices: str) -> None:
    from tests.test_analysis_support import save_letter_model
    from typer.testing import CliRunner

    from yapo.cli.main import app

    folder = save_letter_model(tmp_path / "model", arch="gemma3")
    data = _mcq_file(tmp_path / "mcq.jsonl")
    args = ["patch", "--model", str(folder), "--data", str(data), "--out", str(tmp_path / "out")]
    args += [
        "--limit",
        "4",
        "--countries",
        "Egypt,Spain",
        "--choices",
        choices,
        "--layers",
        "0,2,3",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "best layer:" in result.output
    saved = json.loads((tmp_path / "out" / "patching.json").read_text())
    assert saved["layers"] == [0, 2, 3] and saved["n_items"] == 4
    assert saved["metadata"]["choices"] == choices
    assert all(item["localized"]["western"] is not None for item in saved["items"])
    assert (tmp_path / "out" / "patching.png").is_file()
    bad = CliRunner().invoke(app, [*args[:-2], "--layers", "9"])
    assert bad.exit_code != 0
