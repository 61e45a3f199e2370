"""Extract one part of an SAE corpus into an activation cache (for parallel extraction).

``yapo sae train`` extracts its corpus in one process. On a machine where that is too
slow, run this once per part of the corpus (each in its own process), merge the caches
with ``yapo.sae.training.merge_caches``, and pass the merged folder to
``yapo sae train --activations MERGED --max-tokens <its token count>``: training then
starts at once. The store settings here are ``yapo sae train``'s defaults.

    python benchmarks/extract_sae_activations.py --corpus part_a.jsonl --out cache_a \
        --max-tokens 1100000 --dtype bfloat16
    python -c "from yapo.sae.training import merge_caches; merge_caches(['cache_a', 'cache_b'], 'merged')"
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from yapo.models import load_model
from yapo.sae.training.activations import ActivationStore, StoreConfig, build_cache
from yapo.sae.training.pipeline import Corpus


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, nargs="+", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", default="default")
    parser.add_argument("--layer", type=int, default=10)
    parser.add_argument("--max-tokens", type=int, default=None)
    parser.add_argument("--context-size", type=int, default=256)
    parser.add_argument("--model-batch-size", type=int, default=8)
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--text-field", default="text")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, tokenizer = load_model(args.model, dtype=args.dtype)
    config = StoreConfig(
        layer=args.layer, context_size=args.context_size, model_batch_size=args.model_batch_size
    )
    store = ActivationStore(model, tokenizer, Corpus(args.corpus, args.text_field), config)
    cache = build_cache(store, args.out, max_tokens=args.max_tokens, model_name=args.model)
    print(f"{cache.tokens} activations in {cache.folder}")


if __name__ == "__main__":
    main()
