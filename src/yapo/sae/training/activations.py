"""Residual-stream activations at one layer, streamed from text, for SAE training.

The model runs only up to block ``L``: a forward hook on that block raises a private
exception that carries the block's output, so the upper blocks and the LM head (a
quarter of the default model's parameters) never run. The states equal
``hidden_states[L + 1]`` of a full forward pass (tested).

Which positions count: padding never; the BOS position is dropped by default
(``exclude_bos``) because its residual norm is one to two orders of magnitude larger than
any other token's in Gemma-family models, so a few BOS states would dominate the
reconstruction loss while steering never needs them.

Two ways to feed a trainer:

* :class:`ActivationStore` — streams text through the model and shuffles activations in
  a bounded buffer (memory ``buffer_size × d_model`` floats), for single-pass training;
* :class:`ActivationCache` — writes the activations once to bfloat16 shards on disk
  (resumable), then serves shuffled batches for as many epochs as wanted. Extraction
  is by far the slower half on a CPU, so the shipped SAE is trained from a cache.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from yapo._io import atomic_path, write_json
from yapo.errors import YapoError
from yapo.intervene import input_device, run_to_layer
from yapo.models.layers import hidden_size, resolve_layer


def layer_states(
    model: nn.Module, input_ids: Tensor, attention_mask: Tensor | None, layer: int
) -> Tensor:
    """Output of block ``layer`` for a batch, ``(batch, seq, d_model)``, without running further."""
    hidden, _ = run_to_layer(
        model, layer, input_ids=input_ids, attention_mask=attention_mask, use_cache=False
    )
    return hidden


@dataclass
class StoreConfig:
    """How text becomes activations (saved with caches and SAEs for reproducibility)."""

    layer: int
    context_size: int = 256
    model_batch_size: int = 8
    exclude_bos: bool = True
    min_window_tokens: int = 8


def token_windows(text: str, tokenizer: Any, context_size: int) -> list[list[int]]:
    """Split one document into windows of at most ``context_size`` tokens, each starting
    with BOS (when the tokenizer has one), so long documents are used whole rather than
    truncated."""
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    bos = getattr(tokenizer, "bos_token_id", None)
    body = context_size - (1 if bos is not None else 0)
    if body < 1:
        raise YapoError(f"context_size={context_size} is too small")
    windows = []
    for start in range(0, len(ids), body):
        chunk = ids[start : start + body]
        windows.append(([bos] if bos is not None else []) + chunk)
    return windows


class ActivationStore:
    """Streams ``texts`` through ``model`` and yields activations at ``config.layer``."""

    def __init__(
        self, model: nn.Module, tokenizer: Any, texts: Iterable[str], config: StoreConfig
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.texts = texts
        self.config = config
        self.layer = resolve_layer(model, config.layer)
        self.d_model = hidden_size(model)
        pad = getattr(tokenizer, "pad_token_id", None)
        self.pad_id = int(pad if pad is not None else 0)
        self.has_bos = getattr(tokenizer, "bos_token_id", None) is not None

    # ------------------------------------------------------------ batches
    def _run(self, windows: list[list[int]]) -> Tensor:
        """Activations of a batch of windows, valid positions only, ``(n, d_model)`` float32."""
        length = max(len(w) for w in windows)
        ids = torch.full((len(windows), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(windows), length), dtype=torch.long)
        for row, window in enumerate(windows):
            ids[row, : len(window)] = torch.tensor(window)
            mask[row, : len(window)] = 1
        device = input_device(self.model)
        hidden = layer_states(self.model, ids.to(device), mask.to(device), self.layer)
        keep = mask.bool()
        if self.config.exclude_bos and self.has_bos:
            keep[:, 0] = False
        return hidden[keep.to(hidden.device)].to("cpu", torch.float32)

    def iter_chunks(self, skip_texts: int = 0) -> Iterator[tuple[Tensor, int]]:
        """Yield ``(activations, texts_done)`` in document order.

        Each chunk ends at a document boundary (a short batch is run if needed), so
        ``texts_done`` is a safe place to resume from.
        """
        pending: list[list[int]] = []
        out: list[Tensor] = []
        texts_done = 0
        for index, text in enumerate(self.texts):
            if index < skip_texts:
                continue
            windows = [
                w
                for w in token_windows(text, self.tokenizer, self.config.context_size)
                if len(w) >= self.config.min_window_tokens
            ]
            pending.extend(windows)
            while len(pending) >= self.config.model_batch_size:
                out.append(self._run(pending[: self.config.model_batch_size]))
                pending = pending[self.config.model_batch_size :]
            texts_done = index + 1
            if out and (not pending or len(out) >= 32):
                if pending:  # a short batch, so the chunk ends at this document's end
                    out.append(self._run(pending))
                    pending = []
                yield torch.cat(out), texts_done
                out = []
        if pending:
            out.append(self._run(pending))
        if out:
            yield torch.cat(out), texts_done

    def __iter__(self) -> Iterator[Tensor]:
        """Activations in document order, one model batch at a time."""
        for chunk, _ in self.iter_chunks():
            yield chunk

    def shuffled_batches(
        self, batch_size: int, buffer_size: int = 2**18, seed: int = 0
    ) -> Iterator[Tensor]:
        """Shuffled training batches through a bounded buffer.

        The buffer is filled to ``buffer_size`` activations, shuffled, and its first half
        is served while the rest waits to be mixed with the next documents: memory stays
        bounded and consecutive batches do not come from the same few documents.
        """
        if buffer_size < 2 * batch_size:
            raise YapoError("buffer_size must be at least twice the batch size")
        generator = torch.Generator().manual_seed(seed)
        buffer = torch.empty((0, self.d_model))
        for chunk in self:
            buffer = torch.cat([buffer, chunk])
            if len(buffer) >= buffer_size:
                buffer = buffer[torch.randperm(len(buffer), generator=generator)]
                serve = (len(buffer) // 2) // batch_size * batch_size
                yield from torch.split(buffer[:serve], batch_size)
                buffer = buffer[serve:]
        buffer = buffer[torch.randperm(len(buffer), generator=generator)]
        full = len(buffer) // batch_size * batch_size
        if full:
            yield from torch.split(buffer[:full], batch_size)


# -------------------------------------------------------------------- cache
CACHE_META = "cache.json"


class ActivationCache:
    """Activations of one layer in bfloat16 ``.npy`` shards plus a ``cache.json`` manifest.

    bfloat16, not float16: Gemma's residual stream has rare "massive activations" above
    float16's range (65504), which would become ``inf``. NumPy has no bfloat16, so the
    shards hold the raw 16-bit patterns (``int16``) and are viewed back on load.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        meta_path = self.folder / CACHE_META
        if not meta_path.is_file():
            raise YapoError(f"{self.folder} is not an activation cache (no {CACHE_META})")
        self.meta: dict[str, Any] = json.loads(meta_path.read_text(encoding="utf-8"))
        self._data: Tensor | None = None

    @property
    def tokens(self) -> int:
        return int(self.meta["tokens"])

    @property
    def d_model(self) -> int:
        return int(self.meta["d_model"])

    def data(self) -> Tensor:
        """All activations as one bfloat16 tensor ``(tokens, d_model)`` (loaded once)."""
        if self._data is None:
            arrays = [np.load(self.folder / s["file"]) for s in self.meta["shards"]]
            if not arrays:
                raise YapoError(f"activation cache {self.folder} is empty")
            self._data = torch.from_numpy(np.concatenate(arrays)).view(torch.bfloat16)
        return self._data

    def batches(self, batch_size: int, seed: int = 0, start_step: int = 0) -> Iterator[Tensor]:
        """Endless shuffled float32 batches; epoch ``e`` uses permutation ``seed + e``.

        Deterministic in ``(seed, step)``, so a resumed run sees exactly the batches the
        uninterrupted run would have seen.
        """
        data = self.data()
        per_epoch = len(data) // batch_size
        if per_epoch == 0:
            raise YapoError(
                f"the cache holds {len(data)} activations, fewer than one batch of {batch_size}"
            )
        step = start_step
        while True:
            epoch, offset = divmod(step, per_epoch)
            perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed + epoch))
            for b in range(offset, per_epoch):
                yield data[perm[b * batch_size : (b + 1) * batch_size]].to(torch.float32)
                step += 1


def build_cache(
    store: ActivationStore,
    folder: str | Path,
    *,
    max_tokens: int | None = None,
    shard_tokens: int = 2**17,
    model_name: str = "",
    progress: bool = True,
) -> ActivationCache:
    """Write ``store``'s activations to ``folder`` as bfloat16 shards; resumes a partial cache.

    A shard is written (atomically) once at least ``shard_tokens`` activations are
    pending at a document boundary, and the manifest then records how many documents
    are done, so an interrupted extraction restarts after the last complete shard.
    """
    from tqdm.auto import tqdm

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    meta_path = folder / CACHE_META
    expected = {**asdict(store.config), "layer": store.layer, "d_model": store.d_model}
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if "merged_from" in meta:
            return ActivationCache(folder)  # a merge of parallel extractions: use as is
        settings = {k: meta.get(k) for k in expected}
        if settings != expected:
            raise YapoError(
                f"{folder} holds activations made with other settings ({settings}); "
                f"use another folder or delete it (wanted {expected})"
            )
    else:
        meta = {
            **expected,
            "model_name": model_name,
            "dtype": "bfloat16",
            "tokens": 0,
            "texts_done": 0,
            "shards": [],
            "complete": False,
            "seconds": 0.0,
        }
    limit = max_tokens if max_tokens is not None else math.inf
    if meta["tokens"] >= limit:
        return _finish(folder, meta)
    bar = tqdm(
        total=None if limit == math.inf else int(limit),
        initial=meta["tokens"],
        desc=f"activations L{store.layer}",
        unit="tok",
        disable=not progress,
    )
    pending: list[Tensor] = []
    pending_tokens = 0
    started = time.monotonic()
    exhausted = True
    start = int(meta["texts_done"])
    texts_done = start
    for chunk, texts_done in store.iter_chunks(skip_texts=start):
        pending.append(chunk.to(torch.bfloat16))
        pending_tokens += len(chunk)
        bar.update(len(chunk))
        if pending_tokens >= shard_tokens or meta["tokens"] + pending_tokens >= limit:
            _write_shard(folder, meta, pending, texts_done, started)
            started = time.monotonic()
            pending, pending_tokens = [], 0
        if meta["tokens"] >= limit:
            exhausted = False
            break
    else:
        if pending:
            _write_shard(folder, meta, pending, texts_done, started)
    bar.close()
    meta["complete"] = exhausted
    return _finish(folder, meta)


def _write_shard(
    folder: Path, meta: dict[str, Any], parts: list[Tensor], texts_done: int, started: float
) -> None:
    array = torch.cat(parts).view(torch.int16).numpy()
    name = f"shard_{len(meta['shards']):05d}.npy"
    with atomic_path(folder / name) as tmp, tmp.open("wb") as handle:
        np.save(handle, array)
    meta["shards"].append({"file": name, "tokens": len(array)})
    meta["tokens"] += len(array)
    meta["texts_done"] = texts_done
    meta["seconds"] = round(meta["seconds"] + time.monotonic() - started, 1)
    write_json(folder / CACHE_META, meta)


def _finish(folder: Path, meta: dict[str, Any]) -> ActivationCache:
    write_json(folder / CACHE_META, meta)
    return ActivationCache(folder)


def merge_caches(parts: list[str | Path], folder: str | Path) -> ActivationCache:
    """One cache over several caches made with the same settings (e.g. in parallel over
    parts of a corpus). Shards are referenced, not copied; the merged cache cannot be
    extended by :func:`build_cache` (its ``texts_done`` counts no single corpus)."""
    caches = [ActivationCache(p) for p in parts]
    if not caches:
        raise YapoError("no caches to merge")
    keys = [*StoreConfig.__dataclass_fields__, "d_model", "dtype"]
    first = {k: caches[0].meta.get(k) for k in keys}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    shards: list[dict[str, Any]] = []
    for cache in caches:
        settings = {k: cache.meta.get(k) for k in keys}
        if settings != first:
            raise YapoError(f"{cache.folder} was made with other settings: {settings} != {first}")
        for shard in cache.meta["shards"]:
            path = (cache.folder / shard["file"]).resolve()
            shards.append({"file": str(path), "tokens": shard["tokens"]})
    meta = {
        **first,
        "model_name": caches[0].meta.get("model_name", ""),
        "tokens": sum(s["tokens"] for s in shards),
        "texts_done": sum(int(c.meta["texts_done"]) for c in caches),
        "shards": shards,
        "complete": True,
        "merged_from": [
            {
                "folder": str(c.folder.resolve()),
                "tokens": c.tokens,
                "texts_done": c.meta["texts_done"],
            }
            for c in caches
        ],
        "seconds": round(sum(float(c.meta.get("seconds", 0)) for c in caches), 1),
    }
    return _finish(folder, meta)
