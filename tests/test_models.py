"""Model names resolve the way users expect; layers are found and checked."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tests.conftest import ARCHITECTURES, LAYERS, make_model

from yapo import YapoError, decoder_blocks, load_model, resolve_layer
from yapo.models.fingerprint import model_fingerprint
from yapo.models.layers import hidden_size
from yapo.models.loading import parse_dtype, resolve_model_source


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_decoder_blocks_are_found(arch: str) -> None:
    model = make_model(arch)
    blocks = decoder_blocks(model)
    assert len(blocks) == LAYERS
    assert model_fingerprint(model)["num_layers"] == LAYERS
    # layer L is hidden_states[L + 1]: a hook on block L sees exactly that tensor
    seen: list[torch.Tensor] = []
    handle = blocks[2].register_forward_hook(
        lambda _m, _a, out: seen.append(out[0] if isinstance(out, tuple) else out)
    )
    ids = torch.randint(3, 100, (1, 4))
    with torch.no_grad():
        states = model(ids, output_hidden_states=True).hidden_states
    handle.remove()
    assert torch.equal(seen[0], states[3])


def test_resolve_layer() -> None:
    model = make_model("llama")
    assert resolve_layer(model, 0) == 0
    assert resolve_layer(model, -1) == LAYERS - 1
    assert resolve_layer(model, -LAYERS) == 0
    for bad in (LAYERS, -LAYERS - 1):
        with pytest.raises(YapoError, match=r"valid layers are 0\.\.3 \(or -4\.\.-1"):
            resolve_layer(model, bad)


def test_load_local_folder(saved_model_dir: Path) -> None:
    model, tokenizer = load_model(str(saved_model_dir), dtype="bf16")
    assert model.dtype == torch.bfloat16 and not model.training
    assert all(not p.requires_grad for p in model.parameters())
    assert tokenizer.pad_token is not None
    assert model.name_or_path == str(saved_model_dir)
    assert hidden_size(model) == 32


def test_bad_model_names(tmp_path: Path) -> None:
    with pytest.raises(YapoError, match="model path not found"):
        resolve_model_source(str(tmp_path / "missing"))
    with pytest.raises(YapoError, match="no config.json"):
        resolve_model_source(str(tmp_path))
    with pytest.raises(YapoError, match="GGUF file not found"):
        resolve_model_source(str(tmp_path / "model.gguf"))
    with pytest.raises(YapoError, match="unknown dtype"):
        parse_dtype("float8")
    assert resolve_model_source("google/gemma-2-2b") == "google/gemma-2-2b"  # a Hub id


def _yapo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "yapo.cli.main", *args], capture_output=True, text=True, timeout=300
    )


def test_cli_generate_and_errors(saved_model_dir: Path, tmp_path: Path) -> None:
    from yapo import DenseVector

    model, _ = load_model(str(saved_model_dir))
    DenseVector.create(torch.randn(32) * 4, model, 1).save(tmp_path / "vec")
    plain = _yapo(
        "generate", "--model", str(saved_model_dir), "--max-new-tokens", "4", "--json", "w1 w2 w3"
    )
    assert plain.returncode == 0, plain.stderr
    steered = _yapo(
        "generate",
        "--model",
        str(saved_model_dir),
        "--vector",
        str(tmp_path / "vec"),
        "--multiplier",
        "8",
        "--max-new-tokens",
        "4",
        "--json",
        "w1 w2 w3",
    )
    assert steered.returncode == 0, steered.stderr
    assert plain.stdout != steered.stdout
    bad = _yapo("generate", "--model", str(tmp_path / "nope"), "hi")
    assert bad.returncode == 2 and "model path not found" in bad.stderr
    assert "Traceback" not in bad.stderr
