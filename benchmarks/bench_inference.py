"""Inference overhead of steering: tokens/s of ``generate`` on the embedded model.

Compares no steering, a dense vector, a sparse vector through a random 16k-latent
JumpReLU SAE with the fast exact form, and the same with the straightforward Eq. 3
(full SAE encode + two decodes per token). Writes JSON to --out.

    python benchmarks/bench_inference.py --out benchmarks/results/inference.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from yapo import DenseVector, SparseVector, load_model
from yapo._io import write_json
from yapo.models.layers import hidden_size
from yapo.sae import SAE

PROMPTS = [
    "The most popular breakfast in Mexico is",
    "On a national holiday in Egypt, families usually",
    "A traditional greeting in Spain between friends is",
    "In Morocco, guests are often welcomed with",
]


def random_sae(d_in: int, d_sae: int, seed: int = 0) -> SAE:
    g = torch.Generator().manual_seed(seed)
    return SAE(
        torch.randn(d_in, d_sae, generator=g) / d_in**0.5,
        torch.randn(d_sae, generator=g) * 0.1,
        torch.randn(d_sae, d_in, generator=g) / d_sae**0.5,
        torch.zeros(d_in),
        activation="jumprelu",
        threshold=torch.rand(d_sae, generator=g) * 0.5,
        reference=f"random-{d_sae}",
    )


def _generate_fixed_length(model, batch, vector, new_tokens: int) -> None:  # type: ignore[no-untyped-def]
    """Exactly ``new_tokens`` tokens per row (steering may change when EOS would come)."""
    steering = vector.apply(model, multiplier=4.0) if vector is not None else nullcontext()
    with steering, torch.no_grad():
        model.generate(
            **batch, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False
        )


def time_cases(model, tokenizer, cases, new_tokens: int, repeats: int) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """Best tokens/s per case; cases are interleaved so that load changes hit all alike."""
    tokenizer.padding_side = "left"
    batch = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    for vector in cases.values():
        _generate_fixed_length(model, batch, vector, 2)  # warm-up
    best = dict.fromkeys(cases, float("inf"))
    for _ in range(repeats):
        for name, vector in cases.items():
            start = time.perf_counter()
            _generate_fixed_length(model, batch, vector, new_tokens)
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: len(PROMPTS) * new_tokens / seconds for name, seconds in best.items()}


def time_forward(model, tokenizer, cases, repeats: int) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """Median tokens/s of one steered forward pass over the padded prompt batch, interleaved."""
    tokenizer.padding_side = "left"
    batch = tokenizer(PROMPTS * 4, return_tensors="pt", padding=True)
    tokens = int(batch["attention_mask"].sum())
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, vector in cases.items():
            steering = vector.apply(model, multiplier=4.0) if vector is not None else nullcontext()
            with steering, torch.no_grad():
                start = time.perf_counter()
                model(**batch)
                samples[name].append(time.perf_counter() - start)
    return {name: tokens / sorted(times)[len(times) // 2] for name, times in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="default")
    parser.add_argument("--layer", type=int, default=10)
    parser.add_argument("--d-sae", type=int, default=16384)
    parser.add_argument("--nonzero", type=int, default=256, help="non-zeros of the sparse vector")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/inference.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model, tokenizer = load_model(args.model)
    d_model = hidden_size(model)
    sae = random_sae(d_model, args.d_sae)
    sae.requires_grad_(False)
    g = torch.Generator().manual_seed(1)
    raw = torch.zeros(args.d_sae)
    chosen = torch.randperm(args.d_sae, generator=g)[: args.nonzero]
    raw[chosen] = torch.randn(args.nonzero, generator=g)  # mixed signs: both fast-form terms
    sparse = SparseVector.create(raw, model, args.layer, sae, method="random")
    dense = DenseVector.create(torch.randn(d_model, generator=g), model, args.layer)
    cases = {
        "unsteered": None,
        "dense": dense,
        "sparse_fast": sparse,
        "sparse_straightforward": sparse.with_form("reference"),
    }
    forward = time_forward(model, tokenizer, cases, max(5, args.repeats))
    results = time_cases(model, tokenizer, cases, args.new_tokens, args.repeats)
    base = results["unsteered"]
    report = {
        "model": args.model,
        "layer": args.layer,
        "d_sae": args.d_sae,
        "vector_nonzero": args.nonzero,
        "batch": len(PROMPTS),
        "new_tokens": args.new_tokens,
        "threads": args.threads,
        "machine": platform.processor() or platform.machine(),
        "tokens_per_second": results,
        "slowdown_vs_unsteered": {k: base / v for k, v in results.items()},
        "sparse_fast_speedup_over_straightforward": results["sparse_fast"]
        / results["sparse_straightforward"],
        "forward_tokens_per_second": forward,
        "forward_slowdown_vs_unsteered": {k: forward["unsteered"] / v for k, v in forward.items()},
    }
    write_json(args.out, report)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
