"""The lm-eval ``yapo`` model type scores exactly like a direct steered forward."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tests.conftest import HIDDEN, make_model, make_sae, make_tokenizer

from yapo import DenseVector, SparseVector, load_model, load_sae

pytest.importorskip("lm_eval")

from lm_eval.api.instance import Instance
from lm_eval.api.registry import get_model

from yapo.integrations.lm_eval import MODEL_NAME, register

REQUESTS = [("w5 w6 w7", " w8 w9"), ("w10", " w11"), ("w12 w13 w14 w15 w16", " w17")]


def _direct(model: torch.nn.Module, tokenizer: object, context: str, continuation: str) -> float:
    ids = tokenizer(context + continuation, return_tensors="pt")["input_ids"]  # type: ignore[operator]
    n = len(continuation.split())
    with torch.no_grad():
        log_probs = torch.log_softmax(model(ids).logits[0].float(), -1)
    targets = ids[0, -n:]
    return float(log_probs[-n - 1 : -1].gather(-1, targets.unsqueeze(-1)).sum())


def _instances() -> list[Instance]:
    return [
        Instance(request_type="loglikelihood", doc={}, arguments=pair, idx=0) for pair in REQUESTS
    ]


@pytest.fixture
def saved(tmp_path: Path) -> dict[str, Path]:
    folder = tmp_path / "model"
    make_model("llama").save_pretrained(folder)
    make_tokenizer().save_pretrained(folder)
    model, _ = load_model(str(folder))
    dense = DenseVector.create(
        torch.randn(HIDDEN, generator=torch.Generator().manual_seed(0)) * 3, model, 1, method="bipo"
    )
    dense.save(tmp_path / "dense")
    make_sae("relu").save(tmp_path / "sae")
    sae = load_sae(tmp_path / "sae")
    codes = torch.zeros(sae.d_sae)
    codes[[3, 30, 60]] = torch.tensor([2.0, -1.0, 1.5])
    SparseVector.create(codes, model, 2, sae, method="yapo").save(tmp_path / "sparse")
    return {"model": folder, "dense": tmp_path / "dense", "sparse": tmp_path / "sparse"}


@pytest.mark.parametrize("kind", ["dense", "sparse"])
def test_lm_eval_loglikelihoods_equal_a_direct_steered_forward(
    saved: dict[str, Path], kind: str
) -> None:
    register()
    cls = get_model(MODEL_NAME)
    lm = cls.create_from_arg_string(
        f"pretrained={saved['model']},vector={saved[kind]},multiplier=3,device=cpu,batch_size=2"
    )
    steered = [value for value, _ in lm.loglikelihood(_instances())]
    model, tokenizer = load_model(str(saved["model"]))
    from yapo import load_vector

    vector = load_vector(saved[kind])
    with vector.apply(model, multiplier=3.0):
        expected = [_direct(model, tokenizer, c, x) for c, x in REQUESTS]
    plain = [_direct(model, tokenizer, c, x) for c, x in REQUESTS]
    assert steered == pytest.approx(expected, abs=1e-4)
    assert steered != pytest.approx(plain, abs=1e-2)  # steering really was on
    lm.multiplier = 0.0
    assert [v for v, _ in lm.loglikelihood(_instances())] == pytest.approx(plain, abs=1e-4)
    # the hooks are gone after each call: the model is unsteered outside lm-eval's forwards
    assert [_direct(lm.model, tokenizer, c, x) for c, x in REQUESTS] == pytest.approx(
        plain, abs=1e-5
    )


def test_register_is_idempotent_and_keeps_lm_evals_own_models() -> None:
    assert register() is register()
    assert get_model("hf") is not None


TASK_YAML = """task: yapo_tiny_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: answer
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""


def test_evaluate_steering_runs_a_local_task_and_reports_the_delta(
    saved: dict[str, Path], tmp_path: Path
) -> None:
    import json

    from lm_eval.tasks import TaskManager

    from yapo.integrations.lm_eval import evaluate_steering

    rows = [
        {
            "question": f"w{10 + i} w{20 + i}",
            "choices": [f" w{30 + i}", f" w{40 + i}"],
            "answer": i % 2,
        }
        for i in range(6)
    ]
    data = tmp_path / "tiny.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "tiny.yaml").write_text(TASK_YAML.format(data=data))
    result = evaluate_steering(
        ["yapo_tiny_mc"],
        str(saved["model"]),
        vector=str(saved["dense"]),
        multiplier=3.0,
        device="cpu",
        task_manager=TaskManager(include_path=str(tasks)),
    )
    # the oracle: pick the likelier choice by direct forwards, unsteered and steered
    model, tokenizer = load_model(str(saved["model"]))
    from yapo import load_vector

    vector = load_vector(saved["dense"])

    def accuracy() -> float:
        right = 0
        for row in rows:
            scores = [_direct(model, tokenizer, row["question"], c) for c in row["choices"]]
            right += int(max(range(2), key=scores.__getitem__) == row["answer"])
        return right / len(rows)

    plain = accuracy()
    with vector.apply(model, multiplier=3.0):
        steered = accuracy()
    assert result["unsteered"]["yapo_tiny_mc"]["acc,none"] == pytest.approx(plain)
    assert result["steered"]["yapo_tiny_mc"]["acc,none"] == pytest.approx(steered)
    assert result["delta"]["yapo_tiny_mc"]["acc,none"] == pytest.approx(steered - plain)
