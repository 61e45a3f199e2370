"""Every CLI option whose default is a config field shows that field's default.

The config dataclasses are the one home of the defaults; the commands read them. These
tests compare each command's parameter defaults (what ``--help`` prints and what an
omitted option means) with a freshly built config, so a default changed in the
dataclass cannot silently differ on the command line.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from yapo.cli.demo import compare_command, demo_command
from yapo.cli.train import train_command
from yapo.compare import CompareConfig
from yapo.demo import DemoConfig
from yapo.evaluate.selection import SelectionConfig
from yapo.methods.job import ContrastiveConfig
from yapo.methods.preference import PreferenceConfig


def _defaults(command: Callable[..., Any]) -> dict[str, Any]:
    return {
        name: p.default
        for name, p in inspect.signature(command).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


def test_train_options_default_to_the_trainer_config() -> None:
    cli, config, contrastive = _defaults(train_command), PreferenceConfig(), ContrastiveConfig()
    same = [
        "epochs",
        "batch_size",
        "lr_scale",
        "beta",
        "weight_decay",
        "warmup_steps",
        "warmup_fraction",
        "schedule",
        "multiplier",
        "objective",
        "seed",
        "max_prompt_length",
        "max_steps",
        "early_stopping_patience",
        "keep_best",
        "eval_every",
        "checkpoint_every",
    ]
    for name in same:
        assert cli[name] == getattr(config, name), name
    assert cli["lr"] == config.learning_rate
    assert (cli["max_grad_norm"] or None) == config.max_grad_norm  # 0 means "off" (None)
    assert cli["one_direction"] is (not config.bidirectional)
    assert cli["no_cache"] is (not config.cache)
    assert cli["position"] == contrastive.position
    assert cli["min_frequency"] == contrastive.min_frequency
    assert (cli["top_k"] or None) == contrastive.top_k  # 0 means "all" (None)


def test_train_help_is_the_trainer_configs_field_help() -> None:
    import typing
    from dataclasses import fields

    hints = typing.get_type_hints(train_command, include_extras=True)
    option = {"learning_rate": "lr", "epochs": "epochs", "beta": "beta", "seed": "seed"}
    helps = {f.name: f.metadata["help"] for f in fields(PreferenceConfig)}
    for name, help_text in helps.items():
        parameter = option.get(name, name)
        if parameter in hints and name not in ("bidirectional", "cache"):
            assert hints[parameter].__metadata__[0].help == help_text, name
    assert set(option) <= set(helps)


def test_compare_and_demo_options_default_to_the_compare_config() -> None:
    selection = SelectionConfig()
    for command, config in ((compare_command, CompareConfig()), (demo_command, DemoConfig())):
        cli = _defaults(command)
        assert tuple(cli["methods"].split(",")) == config.methods
        assert cli["multiplier"] == str(config.multiplier)
        assert cli["pair_policy"] == config.pair_policy
        assert (cli["model"], cli["sae"], cli["layer"]) == (config.model, config.sae, config.layer)
        assert cli["no_cache"] is (not config.shared_lower)
        assert cli["select_metric"] == selection.metric
        assert cli["select_grid"] == ",".join(f"{m:g}" for m in selection.multipliers)
        assert cli["max_nll_increase"] == selection.max_nll_increase
        assert cli["max_repetition"] == selection.max_repetition
        assert cli["fluency_prompts"] == selection.fluency_prompts
        assert cli["fluency_every_point"] is selection.fluency_every_point
        assert cli["allow_unsteered"] is selection.allow_unsteered
    assert _defaults(demo_command)["country"] == DemoConfig().country
    cli, config = _defaults(compare_command), CompareConfig()
    for name in ("test_fraction", "validation_fraction", "retrain"):
        assert cli[name] == getattr(config, name), name
    for name in ("epochs", "warmup_steps", "batch_size", "early_stopping_patience", "seed"):
        assert cli[name] == getattr(config.training, name), name
    assert cli["lr"] == config.training.learning_rate
    assert cli["questions"] == config.max_questions


def _helps(command: Callable[..., Any]) -> dict[str, str]:
    """Each option's help text, as the command declares it."""
    import typing

    hints = typing.get_type_hints(command, include_extras=True)
    return {
        name: hint.__metadata__[0].help
        for name, hint in hints.items()
        if hasattr(hint, "__metadata__")
    }


def test_every_config_field_explains_itself() -> None:
    from dataclasses import fields

    from yapo.evaluate.benchmark import MetricConfig
    from yapo.evaluate.mcq import McqConfig

    for config in (
        CompareConfig,
        DemoConfig,
        SelectionConfig,
        McqConfig,
        MetricConfig,
        PreferenceConfig,
    ):
        for item in fields(config):
            assert str(item.metadata.get("help", "")).strip(), f"{config.__name__}.{item.name}"


def test_compare_and_demo_help_is_the_configs_field_help() -> None:
    from dataclasses import fields

    selection = {f.name: f.metadata["help"] for f in fields(SelectionConfig)}
    compare = {f.name: f.metadata["help"] for f in fields(CompareConfig)}
    from_selection = {
        "select_grid": "multipliers",
        "select_metric": "metric",
        "max_nll_increase": "max_nll_increase",
        "max_repetition": "max_repetition",
        "fluency_prompts": "fluency_prompts",
        "fluency_every_point": "fluency_every_point",
        "allow_unsteered": "allow_unsteered",
    }
    from_compare = {name: name for name in ("methods", "pair_policy", "sae", "layer")}
    for command in (compare_command, demo_command):
        helps = _helps(command)
        for option, name in from_selection.items():
            assert helps[option] == selection[name], option
        for option, name in from_compare.items():
            assert helps[option] == compare[name], option
    helps = _helps(compare_command)
    for option, name in {
        "test_fraction": "test_fraction",
        "validation_fraction": "validation_fraction",
        "questions": "max_questions",
        "retrain": "retrain",
    }.items():
        assert helps[option] == compare[name], option
    country = next(f for f in fields(DemoConfig) if f.name == "country")
    assert _helps(demo_command)["country"] == country.metadata["help"]
