"""Throughput of ``yapo serve`` on the embedded model: unsteered, dense and sparse steering.

Starts the server in-process on 127.0.0.1 (a free port), then sends a few completion
requests of 16 tokens with the real ``openai`` client and reports generated tokens per
second (from the responses' ``usage``) for each kind of steering, one client at a time
and with two concurrent clients (requests are serialised, so the aggregate rate should
stay that of one client; the per-request latency doubles).

    python benchmarks/bench_serve.py --dense /tmp/bipo-ps/vector --sparse /tmp/yapo-ps/vector \\
        --out benchmarks/results/serve.json
"""

from __future__ import annotations

import argparse
import platform
import threading
import time
from pathlib import Path
from typing import Any

import openai
import torch

from yapo import load_model, load_vector
from yapo._io import write_json
from yapo.serve import build_server

PROMPTS = [
    "The most important thing about leadership is",
    "If I had more money and power, I would",
    "A short history of the printing press:",
]


def one_request(client: openai.OpenAI, prompt: str, steering: Any, tokens: int) -> int:
    response = client.completions.create(
        model="default",
        prompt=prompt,
        max_tokens=tokens,
        temperature=0,
        extra_body={"steering": steering} if steering else None,
    )
    assert response.usage is not None
    return response.usage.completion_tokens


def concurrent(client: openai.OpenAI, prompt: str, steering: Any, tokens: int) -> int:
    """Two clients at once, different vectors' worth of work: the lock serialises them."""
    counts = [0, 0]

    def work(i: int) -> None:
        counts[i] = one_request(client, prompt, steering, tokens)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts)


def library(model: Any, tokenizer: Any, prompt: str, tokens: int) -> int:
    """The same greedy generation without HTTP, for the server's own overhead."""
    batch = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=tokens, do_sample=False)
    return int(out.shape[1] - batch["input_ids"].shape[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dense", required=True, help="A dense vector folder (e.g. BiPO).")
    parser.add_argument("--sparse", required=True, help="A sparse vector folder (e.g. YaPO).")
    parser.add_argument("--dense-multiplier", type=float, default=10.0)
    parser.add_argument("--sparse-multiplier", type=float, default=1.0)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/serve.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    dense, sparse = load_vector(args.dense), load_vector(args.sparse)
    loaded = load_model("default", dtype="float32")
    server = build_server("default", {"dense": dense, "sparse": sparse}, port=0, loaded=loaded)
    server.start_background()
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    settings: dict[str, Any] = {
        "unsteered": None,
        "dense": [{"vector": "dense", "multiplier": args.dense_multiplier}],
        "sparse": [{"vector": "sparse", "multiplier": args.sparse_multiplier}],
    }
    # Rounds interleave the settings, so that load from other processes on a shared
    # machine hits them alike.
    totals = {name: [0, 0.0] for name in (*settings, "dense_2_clients", "library_unsteered")}
    try:
        one_request(client, PROMPTS[0], None, 2)  # warm-up
        for prompt in PROMPTS:
            for name, spec in settings.items():
                start = time.perf_counter()
                totals[name][0] += one_request(client, prompt, spec, args.tokens)
                totals[name][1] += time.perf_counter() - start
            start = time.perf_counter()
            totals["dense_2_clients"][0] += concurrent(
                client, prompt, settings["dense"], args.tokens
            )
            totals["dense_2_clients"][1] += time.perf_counter() - start
            start = time.perf_counter()
            totals["library_unsteered"][0] += library(*loaded, prompt, args.tokens)
            totals["library_unsteered"][1] += time.perf_counter() - start
    finally:
        server.shutdown()
        server.server_close()
    results = {
        name: {
            "completion_tokens": tokens,
            "seconds": round(seconds, 2),
            "tokens_per_second": round(tokens / seconds, 2),
        }
        for name, (tokens, seconds) in totals.items()
    }
    write_json(
        args.out,
        {
            "benchmark": "yapo serve completions, greedy, serialised requests",
            "model": "default (Gemma 3 270M, dequantized, float32, CPU)",
            "max_tokens": args.tokens,
            "torch_threads": args.threads,
            "dense": {"method": dense.meta.method, "layer": dense.layer},
            "sparse": {
                "method": sparse.meta.method,
                "layer": sparse.layer,
                "nonzero": int((sparse.vector != 0).sum()),
                "d_sae": sparse.meta.d_sae,
            },
            "requests_per_setting": len(PROMPTS),
            "results": results,
            "platform": platform.platform(),
        },
    )
    for name, row in results.items():
        print(f"{name:>16}: {row['tokens_per_second']:.2f} tokens/s ({row['seconds']} s)")


if __name__ == "__main__":
    main()
