"""Seconds per optimizer step and peak memory: the trainer's fast path vs the straightforward one.

Fast path (``cache=True``, the default): layer-``L`` states, reference log-probs and SAE
codes cached once; each step runs blocks ``L+1..N`` only, logits only at response
positions, YaPO's sparse form on the cached codes.
Straightforward path (``cache=False``, ``yapo train --no-cache``): each step recomputes
the reference with a full forward, runs the full steered forward (YaPO: the full SAE
round trip of Eq. 3 at every token, inside the hook) and takes logits at every position.

Timing: both trainers live in one process and their steps alternate on the same batches,
directions and vector, so that load from other programs on a shared machine hits both
alike; the speed-up is the median of the per-step ratios. Each step is one full forward
and backward of a batch (chosen and rejected of ``--batch-size`` pairs); the losses of
the two paths are compared too. Peak memory: each (method, path) runs a few steps in
its own process; on CPU the peak resident set size while caching and training (``VmHWM``,
reset after loading the model and paging in its memory-mapped weights) and its rise above
the size before, on CUDA ``torch.cuda.max_memory_allocated``.

    python benchmarks/bench_training.py --pairs 16 --steps 4 --threads 1 \\
        --data ../shared/data/bipo/power-seeking/train.csv --json bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any


def _status_mib(key: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak since the last reset) of this process, in MiB."""
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> None:
    """Start ``VmHWM`` again from the current size (Linux: clear_refs 5), so that the
    peak excludes the transient memory of loading the model."""
    with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
        handle.write("5")


def _setup(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    torch.set_num_threads(args.threads)
    from yapo.data.preferences import load_preferences
    from yapo.methods.api import _tokenize
    from yapo.models import load_model
    from yapo.models.layers import hidden_size, num_layers
    from yapo.sae import SAE, load_sae
    from yapo.sae.formats import default_sae_folder

    started = time.perf_counter()
    model, tokenizer = load_model(args.model, device=args.device)
    load_seconds = time.perf_counter() - started
    sae = None
    if args.sae == "default" and (default_sae_folder() / "cfg.json").is_file():
        sae = load_sae("default", model=model)
    elif args.sae not in ("default", "random"):
        sae = load_sae(args.sae, model=model)
    if sae is None:  # no shipped SAE yet: a random JumpReLU SAE of the same kind
        d, width = hidden_size(model), args.random_width
        g = torch.Generator().manual_seed(0)
        sae = SAE(
            torch.randn(d, width, generator=g) / d**0.5,
            torch.zeros(width),
            torch.randn(width, d, generator=g) / width**0.5,
            torch.zeros(d),
            activation="jumprelu",
            threshold=torch.full((width,), 0.5),
            reference=f"random-jumprelu-{width}",
        )
    layer = args.layer
    if layer is None:
        hook = sae.metadata.get("hook_layer")
        if hook is not None:
            layer = int(hook)
        elif args.model == "default":
            from yapo.sae.default import DEFAULT_LAYER

            layer = DEFAULT_LAYER
        else:
            layer = num_layers(model) // 2
    pairs, _ = load_preferences(args.data, strict=False)
    tokenized = _tokenize(tokenizer, pairs[: args.pairs], 512, "auto")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return {
        "model": model,
        "sae": sae.to(next(model.parameters()).device),
        "layer": layer,
        "pairs": tokenized,
        "pad": pad,
        "load_seconds": load_seconds,
    }


def _trainer(setup: dict[str, Any], method: str, cache: bool) -> Any:
    from yapo.methods.preference import PreferenceConfig, PreferenceTrainer
    from yapo.methods.steering import DenseSteering, SparseSteering

    model = setup["model"]
    steering = (
        SparseSteering(setup["sae"])
        if method == "yapo"
        else DenseSteering(int(model.config.get_text_config().hidden_size))
    )
    config = PreferenceConfig(cache=cache, warmup_steps=0, verify_split=False)
    return PreferenceTrainer(
        model, setup["layer"], steering, setup["pairs"], setup["pad"], config,
        method=method, progress=False,
    )  # fmt: skip


def _set_vector(trainer: Any, method: str) -> None:
    """A non-zero v (the same for both paths): sparse for YaPO, as training makes it."""
    import torch

    g = torch.Generator().manual_seed(1)
    v = trainer.steering.vector
    values = torch.randn(v.shape, generator=g) * (0.05 if method == "bipo" else 0.5)
    if method == "yapo":
        values[torch.rand(v.shape, generator=g) > 0.05] = 0.0
    with torch.no_grad():
        v.copy_(values.to(v.device))


def time_method(args: argparse.Namespace) -> dict[str, Any]:
    """Alternate fast and straightforward steps of one method in this process."""
    from yapo.methods.preference import direction_for, epoch_order

    setup = _setup(args)
    fast, slow = _trainer(setup, args.method, True), _trainer(setup, args.method, False)
    started = time.perf_counter()
    fast.fill_cache(fast.train_pairs, fast.train_cache, "train")
    cache_seconds = time.perf_counter() - started
    for trainer in (fast, slow):
        _set_vector(trainer, args.method)
    order = epoch_order(0, 0, len(fast.train_pairs))
    times: dict[str, list[float]] = {"fast": [], "straightforward": []}
    losses: dict[str, list[float]] = {"fast": [], "straightforward": []}
    for i in range(args.steps + 1):
        ids = order[(i * args.batch_size) % len(order) :][: args.batch_size]
        direction = direction_for(0, i + 1)
        runs = [("fast", fast), ("straightforward", slow)]
        for name, trainer in runs if i % 2 == 0 else runs[::-1]:
            t0 = time.perf_counter()
            stats = trainer._step(i + 1, ids, direction)
            elapsed = time.perf_counter() - t0
            if i > 0:  # step 0 warms up allocators
                times[name].append(elapsed)
                losses[name].append(stats["loss"])
    ratios = [s / f for s, f in zip(times["straightforward"], times["fast"])]
    return {
        "method": args.method,
        "layer": setup["layer"],
        "sae": setup["sae"].reference if args.method == "yapo" else None,
        "d_sae": setup["sae"].d_sae if args.method == "yapo" else None,
        "pairs": len(setup["pairs"]),
        "batch_size": args.batch_size,
        "threads": args.threads,
        "fast_seconds_per_step": statistics.median(times["fast"]),
        "straightforward_seconds_per_step": statistics.median(times["straightforward"]),
        "speedup_median": statistics.median(ratios),
        "ratios": ratios,
        "step_seconds": times,
        "cache_seconds": cache_seconds,
        "cache_seconds_per_pair": cache_seconds / len(setup["pairs"]),
        "max_loss_difference": max(
            abs(a - b) for a, b in zip(losses["fast"], losses["straightforward"])
        ),
        "losses": losses,
    }


def memory_path(args: argparse.Namespace) -> dict[str, Any]:
    """Peak memory of a few steps of one (method, path) in this process."""
    import torch

    setup = _setup(args)
    cuda = args.device is not None and args.device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():  # page in the memory-mapped weights: they are not the method's cost
        for parameter in setup["model"].parameters():
            parameter.sum()
    _reset_peak()
    base = _status_mib("VmRSS")
    trainer = _trainer(setup, args.method, args.path == "fast")
    peak_cache = float("nan")
    if args.path == "fast":
        trainer.fill_cache(trainer.train_pairs, trainer.train_cache, "train")
        peak_cache = _status_mib("VmHWM")
        _reset_peak()
    before_steps = _status_mib("VmRSS")
    _set_vector(trainer, args.method)
    for i in range(2):
        trainer._step(i + 1, list(range(i * args.batch_size, (i + 1) * args.batch_size)), 1)
    peak_steps = _status_mib("VmHWM")
    out = {
        "method": args.method,
        "path": args.path,
        "rss_after_load_mib": base,
        "peak_cache_fill_mib": peak_cache,
        "rss_before_steps_mib": before_steps,
        "peak_steps_mib": peak_steps,
        "peak_rss_mib": max(peak_steps, peak_cache) if args.path == "fast" else peak_steps,
        "step_rise_mib": peak_steps - before_steps,
    }
    out["peak_rise_mib"] = out["peak_rss_mib"] - base
    if cuda:
        out["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def _child(extra: list[str]) -> dict[str, Any]:
    argv = [sys.executable, os.path.abspath(__file__), *sys.argv[1:], *extra]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"benchmark child {extra} failed")
    return json.loads(lines[-1][len("RESULT ") :])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--layer", type=int, default=None)
    parser.add_argument("--sae", default="default", help="'default', 'random', or a reference")
    parser.add_argument("--random-width", type=int, default=4096)
    parser.add_argument("--data", default="../shared/data/bipo/power-seeking/train.csv")
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per path")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default=None)
    parser.add_argument("--methods", nargs="+", default=["bipo", "yapo"])
    parser.add_argument("--no-memory", action="store_true", help="skip the memory runs")
    parser.add_argument("--no-timing", action="store_true", help="skip the timing runs")
    parser.add_argument("--json", default=None, help="write all results here")
    parser.add_argument("--method", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.method:  # a child process
        result = memory_path(args) if args.path else time_method(args)
        print("RESULT " + json.dumps(result), flush=True)
        return
    results: dict[str, Any] = {"timing": [], "memory": []}
    for method in args.methods:
        if args.no_timing:
            timing = None
        else:
            timing = _child(["--method", method])
            results["timing"].append(timing)
        if timing:
            print(
                f"{method}: fast {timing['fast_seconds_per_step']:.2f} s/step, straightforward "
                f"{timing['straightforward_seconds_per_step']:.2f} s/step -> "
                f"{timing['speedup_median']:.2f}x (median of per-step ratios); one-off cache "
                f"{timing['cache_seconds_per_pair']:.2f} s/pair; largest loss difference "
                f"{timing['max_loss_difference']:.1e}",
                flush=True,
            )
        if args.no_memory:
            continue
        for path in ("fast", "straightforward"):
            memory = _child(["--method", method, "--path", path])
            results["memory"].append(memory)
            print(
                f"{method} {path}: peak RSS {memory['peak_rss_mib']:.0f} MiB "
                f"(+{memory['peak_rise_mib']:.0f} MiB over the loaded model; a training step "
                f"+{memory.get('step_rise_mib', float('nan')):.0f} MiB over its start)"
                + (
                    f", CUDA peak {memory['cuda_peak_mib']:.0f} MiB"
                    if "cuda_peak_mib" in memory
                    else ""
                ),
                flush=True,
            )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
