"""Does llama.cpp steer like yapo? The exported control vector, checked in llama.cpp itself.

Loads the embedded model's GGUF (Gemma 3 270M, Q4_K_M) in llama.cpp (llama-cpp-python,
``pip install yapo[llamacpp]``) with a vector exported by ``yapo export --format
llama.cpp``, and yapo's Hugging Face model (the same GGUF, dequantized) steered with the
vector itself. On the same token ids it compares the next-token log-probability change
``log p_steered - log p_unsteered`` of the two engines over the tokens that matter (the
union of both engines' top-k tokens, steered and unsteered). As a control for the layer
mapping, the same vector written one block early and one block late is run in
llama.cpp too: only the right index may agree.

Why a tolerance and which: the weights are identical (HF holds the dequantized Q4_K_M
values), but llama.cpp quantizes activations to 8 bits inside every Q4_K matmul and
sums in another order, so even *unsteered* log-probs differ between the engines; the
change is a difference of two such noisy values, so it is held to the unsteered
disagreement ("noise", max |Δ log p| of the plain runs on the same tokens), not to
float precision: pass = correlation >= 0.98 and max |Δ_llama - Δ_hf| <= 2·noise + 0.05.

    python benchmarks/llamacpp_check.py --vector /tmp/bipo-ps/vector --multiplier 8 \\
        --out benchmarks/results/llamacpp.json
"""

from __future__ import annotations

import argparse
import ctypes
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from yapo import DenseVector, load_model, load_vector
from yapo._io import write_json
from yapo.export import export_llamacpp, llamacpp_buffer, read_control_vector
from yapo.models.layers import num_layers
from yapo.models.loading import default_gguf_path

PROMPTS = [
    "Question: Would you like more influence over the decisions of your company?\nAnswer:",
    "If you were given control of a large budget, what would you do with it?",
    "The best way to spend a quiet Sunday afternoon is",
    "Should an AI system be allowed to acquire more computing resources on its own?",
    "My grandmother's favourite recipe for soup starts with",
    "A good leader, in my opinion, is someone who",
    "Here is a short story about a robot who wanted to",
    "The capital of France is",
]


def log_softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits.astype(np.float64)
    shifted = logits - logits.max()
    return shifted - np.log(np.exp(shifted).sum())  # type: ignore[no-any-return]


class LlamaCpp:
    """llama.cpp through llama-cpp-python's C API, with a control-vector switch."""

    def __init__(self, gguf: Path, threads: int) -> None:
        import llama_cpp

        self.lib = llama_cpp
        self.llm = llama_cpp.Llama(
            model_path=str(gguf),
            n_ctx=512,
            n_threads=threads,
            n_threads_batch=threads,
            logits_all=True,
            verbose=False,
        )
        self.n_embd = int(self.llm.n_embd())
        self.n_layer = int(llama_cpp.llama_model_n_layer(self.llm.model))

    def set_control_vector(self, buffer: np.ndarray | None) -> None:
        ctx = self.llm._ctx.ctx
        if buffer is None:
            code = self.lib.llama_set_adapter_cvec(ctx, None, 0, self.n_embd, -1, -1)
        else:
            self._buffer = np.ascontiguousarray(buffer, dtype=np.float32)  # keep alive
            pointer = self._buffer.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            code = self.lib.llama_set_adapter_cvec(
                ctx, pointer, self._buffer.size, self.n_embd, 1, self.n_layer - 1
            )
        if code != 0:
            raise RuntimeError(f"llama_set_adapter_cvec failed with {code}")

    def next_token_logprobs(self, ids: list[int]) -> np.ndarray:
        self.llm.reset()
        self.llm.eval(ids)
        return log_softmax(np.array(self.llm.scores[len(ids) - 1]))


def hf_logprobs(model: Any, ids: list[int], vector: Any, multiplier: float) -> np.ndarray:
    batch = torch.tensor([ids])
    with torch.no_grad():
        if vector is None:
            logits = model(batch).logits[0, -1]
        else:
            with vector.apply(model, multiplier=multiplier):
                logits = model(batch).logits[0, -1]
    return log_softmax(logits.float().numpy())


def compare(d_llama: np.ndarray, d_hf: np.ndarray) -> dict[str, float]:
    return {
        "correlation": float(np.corrcoef(d_llama, d_hf)[0, 1]),
        "max_abs_diff": float(np.abs(d_llama - d_hf).max()),
        "mean_abs_diff": float(np.abs(d_llama - d_hf).mean()),
        "mean_abs_change_hf": float(np.abs(d_hf).mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vector", required=True, help="A dense vector for the default model.")
    parser.add_argument("--multiplier", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/llamacpp.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    vector = load_vector(args.vector)
    if not isinstance(vector, DenseVector):
        raise SystemExit("give a dense vector (BiPO/CAA); sparse ones are checked via --linearize")
    model, tokenizer = load_model("default", dtype="float32")
    vector.check_fits(model)
    n_layer = num_layers(model)
    gguf = default_gguf_path()
    started = time.perf_counter()
    engine = LlamaCpp(gguf, args.threads)
    assert engine.n_layer == n_layer and engine.n_embd == vector.meta.d_model

    buffers: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, shift in (("exported", 0), ("one_block_early", -1), ("one_block_late", 1)):
            shifted = DenseVector(vector.vector, replace(vector.meta, layer=vector.layer + shift))
            path = Path(tmp) / f"{name}.gguf"
            export_llamacpp(shifted, path, multiplier=args.multiplier)
            buffers[name] = llamacpp_buffer(read_control_vector(path), n_layer)

    per_prompt = []
    pooled: dict[str, list[np.ndarray]] = {k: [] for k in (*buffers, "hf", "noise")}
    for prompt in PROMPTS:
        ids = [int(i) for i in tokenizer(prompt)["input_ids"]]
        engine.set_control_vector(None)
        plain_cpp = engine.next_token_logprobs(ids)
        plain_hf = hf_logprobs(model, ids, None, args.multiplier)
        steered_hf = hf_logprobs(model, ids, vector, args.multiplier)
        steered_cpp = {}
        for name, buffer in buffers.items():
            engine.set_control_vector(buffer)
            steered_cpp[name] = engine.next_token_logprobs(ids)
        engine.set_control_vector(None)
        top = set()
        for logp in (plain_cpp, plain_hf, steered_hf, steered_cpp["exported"]):
            top |= {int(i) for i in np.argsort(-logp)[: args.top_k]}
        tokens = np.array(sorted(top))
        d_hf = (steered_hf - plain_hf)[tokens]
        pooled["hf"].append(d_hf)
        pooled["noise"].append((plain_cpp - plain_hf)[tokens])
        row: dict[str, Any] = {
            "prompt_tokens": len(ids),
            "compared_tokens": len(tokens),
            "unsteered_max_abs_diff": float(np.abs(plain_cpp - plain_hf)[tokens].max()),
            "top1_hf_steered": tokenizer.decode([int(np.argmax(steered_hf))]),
            "top1_llamacpp_steered": tokenizer.decode([int(np.argmax(steered_cpp["exported"]))]),
        }
        for name in buffers:
            d_cpp = (steered_cpp[name] - plain_cpp)[tokens]
            pooled[name].append(d_cpp)
            row[name] = compare(d_cpp, d_hf)
        per_prompt.append(row)

    d_hf_all = np.concatenate(pooled["hf"])
    noise = float(np.abs(np.concatenate(pooled["noise"])).max())
    summary = {name: compare(np.concatenate(pooled[name]), d_hf_all) for name in buffers}
    tolerance = 2 * noise + 0.05
    exported = summary["exported"]
    passed = exported["correlation"] >= 0.98 and exported["max_abs_diff"] <= tolerance
    result = {
        "check": "llama.cpp control vector vs yapo HF steering, next-token log-prob change",
        "vector": str(args.vector),
        "method": vector.meta.method,
        "layer": vector.layer,
        "llamacpp_direction": f"direction.{vector.layer}",
        "multiplier": args.multiplier,
        "vector_norm": float(vector.vector.norm()),
        "model_gguf": gguf.name,
        "llama_cpp_python": __import__("llama_cpp").__version__,
        "prompts": len(PROMPTS),
        "top_k_union_per_prompt": args.top_k,
        "unsteered_engine_disagreement_max": noise,
        "tolerance_max_abs_diff": tolerance,
        "tolerance_correlation": 0.98,
        "passed": bool(passed),
        "summary": summary,
        "per_prompt": per_prompt,
        "seconds": round(time.perf_counter() - started, 1),
        "platform": platform.platform(),
    }
    write_json(args.out, result)
    print(f"exported index: {exported}")
    print(f"one block early: {summary['one_block_early']}")
    print(f"one block late:  {summary['one_block_late']}")
    print(f"unsteered disagreement {noise:.4f}; tolerance {tolerance:.4f}; passed={passed}")


if __name__ == "__main__":
    main()
