"""Shared fixtures: tiny random models of every supported architecture, tiny tokenizers, SAEs.

Everything is built from configs in memory, so the suite never touches the network.
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    AutoModelForCausalLM,
    Gemma2Config,
    Gemma3TextConfig,
    GPT2Config,
    GPTNeoXConfig,
    LlamaConfig,
    MistralConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen3Config,
)

from yapo.sae import SAE

torch.set_num_threads(1)

VOCAB = 128
HIDDEN = 32
LAYERS = 4

_COMMON: dict[str, Any] = {
    "vocab_size": VOCAB,
    "hidden_size": HIDDEN,
    "intermediate_size": 64,
    "num_hidden_layers": LAYERS,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
}

CONFIGS: dict[str, Callable[[], Any]] = {
    "llama": lambda: LlamaConfig(**_COMMON),
    "mistral": lambda: MistralConfig(**_COMMON),
    "qwen2": lambda: Qwen2Config(**_COMMON),
    "qwen3": lambda: Qwen3Config(**_COMMON, head_dim=8),
    "gemma2": lambda: Gemma2Config(**_COMMON, head_dim=8),
    "gemma3": lambda: Gemma3TextConfig(**_COMMON, head_dim=8),
    "gpt2": lambda: GPT2Config(
        vocab_size=VOCAB, n_embd=HIDDEN, n_layer=LAYERS, n_head=4, bos_token_id=1, eos_token_id=2
    ),
    "gpt_neox": lambda: GPTNeoXConfig(
        **{k: v for k, v in _COMMON.items() if k != "num_key_value_heads"}
    ),
}
ARCHITECTURES = list(CONFIGS)


_EXIT_STATUS: list[int] = []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Free what the tests left behind while every extension module is still alive."""
    del session
    _EXIT_STATUS.append(int(exitstatus))
    gc.collect()


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Leave with pytest's exit status once everything is reported, skipping interpreter teardown.

    In CI the suite once passed completely and the process still died afterwards with
    "terminate called without an active exception" (SIGABRT, exit 134): a native thread
    of a third-party extension (Arrow, loaded by ``datasets`` and lm-eval, is the known
    culprit: apache/arrow#34314, huggingface/datasets#7566) asked for the GIL after the
    interpreter had begun finalizing. Nothing of the tests runs in that teardown, so the
    process ends here, after the report and every plugin's own ``unconfigure``.
    """
    del config
    if not _EXIT_STATUS:  # collection-only or aborted sessions: the normal exit path
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_EXIT_STATUS[-1])


def make_model(arch: str = "llama", seed: int = 0) -> PreTrainedModel:
    torch.manual_seed(seed)
    config = CONFIGS[arch]()
    if arch == "gemma2":
        config._attn_implementation = "eager"
    model = AutoModelForCausalLM.from_config(config)
    model.eval()
    model.requires_grad_(False)
    return model


def make_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer over a small fixed vocabulary (ids < VOCAB)."""
    words = ["<pad>", "<bos>", "<eos>", "<unk>"] + [f"w{i}" for i in range(VOCAB - 4)]
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    from tokenizers import processors

    core.post_processor = processors.TemplateProcessing(
        single="<bos> $A", special_tokens=[("<bos>", 1)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
    )
    return tokenizer


def make_sae(
    activation: str = "jumprelu", d_in: int = HIDDEN, d_sae: int = 96, seed: int = 0, k: int = 8
) -> SAE:
    """A random SAE whose latents actually fire on tiny-model activations."""
    g = torch.Generator().manual_seed(seed)
    W_enc = torch.randn(d_in, d_sae, generator=g) / d_in**0.5
    W_dec = torch.randn(d_sae, d_in, generator=g) / d_sae**0.5
    b_enc = torch.randn(d_sae, generator=g) * 0.1
    b_dec = torch.randn(d_in, generator=g) * 0.1
    threshold = torch.rand(d_sae, generator=g) * 0.3 if activation == "jumprelu" else None
    return SAE(
        W_enc,
        b_enc,
        W_dec,
        b_dec,
        activation=activation,  # type: ignore[arg-type]
        threshold=threshold,
        k=k if activation == "topk" else None,
        reference=f"random-{activation}-{seed}",
    )


@pytest.fixture
def tiny_model() -> PreTrainedModel:
    return make_model("llama")


@pytest.fixture
def tokenizer() -> PreTrainedTokenizerFast:
    return make_tokenizer()


@pytest.fixture
def saved_model_dir(tmp_path: Path) -> Path:
    """A tiny Llama and its tokenizer written with save_pretrained (a 'local folder' model)."""
    folder = tmp_path / "tiny-llama"
    make_model("llama").save_pretrained(folder)
    make_tokenizer().save_pretrained(folder)
    return folder
