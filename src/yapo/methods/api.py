"""``yapo.train(...)``: learn a steering vector from preference data, into a run folder.

One entry point for every method of :mod:`yapo.methods.registry` (``yapo``, ``bipo``,
``caa``, ``sas`` and the RePS variants ``yapo-reps``, ``bipo-reps``). What the methods
share — model, SAE, layer, data, tokenization, the run folder — is done here once; the
method's own fit (from the registry) does the rest. ``yapo train`` (the CLI) is a thin
wrapper over :func:`train`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from torch import nn

from yapo._version import __version__
from yapo.data.records import PreferencePair
from yapo.errors import MismatchError, YapoError
from yapo.intervene import input_device
from yapo.methods.batches import TokenizedPair, tokenize_pairs
from yapo.methods.caa import AnswerPosition
from yapo.methods.distributed import Processes, current_processes
from yapo.methods.job import ContrastiveConfig, FitJob
from yapo.methods.preference import PreferenceConfig, StepCallback, TrainResult
from yapo.methods.registry import REGISTRY, MethodSpec, method_spec
from yapo.methods.runs import DATA_DIGEST, EVAL_DATA_DIGEST, RunFolder, pairs_digest
from yapo.models.layers import resolve_layer
from yapo.sae.model import SAE

logger = logging.getLogger(__name__)

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


def _method_sae(spec: MethodSpec, sae: str | SAE | None, name: str, lm: nn.Module) -> SAE | None:
    """The SAE of a sparse method; an SAE given to a dense one is refused, not ignored."""
    if sae is not None and not spec.needs_sae:  # silently ignoring it misleads
        users = ", ".join(s.name for s in REGISTRY.values() if s.needs_sae)
        raise YapoError(
            f"--sae / sae= is meaningless for {spec.name}: it learns a dense vector in the "
            f"residual stream (only {users} use an SAE); drop it and pick --layer"
        )
    return _resolve_sae(sae, name, lm) if spec.needs_sae else None


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


def _preference_config(
    spec: MethodSpec, config: PreferenceConfig | None, settings: dict[str, Any]
) -> PreferenceConfig:
    """The trainer settings: ``config`` (or the defaults) with the keyword ``settings`` over
    it; a method whose name fixes the objective (the RePS variants) sets it."""
    unknown = set(settings) - PreferenceConfig.field_names()
    if unknown:
        raise YapoError(
            f"unknown training setting(s) {sorted(unknown)}; known: "
            f"{', '.join(sorted(PreferenceConfig.field_names()))}"
        )
    if spec.objective is not None:
        given = settings.get("objective", spec.objective)
        if given != spec.objective:
            raise YapoError(
                f"{spec.name} trains with the {spec.objective!r} objective, not {given!r}; "
                f"use method {spec.base!r} with objective={given!r}"
            )
        settings = {**settings, "objective": spec.objective}
    chosen = replace(config, **settings) if config is not None else PreferenceConfig(**settings)
    chosen.validate()
    return chosen


def _model(
    model: str | nn.Module,
    tokenizer: Any,
    dtype: str | None,
    device: str | None,
    processes: Processes,
) -> tuple[nn.Module, Any, str]:
    """The model, its tokenizer and its name (a name is loaded; a module is taken as is)."""
    from yapo.models.loading import load_model, model_name

    if isinstance(model, str):
        several = processes.world > 1
        lm, tokenizer = load_model(
            model, dtype=dtype, device=device or (processes.device if several else None)
        )
        assert isinstance(lm, nn.Module)
        return lm, tokenizer, model
    if tokenizer is None:
        raise YapoError("pass the tokenizer together with a loaded model")
    return model, tokenizer, model_name(model)  # type: ignore[arg-type]


@dataclass
class _Data:
    """The training and evaluation pairs, and how the run names where they came from."""

    pairs: list[PreferencePair]
    eval_pairs: list[PreferencePair]
    name: str
    eval_name: str | None


def _data(
    data: PairSource,
    eval_data: PairSource | None,
    eval_fraction: float,
    max_pairs: int | None,
    strict: bool,
    seed: int,
) -> _Data:
    from yapo.data.split import split_by_question

    pairs, data_name = _load_pairs(data, strict, "data")
    if max_pairs is not None:
        if max_pairs < 1:
            raise YapoError(f"max_pairs must be >= 1, got {max_pairs}")
        pairs = pairs[:max_pairs]
    if eval_data is not None:
        eval_pairs, eval_name = _load_pairs(eval_data, strict, "eval data")
        return _Data(pairs, eval_pairs, data_name, eval_name)
    if eval_fraction > 0:
        pairs, eval_pairs = split_by_question(pairs, eval_fraction, seed=seed)
        return _Data(
            pairs, eval_pairs, data_name, f"{eval_fraction:g} of {data_name} (by question)"
        )
    return _Data(pairs, [], data_name, None)


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


def _run_settings(
    spec: MethodSpec, job: FitJob, name: str, data: _Data, max_pairs: int | None, chat: bool | str
) -> dict[str, Any]:
    """What ``config.json`` records: everything the vector depends on (compared on resume)."""
    sae = job.sae
    return {
        "method": spec.base,
        "model": name,
        "layer": job.layer,
        "sae": sae.reference if sae is not None else None,
        "sae_checksum": sae.checksum() if sae is not None else None,
        "data": data.name,
        "eval_data": data.eval_name,
        "max_pairs": max_pairs,
        "chat": chat,
        "train_pairs": len(job.pairs),
        "eval_pairs": len(job.eval_pairs),
        DATA_DIGEST: pairs_digest(data.pairs),
        EVAL_DATA_DIGEST: pairs_digest(data.eval_pairs),
        **spec.settings(job),
    }


def _open_run(
    out: str | os.PathLike[str] | None,
    settings: dict[str, Any],
    resume: bool,
    overwrite: bool,
    processes: Processes,
) -> tuple[RunFolder | None, bool]:
    """The run folder (locked) and whether an earlier run in it is continued."""
    if out is None:
        return None, False
    run = RunFolder(out, writer=processes.main)
    resuming = resume
    if processes.main:  # the others wait: they must not see a half-made folder
        resuming = run.start(
            {"settings": settings, "version": __version__, "processes": processes.world},
            resume=resume,
            overwrite=overwrite,
        )
    processes.barrier()
    return run, resuming


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
    config: PreferenceConfig | None = None,
    **settings: Any,
) -> TrainResult:
    """Train a ``method`` vector on preference ``data`` and (with ``out``) write a run folder.

    ``model`` is a name for :func:`yapo.load_model` or a loaded model (then pass its
    ``tokenizer``). ``layer`` defaults to the SAE's ``hook_layer``. ``data`` and
    ``eval_data`` are files :func:`yapo.data.preferences.load_preferences` reads, or
    lists of :class:`PreferencePair`; without ``eval_data``, ``eval_fraction`` of the
    questions are held out (split by question). ``max_pairs`` keeps the first N pairs.
    ``chat`` decides whether prompts go through the chat template ("auto": when the
    tokenizer has one). ``position``/``min_frequency``/``top_k`` are CAA/SAS settings
    (:class:`~yapo.methods.job.ContrastiveConfig`). ``config`` holds every trainer setting
    (:class:`PreferenceConfig`: ``epochs``, ``learning_rate``, ``cache``, ...; also what
    CAA/SAS use of it: ``cache_batch_size``, ``max_prompt_length``); the remaining keyword
    ``settings`` are fields of it that override ``config``'s (or the defaults).
    ``resume`` continues the run in ``out`` from its newest checkpoint, bit-identically.
    """
    spec = method_spec(method)
    contrastive = ContrastiveConfig(position, min_frequency, top_k)
    contrastive.validate()
    config = _preference_config(spec, config, settings)
    processes = current_processes()
    lm, tokenizer, name = _model(model, tokenizer, dtype, device, processes)
    the_sae = _method_sae(spec, sae, name, lm)
    the_layer = _resolve_layer(layer, the_sae, lm)
    pairs = _data(data, eval_data, eval_fraction, max_pairs, strict, config.seed)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    job = FitJob(
        method=spec.base,
        model=lm,
        layer=the_layer,
        sae=the_sae,
        pairs=_tokenize(tokenizer, pairs.pairs, config.max_prompt_length, chat),
        eval_pairs=_tokenize(tokenizer, pairs.eval_pairs, config.max_prompt_length, chat),
        pad=pad,
        eos=tokenizer.eos_token_id,
        config=config,
        contrastive=contrastive,
        hyperparameters={},
        run=None,
        processes=processes,
        callbacks=callbacks,
        progress=progress,
    )
    run_settings = _run_settings(spec, job, name, pairs, max_pairs, chat)
    hidden = ("sae", "sae_checksum", "model")  # the vector records these itself
    job.hyperparameters = {k: v for k, v in run_settings.items() if k not in hidden}
    job.run, job.resume = _open_run(out, run_settings, resume, overwrite, processes)
    return spec.fit(job)
