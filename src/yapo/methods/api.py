"""``yapo.train(...)``: learn a steering vector from preference data, into a run folder.

One entry point for the four methods:

* ``"yapo"`` — sparse ``v`` in the SAE's latent space, preference-optimized;
* ``"bipo"`` — dense ``v`` in the residual stream, preference-optimized;
* ``"caa"`` — dense mean difference of answer-position states;
* ``"sas"`` — that difference in SAE space, sparsified.

``yapo train`` (the CLI) is a thin wrapper over :func:`train`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from yapo._version import __version__
from yapo.data.records import PreferencePair
from yapo.errors import MismatchError, YapoError
from yapo.intervene import input_device
from yapo.methods.batches import TokenizedPair, tokenize_pairs
from yapo.methods.caa import ANSWER_POSITIONS, AnswerPosition, train_caa
from yapo.methods.distributed import Processes, current_processes
from yapo.methods.preference import (
    PreferenceConfig,
    PreferenceTrainer,
    StepCallback,
    TrainResult,
)
from yapo.methods.runs import DATA_DIGEST, EVAL_DATA_DIGEST, RunFolder, pairs_digest
from yapo.methods.sas import train_sas
from yapo.methods.steering import DenseSteering, SparseSteering, Steering
from yapo.models.layers import hidden_size, resolve_layer
from yapo.sae.model import SAE
from yapo.vectors.base import SteeringVector

logger = logging.getLogger(__name__)

METHODS = ("yapo", "bipo", "caa", "sas")
SPARSE_METHODS = ("yapo", "sas")
PairSource = str | os.PathLike[str] | Sequence[PreferencePair]


def _load_pairs(source: PairSource, strict: bool, what: str) -> tuple[list[PreferencePair], str]:
    if isinstance(source, (str, os.PathLike)):
        from yapo.data.preferences import load_preferences

        pairs, report = load_preferences(source, strict=strict)
        if report.problems:
            logger.warning("%s", report.summary())
        if not pairs:
            raise YapoError(f"no usable preference pairs in {what} {source}")
        return pairs, str(source)
    pairs = list(source)
    if not all(isinstance(p, PreferencePair) for p in pairs):
        raise YapoError(f"{what} must be a file path or a list of PreferencePair")
    return pairs, f"<{len(pairs)} pairs given in Python>"


def _resolve_sae(sae: str | SAE | None, model_name: str, model: nn.Module) -> SAE:
    from yapo.sae.formats import check_sae_fits_model, load_sae

    if sae is None:
        if model_name != "default":
            raise YapoError("this method works in an SAE's latent space: pass --sae / sae=")
        sae = "default"
    loaded = load_sae(sae) if isinstance(sae, str) else sae
    check_sae_fits_model(loaded, model)
    loaded.requires_grad_(False)
    return loaded.to(input_device(model))


def _resolve_layer(layer: int | None, sae: SAE | None, model: nn.Module) -> int:
    sae_layer = sae.metadata.get("hook_layer") if sae is not None else None
    if layer is None:
        if sae_layer is None:
            raise YapoError("pass --layer / layer= (the block whose output is steered)")
        return resolve_layer(model, int(sae_layer))
    resolved = resolve_layer(model, layer)
    if sae_layer is not None and resolve_layer(model, int(sae_layer)) != resolved:
        raise MismatchError(
            f"the SAE was trained on layer {sae_layer} but layer {layer} was asked for: "
            "its latents mean nothing at another layer"
        )
    return resolved


def _split_settings(settings: dict[str, Any]) -> PreferenceConfig:
    unknown = set(settings) - PreferenceConfig.field_names()
    if unknown:
        raise YapoError(
            f"unknown training setting(s) {sorted(unknown)}; known: "
            f"{', '.join(sorted(PreferenceConfig.field_names()))}"
        )
    return PreferenceConfig(**settings)


def train(
    method: str,
    *,
    data: PairSource,
    model: str | nn.Module = "default",
    tokenizer: Any = None,
    layer: int | None = None,
    sae: str | SAE | None = None,
    out: str | os.PathLike[str] | None = None,
    eval_data: PairSource | None = None,
    eval_fraction: float = 0.0,
    max_pairs: int | None = None,
    chat: bool | str = "auto",
    position: AnswerPosition = "last",
    min_frequency: float = 0.1,
    top_k: int | None = 64,
    resume: bool = False,
    overwrite: bool = False,
    strict: bool = True,
    dtype: str | None = None,
    device: str | None = None,
    progress: bool = True,
    callbacks: Sequence[StepCallback] = (),
    **settings: Any,
) -> TrainResult:
    """Train a ``method`` vector on preference ``data`` and (with ``out``) write a run folder.

    ``model`` is a name for :func:`yapo.load_model` or a loaded model (then pass its
    ``tokenizer``). ``layer`` defaults to the SAE's ``hook_layer``. ``data`` and
    ``eval_data`` are files :func:`yapo.data.preferences.load_preferences` reads, or
    lists of :class:`PreferencePair`; without ``eval_data``, ``eval_fraction`` of the
    questions are held out (split by question). ``max_pairs`` keeps the first N pairs.
    ``chat`` decides whether prompts go through the chat template ("auto": when the
    tokenizer has one). ``position``/``min_frequency``/``top_k`` are CAA/SAS settings;
    the remaining keyword ``settings`` are :class:`PreferenceConfig` fields (``epochs``,
    ``learning_rate``, ``cache``, ...). ``resume`` continues the run in ``out`` from its
    newest checkpoint, bit-identically.
    """
    if method not in METHODS:
        raise YapoError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    if position not in ANSWER_POSITIONS:
        raise YapoError(f"position must be one of {', '.join(ANSWER_POSITIONS)}")
    config = _split_settings(settings)
    config.validate()
    processes = current_processes()

    from yapo.data.split import split_by_question
    from yapo.models.loading import load_model, model_name

    lm: nn.Module
    if isinstance(model, str):
        lm, tokenizer = load_model(
            model, dtype=dtype, device=device or (processes.device if processes.world > 1 else None)
        )
    else:
        if tokenizer is None:
            raise YapoError("pass the tokenizer together with a loaded model")
        lm = model
    assert isinstance(lm, nn.Module)
    name = model if isinstance(model, str) else model_name(lm)  # type: ignore[arg-type]
    if sae is not None and method not in SPARSE_METHODS:  # silently ignoring it misleads
        raise YapoError(
            f"--sae / sae= is meaningless for {method}: it learns a dense vector in the "
            "residual stream (only yapo and sas use an SAE); drop it and pick --layer"
        )
    the_sae = _resolve_sae(sae, name, lm) if method in SPARSE_METHODS else None
    the_layer = _resolve_layer(layer, the_sae, lm)

    pairs, data_name = _load_pairs(data, strict, "data")
    if max_pairs is not None:
        if max_pairs < 1:
            raise YapoError(f"max_pairs must be >= 1, got {max_pairs}")
        pairs = pairs[:max_pairs]
    eval_pairs: list[PreferencePair] = []
    eval_name = None
    if eval_data is not None:
        eval_pairs, eval_name = _load_pairs(eval_data, strict, "eval data")
    elif eval_fraction > 0:
        pairs, eval_pairs = split_by_question(pairs, eval_fraction, seed=config.seed)
        eval_name = f"{eval_fraction:g} of {data_name} (by question)"

    tokenized = _tokenize(tokenizer, pairs, config.max_prompt_length, chat)
    tokenized_eval = _tokenize(tokenizer, eval_pairs, config.max_prompt_length, chat)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    run_settings: dict[str, Any] = {
        "method": method,
        "model": name,
        "layer": the_layer,
        "sae": the_sae.reference if the_sae is not None else None,
        "sae_checksum": the_sae.checksum() if the_sae is not None else None,
        "data": data_name,
        "eval_data": eval_name,
        "max_pairs": max_pairs,
        "chat": chat,
        "train_pairs": len(tokenized),
        "eval_pairs": len(tokenized_eval),
        DATA_DIGEST: pairs_digest(pairs),
        EVAL_DATA_DIGEST: pairs_digest(eval_pairs),
    }
    if method in ("caa", "sas"):
        run_settings.update(position=position)
        if method == "sas":
            run_settings.update(min_frequency=min_frequency, top_k=top_k)
    else:
        run_settings.update(config.to_json())
    hyper = {k: v for k, v in run_settings.items() if k not in ("sae", "sae_checksum", "model")}

    run = None
    resuming = False
    if out is not None:
        run = RunFolder(out, writer=processes.main)
        resuming = resume
        if processes.main:  # the others wait: they must not see a half-made folder
            resuming = run.start(
                {"settings": run_settings, "version": __version__, "processes": processes.world},
                resume=resume,
                overwrite=overwrite,
            )
        processes.barrier()

    if method in ("caa", "sas"):
        return _contrastive(
            method,
            lm,
            the_layer,
            the_sae,
            tokenized,
            pad,
            tokenizer.eos_token_id,
            position,
            min_frequency,
            top_k,
            config,
            hyper,
            run,
            processes,
        )
    steering: Steering = (
        SparseSteering(the_sae, config.multiplier)
        if the_sae is not None
        else DenseSteering(hidden_size(lm), config.multiplier)
    )
    trainer = PreferenceTrainer(
        lm,
        the_layer,
        steering,
        tokenized,
        pad,
        config,
        eval_pairs=tokenized_eval,
        method=method,
        hyperparameters=hyper,
        run=run,
        processes=processes,
        callbacks=callbacks,
        progress=progress,
    )
    try:
        return trainer.train(resume=resuming)
    finally:
        if run is not None:
            run.release()  # the folder's lock (yapo._lock): the run is over


def _tokenize(
    tokenizer: Any, pairs: Sequence[PreferencePair], max_prompt_length: int, chat: bool | str
) -> list[TokenizedPair]:
    from yapo.data.prompts import format_prompt

    formatted = [
        PreferencePair(
            prompt=format_prompt(tokenizer, p.prompt, chat),  # type: ignore[arg-type]
            chosen=p.chosen,
            rejected=p.rejected,
            id=p.id,
        )
        for p in pairs
    ]
    return tokenize_pairs(tokenizer, formatted, max_prompt_length)


def _contrastive(
    method: str,
    model: nn.Module,
    layer: int,
    sae: SAE | None,
    pairs: list[TokenizedPair],
    pad: int,
    eos: int | None,
    position: AnswerPosition,
    min_frequency: float,
    top_k: int | None,
    config: PreferenceConfig,
    hyper: dict[str, Any],
    run: RunFolder | None,
    processes: Processes,
) -> TrainResult:
    vector: SteeringVector
    if method == "caa":
        vector = train_caa(
            model,
            layer,
            pairs,
            pad,
            position=position,
            eos_token_id=eos,
            batch_size=config.cache_batch_size,
            hyperparameters=hyper,
        )
    else:
        assert sae is not None
        vector = train_sas(
            model,
            layer,
            sae,
            pairs,
            pad,
            position=position,
            eos_token_id=eos,
            min_frequency=min_frequency,
            top_k=top_k,
            batch_size=config.cache_batch_size,
            hyperparameters=hyper,
        )
    record = {
        "kind": "summary",
        "step": 0,
        "pairs": len(pairs),
        "vector_norm": float(vector.vector.norm()),
        "nonzero": int((vector.vector != 0).sum()),
    }
    path: Path | None = None
    if run is not None:
        path = run.path
        if processes.main:
            run.truncate_metrics(-1)
            run.append(record)
            vector.save(run.vector_path)
            run.update_config(finished=True, steps=0)
        processes.barrier()
        run.release()
    return TrainResult(vector, [record], path, 0)
