"""llama.cpp control vectors: GGUF layout, the block-index mapping, import, linearization."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from tests.conftest import HIDDEN, LAYERS, make_model, make_sae, make_tokenizer
from torch import Tensor, nn
from typer.testing import CliRunner

from yapo import DenseVector, SparseVector, YapoError, load_vector
from yapo.cli.main import app
from yapo.export import (
    export_llamacpp,
    import_llamacpp,
    layer_states,
    linearize,
    llamacpp_buffer,
    read_control_vector,
)
from yapo.models.layers import decoder_blocks
from yapo.vectors import sparse_delta_reference


def _fields(path: Path) -> dict[str, object]:
    reader = gguf.GGUFReader(str(path))
    return {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}


def _llamacpp_logits(model: nn.Module, path: Path, ids: Tensor) -> Tensor:
    """An independent oracle of llama.cpp's semantics, written from its source.

    ``common_control_vector_load_one`` puts ``direction.k`` at ``buffer[n*(k-1):n*k]``;
    ``llama_adapter_cvec::apply`` gives graph layer ``il >= 1`` the slice at ``n*(il-1)``;
    ``build_cvec(cur, il)`` adds it to block ``il``'s output. Here: plain forward hooks.
    """
    reader = gguf.GGUFReader(str(path))
    buffer: dict[int, np.ndarray] = {}
    for tensor in reader.tensors:
        k = int(tensor.name.split(".")[1])
        assert k >= 1
        buffer[k - 1] = np.array(tensor.data, dtype=np.float32)  # offset n*(k-1)
    handles = []
    for il, block in enumerate(decoder_blocks(model)):
        if il >= 1 and (il - 1) in buffer:
            add = torch.from_numpy(buffer[il - 1])

            def hook(_m: nn.Module, _a: object, out: object, add: Tensor = add) -> object:
                if isinstance(out, tuple):
                    return (out[0] + add, *out[1:])
                return out + add  # type: ignore[operator]

            handles.append(block.register_forward_hook(hook))
    try:
        with torch.no_grad():
            return model(ids).logits  # type: ignore[no-any-return]
    finally:
        for handle in handles:
            handle.remove()


def test_dense_export_layout_and_identical_import(tmp_path: Path) -> None:
    model = make_model("llama")
    vector = DenseVector.create(torch.randn(HIDDEN), model, 2, method="bipo")
    report = export_llamacpp(vector, tmp_path / "v.gguf")
    assert report.index == 2
    reader = gguf.GGUFReader(str(tmp_path / "v.gguf"))
    assert [t.name for t in reader.tensors] == ["direction.2"]
    (tensor,) = reader.tensors
    assert tensor.tensor_type == gguf.GGMLQuantizationType.F32
    assert [int(s) for s in tensor.shape] == [HIDDEN]
    np.testing.assert_array_equal(np.asarray(tensor.data), vector.vector.numpy())
    fields = _fields(tmp_path / "v.gguf")
    assert fields["general.architecture"] == "controlvector"
    assert fields["controlvector.model_hint"] == "llama"
    assert fields["controlvector.layer_count"] == 1
    assert fields["yapo.multiplier"] == 1.0
    back = import_llamacpp(tmp_path / "v.gguf")
    assert torch.equal(back.vector, vector.vector)
    assert back.meta.to_json() == vector.meta.to_json()


def test_multiplier_and_direction_are_baked_in(tmp_path: Path) -> None:
    model = make_model("llama")
    vector = DenseVector.create(torch.randn(HIDDEN), model, 1, method="caa")
    export_llamacpp(vector, tmp_path / "v.gguf", multiplier=2.5, direction=-1)
    back = import_llamacpp(tmp_path / "v.gguf")
    torch.testing.assert_close(back.vector, -2.5 * vector.vector)
    assert back.meta.hyperparameters["llamacpp_scale"] == -2.5
    assert back.layer == 1 and back.meta.method == "caa"


@pytest.mark.parametrize("layer", [1, 2, LAYERS - 1])
def test_layer_mapping_matches_llamacpp_semantics(tmp_path: Path, layer: int) -> None:
    model = make_model("llama")
    vector = DenseVector.create(torch.randn(HIDDEN) * 3, model, layer, method="bipo")
    export_llamacpp(vector, tmp_path / "v.gguf", multiplier=1.5)
    ids = torch.tensor([[1, 5, 9, 14, 20, 33]])
    with vector.apply(model, multiplier=1.5), torch.no_grad():
        steered = model(ids).logits
    with torch.no_grad():
        plain = model(ids).logits
    emulated = _llamacpp_logits(model, tmp_path / "v.gguf", ids)
    torch.testing.assert_close(emulated, steered, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(steered, plain, atol=1e-3)
    cvec = read_control_vector(tmp_path / "v.gguf")
    buffer = llamacpp_buffer(cvec, LAYERS)
    assert buffer.size == HIDDEN * (LAYERS - 1)
    np.testing.assert_allclose(
        buffer[HIDDEN * (layer - 1) : HIDDEN * layer], 1.5 * vector.vector.numpy(), rtol=1e-6
    )
    # The tempting off-by-one (direction.k after block k-1) would steer another block.
    shifted = DenseVector.create(vector.vector, model, layer - 1, method="bipo")
    with shifted.apply(model, multiplier=1.5), torch.no_grad():
        wrong = model(ids).logits
    assert not torch.allclose(wrong, emulated, atol=1e-3)


def test_layer_zero_is_refused(tmp_path: Path) -> None:
    vector = DenseVector.create(torch.randn(HIDDEN), make_model("llama"), 0, method="bipo")
    with pytest.raises(YapoError, match="layer 0"):
        export_llamacpp(vector, tmp_path / "v.gguf")
    assert not (tmp_path / "v.gguf").exists()


def _repeng_style(path: Path, directions: dict[int, np.ndarray]) -> None:
    """What repeng's ``ControlVector.export_gguf`` writes (its layout, written here)."""
    writer = gguf.GGUFWriter(str(path), "controlvector")
    writer.add_string("controlvector.model_hint", "llama")
    writer.add_uint32("controlvector.layer_count", len(directions))
    for layer, values in directions.items():
        writer.add_tensor(f"direction.{layer}", values)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_import_repeng_file_needs_a_layer_choice(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    directions = {k: rng.standard_normal(HIDDEN).astype(np.float32) for k in (1, 2, 3)}
    _repeng_style(tmp_path / "r.gguf", directions)
    with pytest.raises(YapoError, match=r"\[1, 2, 3\]"):
        import_llamacpp(tmp_path / "r.gguf")
    vector = import_llamacpp(tmp_path / "r.gguf", layer=3)
    assert vector.layer == 3 and vector.meta.model == "llama"
    assert vector.meta.method == "control-vector" and vector.meta.d_model == HIDDEN
    np.testing.assert_array_equal(vector.vector.numpy(), directions[3])
    with pytest.raises(YapoError, match="no direction for layer 4"):
        import_llamacpp(tmp_path / "r.gguf", layer=4)
    vector.check_fits(make_model("llama"))  # usable on a model of that size


def test_import_refuses_model_files_and_bad_tensors(tmp_path: Path) -> None:
    writer = gguf.GGUFWriter(str(tmp_path / "m.gguf"), "llama")
    writer.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(YapoError, match="not a control vector"):
        import_llamacpp(tmp_path / "m.gguf")
    _repeng_style(tmp_path / "z.gguf", {0: np.ones(HIDDEN, dtype=np.float32)})
    with pytest.raises(YapoError, match=r"direction\.0"):
        import_llamacpp(tmp_path / "z.gguf")
    with pytest.raises(YapoError, match="not found"):
        import_llamacpp(tmp_path / "missing.gguf")


def _sparse(values: Tensor, layer: int = 2) -> SparseVector:
    return SparseVector.create(values, make_model("llama"), layer, make_sae(), method="yapo")


def test_sparse_with_negative_entries_is_refused_with_a_reason(tmp_path: Path) -> None:
    values = torch.zeros(96)
    values[[3, 10]] = torch.tensor([1.0, -0.5])
    with pytest.raises(YapoError, match="--linearize"):
        export_llamacpp(_sparse(values), tmp_path / "s.gguf")


def test_sparse_without_negative_entries_exports_exactly(tmp_path: Path) -> None:
    values = torch.zeros(96)
    values[[3, 10, 40]] = torch.tensor([1.0, 0.5, 2.0])
    vector = _sparse(values)
    report = export_llamacpp(vector, tmp_path / "s.gguf", multiplier=0.7)
    assert report.linearization is not None and report.linearization["method"] == "exact"
    model = make_model("llama")
    ids = torch.tensor([[1, 7, 8, 9, 30]])
    with vector.apply(model, multiplier=0.7), torch.no_grad():
        steered = model(ids).logits
    torch.testing.assert_close(
        _llamacpp_logits(model, tmp_path / "s.gguf", ids), steered, rtol=1e-5, atol=1e-5
    )
    back = import_llamacpp(tmp_path / "s.gguf")
    assert back.meta.method == "yapo-linearized" and back.meta.d_sae is None
    assert back.meta.hyperparameters["sae_reference"] == vector.meta.sae_reference


def test_linearization_error_is_measured_and_stored(tmp_path: Path) -> None:
    torch.manual_seed(0)
    vector = _sparse(torch.randn(96))
    model, tokenizer = make_model("llama"), make_tokenizer()
    texts = ["w1 w2 w3 w4 w5 w6", "w10 w20 w30 w40", "w7 w8 w9 w11 w12"]
    hidden = layer_states(model, tokenizer, texts, vector.layer)
    assert hidden.shape == (6 + 4 + 5 + 3, HIDDEN)  # tokens + one BOS per text
    mean = linearize(vector, hidden, multiplier=2.0, direction=-1)
    positive = linearize(vector, hidden, multiplier=2.0, direction=-1, method="positive")
    u = vector.scaled(2.0, -1)
    exact = sparse_delta_reference(vector.sae, hidden, u)
    expected = ((exact - exact.mean(0)).pow(2).sum() / exact.pow(2).sum()).sqrt().detach()
    assert mean.relative_error == pytest.approx(float(expected), rel=1e-4)
    naive = torch.relu(u) @ vector.sae.W_dec
    torch.testing.assert_close(positive.dense, naive)
    assert mean.positive_part_error == pytest.approx(positive.relative_error, rel=1e-6)
    assert 0 < mean.relative_error < positive.relative_error  # least squares wins
    export_llamacpp(vector, tmp_path / "s.gguf", multiplier=2.0, direction=-1, linearization=mean)
    fields = _fields(tmp_path / "s.gguf")
    assert fields["yapo.linearization"] == "mean"
    assert fields["yapo.linearization.relative_error"] == pytest.approx(mean.relative_error)
    assert json.loads(str(fields["yapo.linearization.summary"]))["positions"] == 18
    with pytest.raises(YapoError, match="made at"):
        export_llamacpp(vector, tmp_path / "t.gguf", multiplier=1.0, linearization=mean)


def test_cli_export_import_and_linearize(tmp_path: Path, saved_model_dir: Path) -> None:
    runner = CliRunner()
    model = make_model("llama")
    dense = DenseVector.create(torch.randn(HIDDEN), model, 2, method="bipo")
    dense.save(tmp_path / "dense")
    result = runner.invoke(
        app, ["export", str(tmp_path / "dense"), "--format", "llama.cpp", "--out",
              str(tmp_path / "d.gguf"), "--multiplier", "3"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "direction.2" in result.output
    result = runner.invoke(app, ["import", str(tmp_path / "d.gguf"), "--out", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    back = load_vector(tmp_path / "b")
    torch.testing.assert_close(back.vector, 3 * dense.vector)
    bad = runner.invoke(
        app, ["export", str(tmp_path / "dense"), "--format", "onnx", "--out", "x.gguf"]
    )
    assert bad.exit_code != 0

    sae = make_sae()
    sae.save(tmp_path / "sae")
    torch.manual_seed(1)
    sparse = SparseVector.create(torch.randn(96), model, 2, sae, method="yapo")
    sparse.save(tmp_path / "sparse")
    common = ["export", str(tmp_path / "sparse"), "--sae", str(tmp_path / "sae"), "--out",
              str(tmp_path / "s.gguf")]  # fmt: skip
    refused = runner.invoke(app, common)
    assert refused.exit_code != 0 and "--linearize" in str(refused.exception or refused.output)
    result = runner.invoke(
        app, [*common, "--linearize", "--model", str(saved_model_dir), "--text", "w1 w2 w3",
              "--text", "w4 w5 w6 w7", "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["linearization"]["positions"] == 9
    assert 0 < report["linearization"]["relative_error"] < 1
