"""Training sparse autoencoders: corpus → activation store → trainer → evaluation.

* :mod:`~yapo.sae.training.corpus` — text files and the model's own samples;
* :mod:`~yapo.sae.training.activations` — layer-L activations (stopping the forward
  pass at block L), a bounded shuffle buffer, and a resumable bfloat16 disk cache;
* :mod:`~yapo.sae.training.trainer` — JumpReLU and TopK training with checkpoints;
* :mod:`~yapo.sae.training.evaluation` — variance explained, L0, dead/dense latents and
  the next-token loss with the SAE spliced in;
* :mod:`~yapo.sae.training.pipeline` — all of it in one call (``yapo sae train``).
"""

from yapo.sae.training.activations import (
    ActivationCache,
    ActivationStore,
    StoreConfig,
    build_cache,
    layer_states,
    merge_caches,
)
from yapo.sae.training.evaluation import SAEEvaluation, evaluate_sae
from yapo.sae.training.pipeline import SAEPipelineConfig, train_sae
from yapo.sae.training.trainer import SAETrainConfig, SAETrainer, TrainableSAE, TrainResult

__all__ = [
    "ActivationCache",
    "ActivationStore",
    "SAEEvaluation",
    "SAEPipelineConfig",
    "SAETrainConfig",
    "SAETrainer",
    "StoreConfig",
    "TrainResult",
    "TrainableSAE",
    "build_cache",
    "evaluate_sae",
    "layer_states",
    "merge_caches",
    "train_sae",
]
