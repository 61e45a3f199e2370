"""Corpus → activations → SAE in one call (what ``yapo sae train`` runs).

The run folder ``out`` holds ``run.json`` (how the run was started), ``samples.jsonl``
(the model's own samples, if asked for), ``activations/`` (the bfloat16 cache, unless
streaming), and the trainer's ``config.json``, ``metrics.jsonl``, ``checkpoint/`` and
final ``sae/``. Running the same command again resumes whatever was interrupted:
extraction continues after its last shard, training from its last checkpoint.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from yapo._io import write_json
from yapo.errors import YapoError
from yapo.models.layers import hidden_size, resolve_layer
from yapo.sae.training.activations import (
    ActivationCache,
    ActivationStore,
    StoreConfig,
    build_cache,
)
from yapo.sae.training.corpus import (
    iter_corpus,
    iter_file_texts,
    read_seed_prompts,
    sample_texts,
    write_jsonl_texts,
)
from yapo.sae.training.trainer import Architecture, SAETrainConfig, SAETrainer, TrainResult


class Corpus:
    """A re-iterable view of corpus files (each ``iter`` reads them again, in order)."""

    def __init__(self, files: Sequence[str | Path], text_field: str = "text") -> None:
        self.files = [Path(f) for f in files]
        self.text_field = text_field
        for file in self.files:
            if not file.is_file():
                raise YapoError(f"corpus file not found: {file}")

    def __iter__(self) -> Iterator[str]:
        for file in self.files:
            field = "text" if file.name == "samples.jsonl" else self.text_field
            yield from iter_file_texts(file, text_field=field)


@dataclass
class SAEPipelineConfig:
    """Everything ``yapo sae train`` takes besides the model, corpus and output folder."""

    layer: int
    width: int
    architecture: Architecture = "jumprelu"
    k: int = 64
    l0_coefficient: float = 1e-3
    threshold_init: float = 1e-3
    steps: int | None = None
    epochs: float = 1.0
    batch_size: int = 4096
    lr: float = 3e-4
    max_tokens: int | None = None
    context_size: int = 256
    model_batch_size: int = 8
    exclude_bos: bool = True
    stream: bool = False
    buffer_size: int = 2**18
    activations: Path | None = None
    sample_seeds: Path | None = None
    sample_tokens: int = 0
    text_field: str = "text"
    dead_tokens: int = 1_000_000
    aux_k: int = 256
    lr_warmup_steps: int = 50
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 200
    save_dtype: str = "float32"


def train_sae(
    model: Any,
    tokenizer: Any,
    corpus: Sequence[str | Path],
    out: str | Path,
    options: SAEPipelineConfig,
    *,
    model_name: str = "",
    progress: bool = True,
) -> TrainResult:
    """Train an SAE at ``options.layer`` of ``model`` on ``corpus`` files; write it to ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    layer = resolve_layer(model, options.layer)
    files = _corpus_files(model, tokenizer, corpus, out, options)
    store_config = StoreConfig(
        layer=layer,
        context_size=options.context_size,
        model_batch_size=options.model_batch_size,
        exclude_bos=options.exclude_bos,
    )
    store = ActivationStore(model, tokenizer, Corpus(files, options.text_field), store_config)
    write_json(
        out / "run.json",
        {
            "model": model_name,
            "corpus": [str(f) for f in files],
            "options": {
                k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()
            },
            "model_dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        },
    )
    source, steps, n_activations = _activation_source(store, options, out, model_name, progress)
    metadata = {
        "model_name": model_name,
        "hook_name": f"blocks.{layer}.hook_resid_post",
        "hook_layer": layer,
        "d_model": hidden_size(model),
        "context_size": options.context_size,
        "prepend_bos": getattr(tokenizer, "bos_token_id", None) is not None,
        "exclude_bos": options.exclude_bos,
        "training_tokens": steps * options.batch_size,
        "activation_tokens": n_activations,
        "corpus": [str(f) for f in files],
        "trained_with": "yapo sae train",
    }
    config = _trainer_config(hidden_size(model), options, steps, metadata)
    result = SAETrainer(config, source, out).run(progress=progress)
    dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}.get(
        options.save_dtype
    )
    if dtype is None:
        raise YapoError(
            f"--save-dtype must be float32, float16 or bfloat16, not {options.save_dtype}"
        )
    result.sae.save(out / "sae", dtype=dtype)
    return result


def _corpus_files(
    model: Any, tokenizer: Any, corpus: Sequence[str | Path], out: Path, options: SAEPipelineConfig
) -> list[Path]:
    """The corpus files, plus ``samples.jsonl`` of the model's own text when asked for.

    The samples are written once and reused on a rerun, so a resumed run reads the
    very texts the interrupted one did.
    """
    files = [Path(f) for f in corpus]
    if options.sample_tokens > 0:
        if options.sample_seeds is None:
            raise YapoError("--sample-tokens needs --sample-seeds (a file of seed prompts)")
        samples = out / "samples.jsonl"
        if not samples.is_file():
            seeds = [line.split("\t")[-1] for line in read_seed_prompts(options.sample_seeds)]
            texts = sample_texts(
                model, tokenizer, seeds, max_tokens=options.sample_tokens, seed=options.seed
            )
            write_jsonl_texts(samples, texts, source="samples")
        files.append(samples)
    if not files:
        raise YapoError("no corpus: give --corpus files and/or --sample-tokens")
    return files


BatchSource = Callable[[int], Iterator[Tensor]]


def _activation_source(
    store: ActivationStore, options: SAEPipelineConfig, out: Path, model_name: str, progress: bool
) -> tuple[BatchSource, int, int | None]:
    """Where the trainer's batches come from, the number of steps, and the cached tokens.

    Streaming reads the model anew every epoch (no disk, no token count, so the steps
    must be given); otherwise the activations are cached once on disk (resumably) and
    the steps follow from the cache's size.
    """
    if options.stream:
        if options.steps is None:
            if options.max_tokens is None:
                raise YapoError("streaming needs --steps or --max-tokens to know when to stop")
            steps = math.ceil(options.max_tokens * options.epochs / options.batch_size)
        else:
            steps = options.steps

        def stream(start_step: int) -> Iterator[Tensor]:
            def endless() -> Iterator[Tensor]:
                for epoch in itertools.count():
                    yield from store.shuffled_batches(
                        options.batch_size, options.buffer_size, seed=options.seed + epoch
                    )

            return itertools.islice(endless(), start_step, None)

        return stream, steps, None
    cache = build_cache(
        store,
        options.activations or out / "activations",
        max_tokens=options.max_tokens,
        model_name=model_name,
        progress=progress,
    )
    steps = options.steps or max(1, math.ceil(cache.tokens * options.epochs / options.batch_size))

    def cached(start_step: int) -> Iterator[Tensor]:
        return _cache_batches(cache, options, start_step)

    return cached, steps, cache.tokens


def _trainer_config(
    d_in: int, options: SAEPipelineConfig, steps: int, metadata: dict[str, Any]
) -> SAETrainConfig:
    """The trainer's settings: the run's options, its step count and the SAE's metadata."""
    return SAETrainConfig(
        d_in=d_in,
        d_sae=options.width,
        architecture=options.architecture,
        steps=steps,
        batch_size=options.batch_size,
        lr=options.lr,
        l0_coefficient=options.l0_coefficient,
        threshold_init=options.threshold_init,
        k=options.k,
        dead_tokens=options.dead_tokens,
        aux_k=options.aux_k,
        lr_warmup_steps=options.lr_warmup_steps,
        seed=options.seed,
        log_every=options.log_every,
        checkpoint_every=options.checkpoint_every,
        metadata=metadata,
    )


def _cache_batches(
    cache: ActivationCache, options: SAEPipelineConfig, start: int
) -> Iterator[Tensor]:
    return cache.batches(options.batch_size, seed=options.seed, start_step=start)


def corpus_texts(files: Sequence[str | Path], text_field: str = "text") -> Iterator[str]:
    """All documents of ``files`` (for evaluation)."""
    return iter_corpus(files, text_field=text_field)
