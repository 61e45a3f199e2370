"""lm-evaluation-harness with steering: any lm-eval task, run on a steered model.

Install the optional extra (``pip install 'yapo[lm-eval]'``). This module registers an
lm-eval model type ``yapo``: Hugging Face's ``HFLM`` whose forward passes (log-likelihood
scoring and generation alike) run inside ``vector.apply(model, multiplier, direction)``.
Model arguments: ``pretrained`` (any name :func:`yapo.load_model` accepts, ``default``
included), ``vector`` (a vector folder or BiPO ``.pt``), ``multiplier`` (λ, default 1),
``direction`` (±1), ``sae`` (for a sparse vector whose SAE is elsewhere), ``layer`` (for a
bare ``.pt``), ``positions`` (``all``/``prompt``/``generated``), ``dtype``; anything else
goes to ``HFLM`` (``max_length``, ...). The device and batch size come from lm-eval's own
``--device`` and ``--batch_size`` (not ``--model_args``, where lm-eval would pass them
twice); without CUDA the CPU is used.

lm-eval 0.4 has no plugin discovery for model types (its registry holds its own models
and whatever was registered in the running process), so run it through this module,
which registers ``yapo`` and then hands the command line to lm-eval unchanged::

    python -m yapo.integrations.lm_eval run --model yapo \\
        --model_args pretrained=default,vector=runs/yapo/vector,multiplier=2 \\
        --tasks mmlu --batch_size 8

or, from Python, call :func:`register` before ``lm_eval.simple_evaluate(model="yapo", ...)``.
The delta against the unsteered model on the same questions (the paper's "general
knowledge kept" check) is :func:`evaluate_steering`, or on the command line::

    python -m yapo.integrations.lm_eval delta --pretrained default \\
        --vector runs/yapo/vector --multiplier 2 --tasks mmlu_high_school_geography --limit 50
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from yapo.errors import YapoError

logger = logging.getLogger(__name__)
MODEL_NAME = "yapo"
_REGISTERED: dict[str, type] = {}
_INSTALL = "pip install 'yapo[lm-eval]'"


def _import_lm_eval() -> Any:
    try:
        import lm_eval
        import lm_eval.models  # registers lm-eval's own model types first
    except ImportError as exc:
        raise YapoError(f"the lm-eval integration needs lm-evaluation-harness: {_INSTALL}") from exc
    return lm_eval


def register() -> type:
    """Register (once) and return the ``yapo`` lm-eval model class."""
    if MODEL_NAME in _REGISTERED:
        return _REGISTERED[MODEL_NAME]
    _import_lm_eval()
    from lm_eval.api.registry import model_registry, register_model
    from lm_eval.models.huggingface import HFLM

    from yapo.vectors.steer import Steer

    class YapoLM(HFLM):  # type: ignore[misc]
        """``HFLM`` whose forward passes are steered by a yapo vector."""

        def __init__(
            self,
            pretrained: Any = "default",
            vector: str | None = None,
            multiplier: float = 1.0,
            direction: int = 1,
            sae: str | None = None,
            layer: int | None = None,
            positions: str = "all",
            dtype: str | None = None,
            device: str | None = None,
            tokenizer: Any = None,
            **kwargs: Any,
        ) -> None:
            from yapo.intervene import POSITIONS
            from yapo.models import load_model

            if positions not in POSITIONS:
                raise YapoError(f"positions must be one of {POSITIONS}, got {positions!r}")
            if isinstance(pretrained, str):
                model, loaded_tokenizer = load_model(
                    pretrained, dtype=dtype, device=_usable_device(device)
                )
            else:  # an already-loaded model (from Python)
                model, loaded_tokenizer = pretrained, tokenizer
            if loaded_tokenizer is None:
                raise YapoError("a model object needs its tokenizer: pass tokenizer=...")
            super().__init__(pretrained=model, tokenizer=loaded_tokenizer, **kwargs)
            loaded = _load_steering(vector, sae, layer)
            if loaded is not None:
                loaded.check_fits(model)
            self.steer = Steer(loaded, float(multiplier), int(direction), positions)  # type: ignore[arg-type]

        @property
        def multiplier(self) -> float:
            """λ of the steering; set it to compare strengths on one loaded model."""
            return self.steer.multiplier

        @multiplier.setter
        def multiplier(self, value: float) -> None:
            self.steer = self.steer.at(value)

        @contextlib.contextmanager
        def steered(self) -> Iterator[None]:
            """The model is steered inside this block (a no-op without vector or at λ=0)."""
            with self.steer.apply(self.model):
                yield

        def _model_call(self, *args: Any, **kwargs: Any) -> Any:
            with self.steered():
                return super()._model_call(*args, **kwargs)

        def _model_generate(self, *args: Any, **kwargs: Any) -> Any:
            with self.steered():
                return super()._model_generate(*args, **kwargs)

    if MODEL_NAME in model_registry:
        # Registered by another copy of this module (e.g. imported under two names).
        _REGISTERED[MODEL_NAME] = model_registry.get(MODEL_NAME)
        return _REGISTERED[MODEL_NAME]
    register_model(MODEL_NAME)(YapoLM)
    _REGISTERED[MODEL_NAME] = YapoLM
    return YapoLM


def _usable_device(device: str | None) -> str:
    """lm-eval passes ``--device`` (often ``cuda``); fall back to the CPU without CUDA, as HFLM does."""
    import torch

    if device is None or device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        logger.warning("device %s requested but CUDA is not available; using the CPU", device)
        return "cpu"
    return device


def _load_steering(vector: str | None, sae: str | None, layer: int | None) -> Any:
    if not vector:
        return None
    from yapo.sae import load_sae
    from yapo.vectors import load_vector

    return load_vector(Path(vector), sae=load_sae(sae) if sae else None, layer=layer)


def make_lm(pretrained: Any = "default", **kwargs: Any) -> Any:
    """A ``yapo`` lm-eval model (see the module docstring for the arguments)."""
    return register()(pretrained=pretrained, **kwargs)


def _metrics(results: dict[str, Any]) -> dict[str, dict[str, float]]:
    table: dict[str, dict[str, float]] = {}
    for task, values in (results.get("results") or {}).items():
        table[task] = {
            key: float(value)
            for key, value in values.items()
            if isinstance(value, int | float) and not isinstance(value, bool) and key != "alias"
        }
    return table


def evaluate_steering(
    tasks: Sequence[str],
    pretrained: Any = "default",
    *,
    vector: str | None = None,
    multiplier: float = 1.0,
    direction: int = 1,
    sae: str | None = None,
    layer: int | None = None,
    limit: int | float | None = None,
    num_fewshot: int | None = None,
    batch_size: int = 1,
    dtype: str | None = None,
    device: str | None = None,
    **simple_evaluate_kwargs: Any,
) -> dict[str, Any]:
    """Run lm-eval ``tasks`` unsteered and steered on one loaded model; return both and the delta.

    ``delta[task][metric] = steered - unsteered`` for every numeric metric (standard
    errors appear as ``<metric>_stderr,<filter>`` entries of each run).
    """
    lm_eval = _import_lm_eval()
    if not vector:
        raise YapoError("evaluate_steering needs a vector to compare with the unsteered model")
    lm = make_lm(
        pretrained,
        vector=vector,
        multiplier=multiplier,
        direction=direction,
        sae=sae,
        layer=layer,
        dtype=dtype,
        device=device,
        batch_size=batch_size,
    )
    runs: dict[str, dict[str, dict[str, float]]] = {}
    for name, value in (("unsteered", 0.0), ("steered", float(multiplier))):
        lm.multiplier = value
        results = lm_eval.simple_evaluate(
            model=lm,
            tasks=list(tasks),
            limit=limit,
            num_fewshot=num_fewshot,
            log_samples=False,
            **simple_evaluate_kwargs,
        )
        runs[name] = _metrics(results or {})
    delta = {
        task: {
            metric: runs["steered"][task][metric] - value
            for metric, value in metrics.items()
            if metric in runs["steered"].get(task, {}) and "stderr" not in metric
        }
        for task, metrics in runs["unsteered"].items()
    }
    return {
        "tasks": list(tasks),
        "pretrained": pretrained if isinstance(pretrained, str) else type(pretrained).__name__,
        "vector": vector,
        "multiplier": multiplier,
        "direction": direction,
        "limit": limit,
        "num_fewshot": num_fewshot,
        "unsteered": runs["unsteered"],
        "steered": runs["steered"],
        "delta": delta,
    }


def _delta_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m yapo.integrations.lm_eval delta",
        description="lm-eval tasks unsteered vs steered on the same model: the delta.",
    )
    parser.add_argument("--pretrained", default="default")
    parser.add_argument("--vector", required=True)
    parser.add_argument("--multiplier", type=float, default=1.0)
    parser.add_argument("--direction", type=int, default=1)
    parser.add_argument("--sae")
    parser.add_argument("--layer", type=int)
    parser.add_argument("--tasks", required=True, help="comma-separated lm-eval task names")
    parser.add_argument("--limit", type=float)
    parser.add_argument("--num_fewshot", type=int)
    parser.add_argument("--batch_size", type=int, default=1)
    parser.add_argument("--dtype")
    parser.add_argument("--device")
    parser.add_argument("--out", help="write the JSON result here")
    args = parser.parse_args(list(argv))
    limit = int(args.limit) if args.limit is not None and args.limit >= 1 else args.limit
    result = evaluate_steering(
        [t for t in args.tasks.split(",") if t],
        args.pretrained,
        vector=args.vector,
        multiplier=args.multiplier,
        direction=args.direction,
        sae=args.sae,
        layer=args.layer,
        limit=limit,
        num_fewshot=args.num_fewshot,
        batch_size=args.batch_size,
        dtype=args.dtype,
        device=args.device,
    )
    text = json.dumps(result, indent=2, sort_keys=True)
    if args.out:
        from yapo._io import write_text

        write_text(args.out, text + "\n")
    print(text)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``delta ...`` runs :func:`evaluate_steering`; anything else goes to lm-eval's CLI."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if args and args[0] == "delta":
            return _delta_main(args[1:])
        register()
        from lm_eval.__main__ import cli_evaluate

        sys.argv = ["lm-eval", *args]
        cli_evaluate()
    except YapoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
