"""MCQ log-likelihood scoring speed: the prompt run once (prefix cache) vs whole rows.

Scores the first ``--items`` cultural MCQs of ``--data`` (both forms, option texts, as
``yapo eval`` does) on the embedded model, alternating the two paths ``--repeats`` times
so that load changes on a shared machine hit both alike, and checks that both give the
same scores. Writes JSON to ``--out``.

    python benchmarks/bench_scoring.py --data demo --items 60 --out benchmarks/results/scoring.json
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch

from yapo import load_model
from yapo._io import write_json
from yapo.cli.evaluate import load_mcq_data
from yapo.data.prompts import format_prompt
from yapo.data.records import SETTINGS
from yapo.evaluate.mcq import McqConfig, mcq_choices, mcq_text
from yapo.evaluate.scoring import score_choices_with_stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="demo")
    parser.add_argument("--items", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    items, _ = load_mcq_data(args.data, strict=True)
    items = items[: args.items]
    model, tokenizer = load_model("default")
    config = McqConfig()
    jobs = [(item, setting) for item in items for setting in SETTINGS]
    prompts = [
        format_prompt(tokenizer, mcq_text(item, setting, config.mode), chat=config.chat)
        for item, setting in jobs
    ]
    choices = [mcq_choices(item, config.choices) for item, _ in jobs]
    best: dict[str, dict[str, float]] = {}
    scores: dict[str, list[list[float]]] = {}
    for _ in range(args.repeats):
        for name, cached in (("prefix cache", True), ("whole rows", False)):
            start = time.perf_counter()
            scores[name], stats = score_choices_with_stats(
                model, tokenizer, prompts, choices, batch_size=args.batch_size, prefix_cache=cached
            )
            seconds = time.perf_counter() - start
            rate = stats.sequences / seconds
            if rate > best.get(name, {}).get("rows_per_second", 0.0):
                best[name] = {
                    "rows_per_second": round(rate, 2),
                    "seconds": round(seconds, 2),
                    "tokens_run": stats.tokens,
                    "forward_passes": stats.forward_passes,
                }
    difference = max(
        abs(a - b)
        for row_a, row_b in zip(scores["prefix cache"], scores["whole rows"])
        for a, b in zip(row_a, row_b)
    )
    result = {
        "command": "python benchmarks/bench_scoring.py "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()),
        "machine": {"platform": platform.platform(), "threads": args.threads},
        "rows": sum(len(c) for c in choices),
        "prompts": len(prompts),
        "cases": best,
        "speed_up": round(
            best["prefix cache"]["rows_per_second"] / best["whole rows"]["rows_per_second"], 2
        ),
        "largest_score_difference": difference,
    }
    write_json(args.out, result)
    print(result)


if __name__ == "__main__":
    main()
