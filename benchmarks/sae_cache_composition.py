"""Which sources and languages an activation cache actually holds (for an SAE model card).

An activation cache (``yapo sae train --activations DIR``) records how many documents of
its corpus it consumed (``texts_done``), not what they were. This re-tokenizes exactly
those documents the way the activation store does (windows of ``context_size`` tokens,
BOS excluded, windows under ``min_window_tokens`` dropped) and counts tokens per
``source`` and ``lang`` field of the corpus JSONL written by ``build_sae_corpus.py``.

    python benchmarks/sae_cache_composition.py --corpus corpus/train.jsonl \
        --cache cache --out composition.json
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from yapo._io import write_json
from yapo.models import load_model
from yapo.sae.training.activations import token_windows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, required=True, help="the JSONL the cache read")
    parser.add_argument("--cache", type=Path, required=True, help="the activation cache folder")
    parser.add_argument("--model", default="default")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    meta = json.loads((args.cache / "cache.json").read_text(encoding="utf-8"))
    if "merged_from" in meta:
        raise SystemExit("a merged cache: run this on each part with the part's own corpus")
    _, tokenizer = load_model(args.model)
    context, minimum = int(meta["context_size"]), int(meta["min_window_tokens"])
    by_source: Counter[str] = Counter()
    by_language: Counter[str] = Counter()
    total = 0
    with args.corpus.open(encoding="utf-8") as handle:
        for index, line in enumerate(handle):
            if index >= int(meta["texts_done"]):
                break
            record = json.loads(line)
            windows = token_windows(record["text"], tokenizer, context)
            tokens = sum(len(w) - 1 for w in windows if len(w) >= minimum)
            by_source[record.get("source", "?")] += tokens
            by_language[record.get("lang", "?")] += tokens
            total += tokens
    write_json(
        args.out,
        {
            "total": total,
            "cache_tokens": meta["tokens"],
            "documents": meta["texts_done"],
            "by_source": dict(by_source.most_common()),
            "by_language": dict(by_language.most_common()),
        },
    )
    print(f"{total:,} tokens from {meta['texts_done']} documents -> {args.out}")


if __name__ == "__main__":
    main()
