"""Scoring a λ sweep: blocks 0..L shared by every condition vs the whole model per condition.

Builds ``--vectors`` steering vectors at the embedded SAE's layer on the embedded model
(random dense directions and random sparse SAE-latent vectors, scaled like real ones;
speed does not depend on what they learned), and scores the first ``--items`` MCQs of
``--data`` (both forms, option texts, as ``yapo sweep`` does) under every vector × λ of
``--multipliers``. The shared path scores all conditions; the current path (the
oracle) scores the first ``--current`` of them, since its cost per condition does not
depend on how many there are. Both rates are rows (option rows × conditions) per second,
measured in this one process with the two paths alternating over chunks of items
(wall and CPU time), and the conditions both scored are compared (largest
log-likelihood difference, predictions). Writes JSON to ``--out``.

    yapo data convert-blend --blend-dir /work/shared/data/blend \\
        --countries Spain,Mexico,Algeria --out /tmp/blend.jsonl
    python benchmarks/bench_conditions.py --data /tmp/blend.jsonl \\
        --out benchmarks/results/conditions.json
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path
from typing import Any

import torch

from yapo import DenseVector, SparseVector, load_model, load_sae
from yapo._io import write_json
from yapo.cli.evaluate import load_mcq_data
from yapo.evaluate.conditions import Steer
from yapo.evaluate.mcq import McqConfig, McqRun, run_mcq_conditions
from yapo.models.layers import hidden_size


def _vectors(
    model: torch.nn.Module, tokenizer: Any, text: str, count: int, seed: int
) -> list[DenseVector | SparseVector]:
    """Half dense, half sparse (latents of the embedded SAE, both signs), at its layer,
    sized from the layer's real states on ``text`` so that λ of a few moves answers."""
    sae = load_sae("default")
    layer = int(sae.metadata.get("hook_layer", 14))
    with torch.no_grad():
        ids = tokenizer(text, return_tensors="pt")["input_ids"]
        states = model(ids, output_hidden_states=True).hidden_states[layer + 1][0].float()
        codes = sae.encode(states)
    norm = float(states.norm(dim=-1).median())
    code_size = float(codes[codes > 0].mean())
    g = torch.Generator().manual_seed(seed)
    vectors: list[DenseVector | SparseVector] = []
    for i in range(count):
        if i % 2 == 0:
            direction = torch.randn(hidden_size(model), generator=g)
            vector = direction / direction.norm() * 0.1 * norm
            vectors.append(DenseVector.create(vector, model, layer, method="bipo"))
        else:
            code = torch.zeros(sae.d_sae)
            chosen = torch.randperm(sae.d_sae, generator=g)[:32]
            code[chosen] = torch.randn(32, generator=g) * code_size
            vectors.append(SparseVector.create(code, model, layer, sae, method="yapo"))
    return vectors


def _rate(runs: list[McqRun], seconds: float) -> float:
    rows = sum(len(p.scores or []) for run in runs for p in run.predictions)
    return rows / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="demo")
    parser.add_argument("--items", type=int, default=60)
    parser.add_argument("--vectors", type=int, default=5)
    parser.add_argument("--multipliers", default="0.5,1,2,3,4")
    parser.add_argument("--current", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chunk", type=int, default=15, help="Items per alternation.")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    items, _ = load_mcq_data(args.data, strict=True)
    items = items[: args.items]
    model, tokenizer = load_model("default")
    grid = [float(m) for m in args.multipliers.split(",")]
    vectors = _vectors(model, tokenizer, items[0].localized, args.vectors, args.seed)
    conditions = [Steer(v, m, 1) for v in vectors for m in grid]
    # The current path's subset: every vector, spread over the λ grid.
    subset = [conditions[i * len(grid) + i % len(grid)] for i in range(len(vectors))]
    subset = (subset + [c for c in conditions if c not in subset])[: args.current]

    warm = McqConfig(batch_size=args.batch_size)
    oracle = McqConfig(batch_size=args.batch_size, shared_lower=False)
    run_mcq_conditions(model, tokenizer, items[:2], conditions[:2], warm)  # one-off check
    # Alternate the two paths over chunks of items, so that load changes on a shared
    # machine hit both alike; wall and CPU (process) time are both recorded.
    clock = {"shared": [0.0, 0.0], "current": [0.0, 0.0]}
    shared: list[McqRun] = []
    current: list[McqRun] = []
    for first in range(0, len(items), args.chunk):
        chunk = items[first : first + args.chunk]
        for name, wanted, config, runs in (
            ("shared", conditions, warm, shared),
            ("current", subset, oracle, current),
        ):
            wall, cpu = time.perf_counter(), time.process_time()
            part = run_mcq_conditions(model, tokenizer, chunk, wanted, config)
            clock[name][0] += time.perf_counter() - wall
            clock[name][1] += time.process_time() - cpu
            if not runs:
                runs.extend(part)
            else:
                for run, more in zip(runs, part):
                    run.predictions.extend(more.predictions)
    shared_seconds, shared_cpu = clock["shared"]
    current_seconds, current_cpu = clock["current"]

    by_condition = dict(zip([id(c) for c in conditions], shared))
    difference = 0.0
    same_predictions = True
    for condition, slow in zip(subset, current):
        fast = by_condition[id(condition)]
        for a, b in zip(fast.predictions, slow.predictions):
            same_predictions &= a.prediction == b.prediction
            assert a.scores is not None and b.scores is not None
            difference = max(difference, max(abs(x - y) for x, y in zip(a.scores, b.scores)))
    shared_rate = _rate(shared, shared_seconds)
    current_rate = _rate(current, current_seconds)
    shared_cpu_rate = _rate(shared, shared_cpu)
    current_cpu_rate = _rate(current, current_cpu)
    result = {
        "command": "python benchmarks/bench_conditions.py "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()),
        "machine": {"platform": platform.platform(), "threads": args.threads},
        "model": "default (Gemma 3 270M, float32)",
        "layer": vectors[0].layer,
        "items": len(items),
        "rows_per_condition": sum(len(p.scores or []) for p in shared[0].predictions),
        "conditions": {"shared": len(conditions), "current": len(subset)},
        "shared": {
            "seconds": round(shared_seconds, 2),
            "rows_per_second": round(shared_rate, 2),
            "cpu_seconds": round(shared_cpu, 2),
            "rows_per_cpu_second": round(shared_cpu_rate, 2),
        },
        "current": {
            "seconds": round(current_seconds, 2),
            "rows_per_second": round(current_rate, 2),
            "cpu_seconds": round(current_cpu, 2),
            "rows_per_cpu_second": round(current_cpu_rate, 2),
        },
        "speed_up": round(shared_rate / current_rate, 2),
        "speed_up_cpu": round(shared_cpu_rate / current_cpu_rate, 2),
        "largest_score_difference": difference,
        "same_predictions": same_predictions,
    }
    write_json(args.out, result)
    print(result)


if __name__ == "__main__":
    main()
