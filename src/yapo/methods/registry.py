"""The steering methods yapo knows, each declared once.

A :class:`MethodSpec` says everything the rest of the package needs to know about a
method — which space its vector lives in (and so whether it needs an SAE), its config
class, whether it is preference-optimized (checkpoints, resume, training settings) and
with which objective, how it fits — so that ``train()``, ``compare`` and the CLI ask
the registry instead of testing method names. A new method is one entry here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from yapo.errors import YapoError
from yapo.methods.fits import (
    caa_settings,
    fit_caa,
    fit_preference,
    fit_sas,
    preference_settings,
    sas_settings,
)
from yapo.methods.job import ContrastiveConfig, FitJob
from yapo.methods.preference import PreferenceConfig, TrainResult

VectorKind = Literal["dense", "sparse"]


@dataclass(frozen=True)
class MethodSpec:
    """One method: what it is, what it needs, how it fits.

    ``base`` is the name its runs and vectors record (the RePS variants are the same
    trainer and vector kind as their base, with another ``objective``); ``objective`` is
    the preference objective the name fixes (``None``: the config's own, or not a
    preference method); ``default`` puts it in the default comparison.
    """

    name: str
    base: str
    kind: VectorKind
    config_class: type[PreferenceConfig] | type[ContrastiveConfig]
    fit: Callable[[FitJob], TrainResult]
    settings: Callable[[FitJob], dict[str, Any]]
    description: str
    objective: str | None = None
    default: bool = True

    @property
    def needs_sae(self) -> bool:
        """Sparse vectors live in an SAE's latent space; dense ones in the stream."""
        return self.kind == "sparse"

    @property
    def optimized(self) -> bool:
        """Trained by the preference trainer: it has checkpoints, resumes, and its vector
        depends on the training settings and the validation pairs."""
        return self.config_class is PreferenceConfig


_SPECS = (
    MethodSpec(
        "yapo",
        "yapo",
        "sparse",
        PreferenceConfig,
        fit_preference,
        preference_settings,
        "sparse v in the SAE's latent space, preference-optimized",
    ),
    MethodSpec(
        "bipo",
        "bipo",
        "dense",
        PreferenceConfig,
        fit_preference,
        preference_settings,
        "dense v in the residual stream, preference-optimized",
    ),
    MethodSpec(
        "caa",
        "caa",
        "dense",
        ContrastiveConfig,
        fit_caa,
        caa_settings,
        "dense mean difference of answer-position states",
    ),
    MethodSpec(
        "sas",
        "sas",
        "sparse",
        ContrastiveConfig,
        fit_sas,
        sas_settings,
        "the mean difference of SAE codes, sparsified",
    ),
    MethodSpec(
        "yapo-reps",
        "yapo",
        "sparse",
        PreferenceConfig,
        fit_preference,
        preference_settings,
        "yapo with RePS's reference-free objective",
        objective="reps",
        default=False,
    ),
    MethodSpec(
        "bipo-reps",
        "bipo",
        "dense",
        PreferenceConfig,
        fit_preference,
        preference_settings,
        "bipo with RePS's reference-free objective",
        objective="reps",
        default=False,
    ),
)
REGISTRY: dict[str, MethodSpec] = {spec.name: spec for spec in _SPECS}
METHODS: tuple[str, ...] = tuple(REGISTRY)
DEFAULT_METHODS: tuple[str, ...] = tuple(spec.name for spec in _SPECS if spec.default)


def method_spec(name: str) -> MethodSpec:
    """The method called ``name``; an unknown name is a :class:`YapoError` naming the known."""
    spec = REGISTRY.get(name)
    if spec is None:
        raise YapoError(f"unknown method {name!r}; use one of {', '.join(METHODS)}")
    return spec


def method_objective(name: str) -> tuple[str, str]:
    """The trainer method and objective of a method: ``"yapo-reps"`` -> ``("yapo", "reps")``,
    ``"bipo"`` -> ``("bipo", "bipo")`` (what its run and vector record)."""
    spec = method_spec(name)
    return spec.base, spec.objective or "bipo"


def check_methods(names: Iterable[str]) -> tuple[str, ...]:
    """``names`` as a tuple, refusing an empty list and unknown names (all named at once)."""
    chosen = tuple(names)
    unknown = sorted(set(chosen) - set(METHODS))
    if unknown:
        raise YapoError(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
    if not chosen:
        raise YapoError(f"no methods given; choose from {', '.join(METHODS)}")
    return chosen


def parse_methods(text: str) -> tuple[str, ...]:
    """``"yapo,bipo"`` -> ``("yapo", "bipo")``, refusing unknown names."""
    methods = tuple(m.strip().lower() for m in text.split(",") if m.strip())
    if not methods:
        raise YapoError(f"unknown method(s) [{text!r}]; choose from {', '.join(METHODS)}")
    return check_methods(methods)


def methods_help() -> str:
    """One line per method, for the CLI's help."""
    return "; ".join(f"{spec.name}: {spec.description}" for spec in _SPECS)
