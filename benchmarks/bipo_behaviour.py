"""A/B accuracy of trained vectors on one of BiPO's behaviour tasks, and their loss curves.

Reads BiPO's ``test_infer.csv`` (``question, A, B, matching``) from the path given (the
data is not shipped), lays each question out as a two-option MCQ with
:func:`yapo.data.prompts.format_mcq_prompt` (``(A) ...`` / ``(B) ...`` / ``Answer:``),
and counts how often the steered model gives the *matching* (behaviour) letter a higher
probability than the other letter (letter tokens as :func:`answer_token_ids` gives
them), at each multiplier λ. λ = 0 is the unsteered model.

Steering is applied at every position of the prompt, at the vector's layer. For speed,
blocks ``0..L`` run once per question and only blocks ``L+1..N`` run per (vector, λ)
(the same maths as ``vector.apply``, which the script checks on the first batch).

``--likelihood`` adds a second measure on the same questions: how often the steered
model gives the matching answer *text* a higher log-probability (summed over its tokens,
EOS included, after the question alone) than the other answer's text.

It also summarises each run folder's ``metrics.jsonl``: steps until the training loss
(running mean over 8 steps) first falls below 0.1 and 0.3, and the last losses.

    python benchmarks/bipo_behaviour.py --test ../shared/data/bipo/power-seeking/test_infer.csv \\
        --runs runs/bipo runs/yapo runs/caa runs/sas --multipliers -1 0 1 --json ab.json
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path
from typing import Any

import torch


def read_ab(path: Path, limit: int | None) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle) if r.get("question", "").strip()]
    for row in rows:
        if row["matching"].strip() not in ("A", "B"):
            raise SystemExit(f"{path}: matching must be A or B, got {row['matching']!r}")
    return rows[:limit] if limit else rows


def loss_summary(run: Path) -> dict[str, Any]:
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x]
    losses = [r["loss"] for r in records if r.get("kind") == "train"]
    if not losses:
        return {}
    window = 8
    smooth = [
        sum(losses[max(0, i - window + 1) : i + 1]) / len(losses[max(0, i - window + 1) : i + 1])
        for i in range(len(losses))
    ]

    def first_below(level: float) -> int | None:
        return next((i + 1 for i, v in enumerate(smooth) if v < level), None)

    evals = [r for r in records if r.get("kind") == "eval"]
    last_train = [r for r in records if r.get("kind") == "train"][-1]
    return {
        "steps": len(losses),
        "steps_to_loss_below_0.1": first_below(0.1),
        "steps_to_loss_below_0.3": first_below(0.3),
        "loss_first_8": sum(losses[:8]) / min(8, len(losses)),
        "loss_last_8": sum(losses[-8:]) / min(8, len(losses)),
        "loss_every_10_steps": [round(v, 4) for v in smooth[9::10]],
        "eval": evals[-1] if evals else None,
        "final_vector_norm": last_train.get("vector_norm"),
    }


def likelihood_counts(
    split: Any,
    tokenizer: Any,
    rows: list[dict[str, str]],
    vectors: dict[str, Any],
    configs: list[tuple[str, float]],
    batch_size: int,
) -> dict[tuple[str, float], int]:
    """Per config: questions whose matching answer text is more likely than the other's."""
    from yapo.data.prompts import format_prompt
    from yapo.methods.batches import TokenizedPair, TokenizedSequence, collate
    from yapo.methods.logprobs import ResponseIndex, split_logprobs
    from yapo.methods.preference import preference_loss

    def seq(prompt: str, answer: str) -> TokenizedSequence:
        from yapo.data.prompts import tokenize_pair

        ids, mask = tokenize_pair(tokenizer, prompt, answer)
        return TokenizedSequence(torch.tensor(ids), torch.tensor(mask).bool())

    pairs = []
    for r in rows:
        prompt = format_prompt(tokenizer, r["question"])
        match = r["matching"].strip()
        other = "B" if match == "A" else "A"
        pairs.append(TokenizedPair(seq(prompt, r[match]), seq(prompt, r[other])))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    counts = {c: 0 for c in configs}
    started = time.perf_counter()
    for start in range(0, len(pairs), batch_size):
        ids = list(range(start, min(start + batch_size, len(pairs))))
        batch = collate([pairs[i] for i in ids], ids, pad)
        index = ResponseIndex.build(batch.input_ids, batch.response_mask)
        with torch.no_grad():
            states = split.lower(batch.input_ids, batch.attention_mask)
            for name, multiplier in configs:
                steered = states
                if name != "none":
                    steered = states + vectors[name].delta(states, multiplier=multiplier)
                logprobs = split_logprobs(split, steered, batch.attention_mask, index)
                margins = preference_loss(logprobs, torch.zeros_like(logprobs), 1, 1.0)[1]
                counts[(name, multiplier)] += int((margins > 0).sum())
        print(f"answer texts: {ids[-1] + 1}/{len(pairs)}, {time.perf_counter() - started:.0f} s")
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--test", required=True, type=Path, help="BiPO test_infer.csv")
    parser.add_argument("--runs", nargs="+", type=Path, required=True, help="run folders")
    parser.add_argument("--model", default="default")
    parser.add_argument("--sae", default=None, help="SAE for sparse vectors (default: saved ref)")
    parser.add_argument("--multipliers", nargs="+", type=float, default=[-1.0, 0.0, 1.0])
    parser.add_argument("--limit", type=int, default=None, help="first N questions only")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--likelihood", action="store_true", help="also answer-text accuracy")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from yapo.data.prompts import answer_token_ids, format_mcq_prompt, format_prompt
    from yapo.intervene import LayerSplit
    from yapo.models import load_model
    from yapo.sae import load_sae
    from yapo.vectors import load_vector

    model, tokenizer = load_model(args.model)
    sae = load_sae(args.sae) if args.sae else None
    vectors = {run.name: load_vector(run / "vector", sae=sae) for run in args.runs}
    layers = {v.layer for v in vectors.values()}
    if len(layers) != 1:
        raise SystemExit(f"all vectors must steer one layer, got {sorted(layers)}")
    split = LayerSplit(model, layers.pop())
    letters = answer_token_ids(tokenizer, 2)
    rows = read_ab(args.test, args.limit)
    prompts = [
        format_prompt(tokenizer, format_mcq_prompt(r["question"], [r["A"], r["B"]], "parens"))
        for r in rows
    ]
    configs = [("none", 0.0)] + [
        (name, m) for name in vectors for m in args.multipliers if m != 0.0
    ]
    correct = {c: 0 for c in configs}
    started = time.perf_counter()
    spot_check = None
    for start in range(0, len(rows), args.batch_size):
        chunk = prompts[start : start + args.batch_size]
        batch = tokenizer(chunk, return_tensors="pt", padding=True, padding_side="right")
        ids, attention = batch["input_ids"], batch["attention_mask"]
        last = attention.sum(dim=1) - 1
        matching = torch.tensor(
            [0 if r["matching"].strip() == "A" else 1 for r in rows[start : start + len(chunk)]]
        )
        with torch.no_grad():
            states = split.lower(ids, attention)
            for name, multiplier in configs:
                steered = states
                if name != "none":
                    steered = states + vectors[name].delta(states, multiplier=multiplier)
                hidden = split.upper(steered, attention)
                logits = split.logits(hidden[torch.arange(len(chunk)), last])[:, letters]
                picked = logits.argmax(dim=-1)
                correct[(name, multiplier)] += int((picked == matching).sum())
                if spot_check is None and name != "none":
                    with vectors[name].apply(model, multiplier=multiplier):
                        direct = model(input_ids=ids, attention_mask=attention).logits
                    direct = direct[torch.arange(len(chunk)), last][:, letters]
                    spot_check = float((direct - logits).abs().max())
        done = start + len(chunk)
        print(f"{done}/{len(rows)} questions, {time.perf_counter() - started:.0f} s", flush=True)
    text_correct = (
        likelihood_counts(split, tokenizer, rows, vectors, configs, args.batch_size)
        if args.likelihood
        else None
    )
    accuracy: dict[str, dict[str, float]] = {}
    baseline = correct[("none", 0.0)] / len(rows)
    for name in vectors:
        accuracy[name] = {"0.0": baseline}
        for m in args.multipliers:
            if m != 0.0:
                accuracy[name][str(m)] = correct[(name, m)] / len(rows)
    text_accuracy = None
    if text_correct is not None:
        text_accuracy = {
            name: {
                str(m): text_correct[(name if m != 0.0 else "none", m)] / len(rows)
                for m in [0.0, *[x for x in args.multipliers if x != 0.0]]
            }
            for name in vectors
        }
    result = {
        "questions": len(rows),
        "answer_text_accuracy_toward_matching": text_accuracy,
        "test": str(args.test),
        "layer": split.layer,
        "spot_check_max_logit_difference_vs_apply": spot_check,
        "ab_accuracy_toward_matching": accuracy,
        "vectors": {
            n: {
                "method": v.meta.method,
                "norm": float(v.vector.norm()),
                "nonzero": int((v.vector != 0).sum()),
            }
            for n, v in vectors.items()
        },
        "training": {run.name: loss_summary(run) for run in args.runs},
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
