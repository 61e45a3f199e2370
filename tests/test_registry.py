"""The method registry: every method it declares trains through ``train()``, as declared."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tests.conftest import make_model, make_sae, make_tokenizer
from tests.methods_support import tiny_pairs

from yapo.errors import YapoError
from yapo.methods import train
from yapo.methods.registry import (
    DEFAULT_METHODS,
    METHODS,
    REGISTRY,
    check_methods,
    method_spec,
    parse_methods,
)
from yapo.vectors.dense import DenseVector
from yapo.vectors.sparse import SparseVector

FAST = {"epochs": 1, "batch_size": 4, "warmup_steps": 0, "lr_scale": 1.0}


@pytest.mark.parametrize("name", METHODS)
def test_every_registered_method_trains_as_its_spec_says(name: str, tmp_path: Path) -> None:
    spec = method_spec(name)
    settings = FAST if spec.optimized else {}
    result = train(
        name,
        data=tiny_pairs(8),
        model=make_model("llama"),
        tokenizer=make_tokenizer(),
        layer=1,
        sae=make_sae() if spec.needs_sae else None,
        out=tmp_path / name,
        progress=False,
        **settings,
    )
    expected = SparseVector if spec.kind == "sparse" else DenseVector
    assert isinstance(result.vector, expected)
    assert result.vector.meta.method == spec.base
    assert torch.isfinite(result.vector.vector).all()
    config = json.loads((tmp_path / name / "config.json").read_text())
    assert config["finished"] is True and config["settings"]["method"] == spec.base
    if spec.optimized:
        assert result.steps == 2  # 8 pairs, 4 per step, one epoch
        assert config["settings"]["objective"] == (spec.objective or "bipo")
        assert "position" not in config["settings"]
    else:
        assert result.steps == 0 and "objective" not in config["settings"]


def test_unknown_methods_are_refused_naming_the_known_ones() -> None:
    with pytest.raises(YapoError, match=r"unknown method 'dpo'; use one of yapo, bipo, caa"):
        method_spec("dpo")
    with pytest.raises(YapoError, match=r"unknown method.*'dpo'.*choose from yapo, bipo"):
        parse_methods("yapo, dpo")
    with pytest.raises(YapoError, match="no methods"):
        check_methods(())
    with pytest.raises(YapoError, match="unknown method 'dpo'"):
        train("dpo", data=tiny_pairs(2), model=make_model("llama"), tokenizer=make_tokenizer())


def test_the_registry_declares_each_method_once() -> None:
    assert METHODS == ("yapo", "bipo", "caa", "sas", "yapo-reps", "bipo-reps")
    assert DEFAULT_METHODS == ("yapo", "bipo", "caa", "sas")
    assert {n for n, s in REGISTRY.items() if s.needs_sae} == {"yapo", "sas", "yapo-reps"}
    assert {n for n, s in REGISTRY.items() if s.optimized} == {
        "yapo",
        "bipo",
        "yapo-reps",
        "bipo-reps",
    }
    assert parse_methods(" YaPO,caa ") == ("yapo", "caa")


def test_a_reps_method_refuses_another_objective() -> None:
    with pytest.raises(YapoError, match="trains with the 'reps' objective"):
        train(
            "bipo-reps",
            data=tiny_pairs(4),
            model=make_model("llama"),
            tokenizer=make_tokenizer(),
            layer=1,
            objective="bipo",
        )
