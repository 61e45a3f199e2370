"""How each method turns a :class:`~yapo.methods.job.FitJob` into a vector.

Two families: the contrastive means (CAA, SAS — one pass below the layer, no training
loop, one "summary" metrics line) and the preference trainer (BiPO, YaPO and their RePS
variants). Each fit comes with what its run records in ``config.json``, so that a
resumed or reused run is compared on exactly the settings that shaped its vector.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from yapo.methods.caa import train_caa
from yapo.methods.job import FitJob
from yapo.methods.preference import PreferenceTrainer, TrainResult
from yapo.methods.sas import train_sas
from yapo.methods.steering import DenseSteering, SparseSteering, Steering
from yapo.models.layers import hidden_size
from yapo.vectors.base import SteeringVector


def caa_settings(job: FitJob) -> dict[str, Any]:
    return {"position": job.contrastive.position}


def sas_settings(job: FitJob) -> dict[str, Any]:
    c = job.contrastive
    return {"position": c.position, "min_frequency": c.min_frequency, "top_k": c.top_k}


def preference_settings(job: FitJob) -> dict[str, Any]:
    return job.config.to_json()


def fit_caa(job: FitJob) -> TrainResult:
    """CAA: the dense mean difference of answer-position states."""
    vector = train_caa(
        job.model,
        job.layer,
        job.pairs,
        job.pad,
        position=job.contrastive.position,
        eos_token_id=job.eos,
        batch_size=job.config.cache_batch_size,
        hyperparameters=job.hyperparameters,
    )
    return _finish_contrastive(job, vector)


def fit_sas(job: FitJob) -> TrainResult:
    """SAS: that difference in the SAE's latent space, sparsified."""
    assert job.sae is not None  # the registry says SAS needs one; train() loaded it
    vector = train_sas(
        job.model,
        job.layer,
        job.sae,
        job.pairs,
        job.pad,
        position=job.contrastive.position,
        eos_token_id=job.eos,
        min_frequency=job.contrastive.min_frequency,
        top_k=job.contrastive.top_k,
        batch_size=job.config.cache_batch_size,
        hyperparameters=job.hyperparameters,
    )
    return _finish_contrastive(job, vector)


def _finish_contrastive(job: FitJob, vector: SteeringVector) -> TrainResult:
    """One summary line and the vector into the run folder, marked finished."""
    record = {
        "kind": "summary",
        "step": 0,
        "pairs": len(job.pairs),
        "vector_norm": float(vector.vector.norm()),
        "nonzero": int((vector.vector != 0).sum()),
    }
    path: Path | None = None
    run = job.run
    if run is not None:
        path = run.path
        if job.processes.main:
            run.truncate_metrics(-1)
            run.append(record)
            vector.save(run.vector_path)
            run.update_config(finished=True, steps=0)
        job.processes.barrier()
        run.release()
    return TrainResult(vector, [record], path, 0)


def fit_preference(job: FitJob) -> TrainResult:
    """BiPO (dense ``v``) or YaPO (sparse ``v``, with the SAE): the one preference trainer."""
    steering: Steering = (
        SparseSteering(job.sae, job.config.multiplier)
        if job.sae is not None
        else DenseSteering(hidden_size(job.model), job.config.multiplier)
    )
    trainer = PreferenceTrainer(
        job.model,
        job.layer,
        steering,
        job.pairs,
        job.pad,
        job.config,
        eval_pairs=job.eval_pairs,
        method=job.method,
        hyperparameters=job.hyperparameters,
        run=job.run,
        processes=job.processes,
        callbacks=job.callbacks,
        progress=job.progress,
    )
    try:
        return trainer.train(resume=job.resume)
    finally:
        if job.run is not None:
            job.run.release()  # the folder's lock (yapo._lock): the run is over
