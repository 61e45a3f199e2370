"""Reading and writing SAEs in the formats people actually have.

References accepted by :func:`load_sae`:

* ``"default"`` — the SAE yapo ships for its embedded default model;
* a Gemma Scope ``params.npz`` file, or a folder holding one;
* a SAELens folder: ``cfg.json`` + ``sae_weights.safetensors`` (what :meth:`SAE.save`
  writes, so SAELens users can read our SAEs and we can read theirs);
* a Hub reference ``owner/repo/path/inside/repo``, e.g.
  ``google/gemma-scope-2b-pt-res/layer_15/width_65k/average_l0_68`` (a ``params.npz``
  or a SAELens folder at that path);
* ``saelens:RELEASE:SAE_ID`` — anything SAELens can load (needs ``pip install yapo[sae-lens]``).
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from yapo.errors import MismatchError, YapoError
from yapo.sae.model import SAE, Activation
from yapo.sae.saelens import SAELENS_CONFIG, SAELENS_WEIGHTS

GEMMA_SCOPE_PARAMS = "params.npz"
DEFAULT_SAE = "default"


def default_sae_folder() -> Path:
    """The packaged SAE of the embedded default model."""
    return Path(str(resources.files("yapo").joinpath("resources", "sae", "default")))


# ---------------------------------------------------------------- Gemma Scope
def load_gemma_scope_npz(path: str | Path, reference: str | None = None) -> SAE:
    """Read a Gemma Scope ``params.npz`` (JumpReLU; keys W_enc, W_dec, b_enc, b_dec, threshold)."""
    path = Path(path)
    try:
        with np.load(path) as params:
            arrays = {key: torch.from_numpy(np.asarray(params[key])) for key in params.files}
    except FileNotFoundError:
        raise YapoError(f"SAE file not found: {path}") from None
    except Exception as exc:
        raise YapoError(f"cannot read {path} as a Gemma Scope params.npz: {exc}") from exc
    missing = {"W_enc", "W_dec", "b_enc", "b_dec", "threshold"} - arrays.keys()
    if missing:
        raise YapoError(
            f"{path} is not a Gemma Scope SAE: missing arrays {sorted(missing)} "
            f"(found {sorted(arrays)})"
        )
    return SAE(
        arrays["W_enc"],
        arrays["b_enc"],
        arrays["W_dec"],
        arrays["b_dec"],
        activation="jumprelu",
        threshold=arrays["threshold"],
        metadata={"format": "gemma_scope"},
        reference=reference or str(path),
    )


# ------------------------------------------------------------------- SAELens
def _saelens_activation(cfg: dict[str, Any]) -> tuple[Activation, int | None]:
    architecture = str(cfg.get("architecture", "standard")).lower()
    act_fn = str(cfg.get("activation_fn_str", cfg.get("activation_fn", "relu"))).lower()
    kwargs = cfg.get("activation_fn_kwargs") or {}
    k = cfg.get("k", kwargs.get("k"))
    if architecture in ("jumprelu", "jumprelu_transcoder"):
        return "jumprelu", None
    if architecture == "topk" or act_fn == "topk":
        if k is None:
            raise YapoError("SAELens config says TopK but gives no k")
        return "topk", int(k)
    if architecture == "standard" and act_fn == "relu":
        return "relu", None
    raise YapoError(
        f"unsupported SAELens architecture {architecture!r} with activation {act_fn!r}; "
        "yapo supports jumprelu, standard (relu) and topk"
    )


def load_saelens_folder(folder: str | Path, reference: str | None = None) -> SAE:
    """Read ``cfg.json`` + ``sae_weights.safetensors`` (SAELens v4-v6 layouts)."""
    folder = Path(folder)
    cfg_path, weights_path = folder / SAELENS_CONFIG, folder / SAELENS_WEIGHTS
    for needed in (cfg_path, weights_path):
        if not needed.is_file():
            raise YapoError(f"{folder} is not a SAELens SAE folder: {needed.name} is missing")
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise YapoError(f"{cfg_path} is not valid JSON: {exc}") from exc
    try:
        weights = load_file(str(weights_path))
    except Exception as exc:
        raise YapoError(f"cannot read {weights_path}: {exc}") from exc
    normalize = cfg.get("normalize_activations") or "none"
    if normalize != "none":
        raise YapoError(
            f"{folder}: normalize_activations={normalize!r} is not supported; "
            "fold the scaling into the weights first"
        )
    activation, k = _saelens_activation(cfg)
    missing = {"W_enc", "W_dec", "b_enc", "b_dec"} - weights.keys()
    if missing:
        raise YapoError(f"{weights_path} lacks tensors {sorted(missing)}")
    threshold = weights.get("threshold")
    if threshold is None and "log_threshold" in weights:
        threshold = weights["log_threshold"].exp()
    metadata = dict(cfg.get("metadata") or {})
    for key in ("model_name", "hook_name", "hook_layer", "neuronpedia_id"):
        if key in cfg and key not in metadata:
            metadata[key] = cfg[key]
    metadata.update({k: v for k, v in (cfg.get("yapo") or {}).items()})
    return SAE(
        weights["W_enc"],
        weights["b_enc"],
        weights["W_dec"],
        weights["b_dec"],
        activation=activation,
        threshold=threshold,
        k=k,
        apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", False)),
        metadata=metadata,
        reference=reference or str(folder),
    )


# ----------------------------------------------------------------------- Hub
def load_from_hub(reference: str, revision: str | None = None) -> SAE:
    """``owner/repo/path`` on the Hub: a ``params.npz`` there, else a SAELens folder."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    parts = reference.strip("/").split("/")
    if len(parts) < 2:
        raise YapoError(f"not a Hub SAE reference: {reference!r} (expected owner/repo[/path])")
    repo_id, subfolder = "/".join(parts[:2]), "/".join(parts[2:])

    def fetch(name: str) -> Path:
        filename = f"{subfolder}/{name}" if subfolder else name
        return Path(hf_hub_download(repo_id, filename, revision=revision))

    try:
        try:
            return load_gemma_scope_npz(fetch(GEMMA_SCOPE_PARAMS), reference=reference)
        except EntryNotFoundError:
            cfg = fetch(SAELENS_CONFIG)
            fetch(SAELENS_WEIGHTS)
            return load_saelens_folder(cfg.parent, reference=reference)
    except YapoError:
        raise
    except Exception as exc:
        raise YapoError(
            f"cannot fetch SAE {reference!r} from the Hugging Face Hub: {exc}\n"
            "(offline? download it once, or pass a local params.npz / SAELens folder)"
        ) from exc


def load_from_saelens(release: str, sae_id: str) -> SAE:
    """Load anything SAELens knows (``pip install yapo[sae-lens]``) and convert it."""
    try:
        from sae_lens import SAE as LensSAE
    except ImportError as exc:
        raise YapoError(
            "loading SAELens releases needs the optional extra: pip install 'yapo[sae-lens]'"
        ) from exc
    loaded = LensSAE.from_pretrained(release, sae_id, device="cpu")
    lens = loaded[0] if isinstance(loaded, tuple) else loaded
    cfg = lens.cfg.to_dict() if hasattr(lens.cfg, "to_dict") else dict(vars(lens.cfg))
    activation, k = _saelens_activation(cfg)
    state = lens.state_dict()
    threshold = state.get("threshold")
    if threshold is None and "log_threshold" in state:
        threshold = state["log_threshold"].exp()
    return SAE(
        state["W_enc"],
        state["b_enc"],
        state["W_dec"],
        state["b_dec"],
        activation=activation,
        threshold=threshold,
        k=k,
        apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", False)),
        metadata={"format": "saelens", "release": release, "sae_id": sae_id},
        reference=f"saelens:{release}:{sae_id}",
    )


# --------------------------------------------------------------- dispatcher
def load_sae(
    reference: str | Path,
    *,
    model: Any | None = None,
    device: str | torch.device | None = None,
    revision: str | None = None,
) -> SAE:
    """Load an SAE from any supported reference (see module docstring).

    With ``model`` given, an SAE whose input size differs from the model's hidden size
    is refused. The SAE is frozen (``requires_grad=False``) and kept in float32.
    """
    ref = str(reference)
    path = Path(ref).expanduser()
    if ref == DEFAULT_SAE:
        folder = default_sae_folder()
        if not (folder / SAELENS_CONFIG).is_file():
            raise YapoError(
                "this installation has no packaged default SAE; train one with "
                "`yapo sae train` and pass its folder"
            )
        sae = load_saelens_folder(folder, reference=DEFAULT_SAE)
    elif ref.startswith(("saelens:", "sae_lens:")):
        try:
            _, release, sae_id = ref.split(":", 2)
        except ValueError:
            raise YapoError(f"expected saelens:RELEASE:SAE_ID, got {ref!r}") from None
        sae = load_from_saelens(release, sae_id)
    elif path.is_file() and path.suffix == ".npz":
        sae = load_gemma_scope_npz(path)
    elif path.is_dir() and (path / SAELENS_CONFIG).exists():
        sae = load_saelens_folder(path)
    elif path.is_dir() and (path / GEMMA_SCOPE_PARAMS).exists():
        sae = load_gemma_scope_npz(path / GEMMA_SCOPE_PARAMS, reference=str(path))
    elif path.exists():
        raise YapoError(
            f"{path} is not an SAE: expected a Gemma Scope params.npz or a folder with "
            f"{SAELENS_CONFIG} + {SAELENS_WEIGHTS}"
        )
    elif ref.startswith((".", "/", "~")) or ref.count("/") < 1:
        raise YapoError(f"SAE not found: {ref}")
    else:
        sae = load_from_hub(ref, revision=revision)
    sae.requires_grad_(False)
    if device is not None:
        sae.to(device)
    if model is not None:
        check_sae_fits_model(sae, model)
    return sae


def check_sae_fits_model(sae: SAE, model: Any) -> None:
    """Refuse an SAE whose input size is not the model's hidden size."""
    from yapo.models.layers import hidden_size

    d_model = hidden_size(model)
    if sae.d_in != d_model:
        raise MismatchError(
            f"SAE {sae.reference or ''} reads activations of size {sae.d_in}, but the model's "
            f"hidden size is {d_model}: this SAE was trained for another model"
        )
