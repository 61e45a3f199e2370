"""Learning steering vectors: CAA, SAS, and the one preference trainer of BiPO and YaPO.

``yapo.methods.train(method, data=..., model=..., layer=..., out=...)`` is the entry
point (also ``yapo train`` on the command line); the pieces below it are public for
people who build their own loops.
"""

from yapo.methods.api import train
from yapo.methods.caa import answer_positions, train_caa
from yapo.methods.preference import (
    PreferenceConfig,
    PreferenceTrainer,
    TrainingDiverged,
    TrainResult,
    preference_loss,
)
from yapo.methods.registry import METHODS, MethodSpec, method_spec
from yapo.methods.sas import train_sas
from yapo.methods.steering import DenseSteering, SparseSteering, Steering

__all__ = [
    "METHODS",
    "DenseSteering",
    "MethodSpec",
    "PreferenceConfig",
    "PreferenceTrainer",
    "SparseSteering",
    "Steering",
    "TrainResult",
    "TrainingDiverged",
    "answer_positions",
    "method_spec",
    "preference_loss",
    "train",
    "train_caa",
    "train_sas",
]
