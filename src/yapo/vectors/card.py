"""The ``README.md`` model card in every vector folder, so a folder can go to the Hub as is.

The YAML front matter carries what a reader (or a search on the Hub) needs to use the
vector correctly: the base model, the layer *and what "layer" means* (the output of
0-based decoder block L), the SAE it lives in (reference and checksum: a sparse vector
is meaningless through another SAE), the method and objective, the training data and
any metrics. Standard Hub keys (``base_model``, ``library_name``, ``tags``) are used
where they exist; everything else sits under ``yapo:``, which the Hub keeps untouched.
The card is rendered with ``huggingface_hub``'s own ``ModelCardData``; the same library
fetches vector folders back from the Hub (:func:`download_vector`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from yapo._io import write_text
from yapo.errors import YapoError

if TYPE_CHECKING:
    from yapo.vectors.base import SteeringVector

CARD_FILE = "README.md"
LAYER_CONVENTION = (
    "output of decoder block L (0-based) = HF hidden_states[L+1] = TransformerLens "
    "blocks.L.hook_resid_post = llama.cpp direction.L"
)
OBJECTIVES = {
    "bipo": "bi-directional DPO on preference pairs (BiPO); dense: h' = h + d·λ·v",
    "yapo": (
        "bi-directional DPO on preference pairs in SAE latent space (YaPO): "
        "h' = Dec(ReLU(Enc(h) + d·λ·v)) + (h - Dec(Enc(h)))"
    ),
    "caa": "contrastive activation addition: mean of h(chosen) - h(rejected); h' = h + d·λ·v",
    "sas": (
        "sparse activation steering: contrastive mean of SAE codes, sparsified, applied "
        "through the YaPO transform"
    ),
}
# What the embedded model is on the Hub (it is shipped as a quantized GGUF of this model).
_KNOWN_BASES = {"default": "google/gemma-3-270m"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_DATA_KEYS = ("data", "train_data", "dataset", "train_path")


def _base_model(model: str) -> str | None:
    if model in _KNOWN_BASES:
        return _KNOWN_BASES[model]
    return model if _HUB_ID.match(model) and not Path(model).exists() else None


def _clean(value: Any) -> Any:
    """Keep YAML-friendly values only (the front matter must stay parseable)."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def card_metadata(vector: SteeringVector, metrics: dict[str, Any] | None = None) -> dict[str, Any]:
    """The front matter as a dict (standard Hub keys plus a ``yapo`` section)."""
    meta = vector.meta
    hyper = dict(meta.hyperparameters)
    found_metrics = metrics if metrics is not None else hyper.get("metrics")
    data = next((hyper[k] for k in _DATA_KEYS if hyper.get(k)), None)
    yapo: dict[str, Any] = {
        "kind": vector.kind,
        "method": meta.method,
        "objective": OBJECTIVES.get(meta.method.split("-")[0], meta.method),
        "model": meta.model,
        "model_fingerprint": meta.model_fingerprint,
        "layer": meta.layer,
        "layer_convention": LAYER_CONVENTION,
        "d_model": meta.d_model,
        "training_data": data,
        "hyperparameters": {k: v for k, v in hyper.items() if k != "metrics"},
        "metrics": found_metrics,
        "version": meta.version,
        "created": meta.created,
    }
    if meta.sae_reference or meta.d_sae:
        yapo["sae"] = {
            "reference": meta.sae_reference,
            "checksum": meta.sae_checksum,
            "d_sae": meta.d_sae,
        }
    card: dict[str, Any] = {
        "library_name": "yapo",
        "tags": ["yapo", "steering-vector", meta.method],
        "yapo": yapo,
    }
    base = _base_model(meta.model)
    if base:
        card["base_model"] = base
    return _clean(card)  # type: ignore[no-any-return]


def _body(vector: SteeringVector, metadata: dict[str, Any]) -> str:
    meta = vector.meta
    yapo = metadata["yapo"]
    lines = [
        f"# {meta.method} steering vector for {meta.model}, layer {meta.layer}",
        "",
        f"A {vector.kind} steering vector made with [yapo](https://pypi.org/project/yapo/).",
        f"Objective: {yapo['objective']}.",
        "",
        f"- Layer: {meta.layer} ({LAYER_CONVENTION})",
        f"- Hidden size: {meta.d_model}",
    ]
    if "sae" in yapo:
        sae = yapo["sae"]
        lines.append(
            f"- SAE: `{sae.get('reference')}` (checksum `{sae.get('checksum')}`, "
            f"{sae.get('d_sae')} latents); the vector is only meaningful through this SAE"
        )
    if yapo.get("training_data"):
        lines.append(f"- Training data: `{yapo['training_data']}`")
    for name, value in (yapo.get("metrics") or {}).items():
        lines.append(f"- {name}: {value}")
    lines += [
        "",
        "## Use",
        "",
        "```bash",
        "yapo generate 'Your prompt' --model MODEL --vector OWNER/NAME --multiplier 1.0",
        "```",
        "",
        "```python",
        "import yapo",
        'vector = yapo.load_vector("OWNER/NAME")',
        "with vector.apply(model, multiplier=1.0):",
        "    ...",
        "```",
    ]
    if vector.kind == "dense" and meta.layer >= 1:
        lines += [
            "",
            "For llama.cpp: `yapo export OWNER/NAME --format llama.cpp --out vector.gguf`, then",
            "`llama-cli -m MODEL.gguf --control-vector vector.gguf`.",
        ]
    lines += ["", "`config.json` + `vector.safetensors` hold the vector; no pickle.", ""]
    return "\n".join(lines)


def render_card(vector: SteeringVector, metrics: dict[str, Any] | None = None) -> str:
    """The full ``README.md``: YAML front matter (``huggingface_hub``) and a short body."""
    from huggingface_hub import ModelCardData

    metadata = card_metadata(vector, metrics)
    yaml = ModelCardData(**metadata).to_yaml()
    return f"---\n{yaml}\n---\n\n{_body(vector, metadata)}"


def write_card(
    folder: str | Path, vector: SteeringVector, metrics: dict[str, Any] | None = None
) -> Path:
    """(Re)write ``folder/README.md``, e.g. after an evaluation adds metrics."""
    path = Path(folder) / CARD_FILE
    write_text(path, render_card(vector, metrics))
    return path


def read_card_metadata(folder: str | Path) -> dict[str, Any]:
    """The front matter of ``folder/README.md`` as a dict (empty when there is no card)."""
    path = Path(folder) / CARD_FILE
    if not path.is_file():
        return {}
    from huggingface_hub import ModelCard

    return dict(ModelCard.load(path).data.to_dict())


# ------------------------------------------------------------------ the Hub side
_HUB_REFERENCE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(/[\w./-]+)?(@[\w./-]+)?$")


def is_hub_reference(name: str) -> bool:
    """``owner/name[/folder/in/repo][@revision]`` that is not an existing local path."""
    if name.startswith((".", "/", "~")) or Path(name).expanduser().exists():
        return False
    return bool(_HUB_REFERENCE.match(name))


def download_vector(reference: str) -> Path:
    """Fetch a vector folder from a Hub repo with ``huggingface_hub.snapshot_download``.

    Only the vector's own files are downloaded. ``HF_HUB_OFFLINE=1`` and the usual
    ``HF_HUB_CACHE`` / ``HF_HOME`` settings are honoured, so a vector fetched once is
    found again without the network.
    """
    from huggingface_hub import snapshot_download

    repo_path, _, revision = reference.partition("@")
    parts = repo_path.strip("/").split("/")
    repo_id, subfolder = "/".join(parts[:2]), "/".join(parts[2:])
    prefix = f"{subfolder}/" if subfolder else ""
    patterns = [f"{prefix}{name}" for name in ("config.json", "vector.safetensors", CARD_FILE)]
    try:
        snapshot = snapshot_download(
            repo_id, revision=revision or None, allow_patterns=patterns, library_name="yapo"
        )
    except Exception as exc:
        raise YapoError(
            f"vector {reference!r} is not a local path and cannot be fetched from the Hugging "
            f"Face Hub: {exc}\n(offline? download it once, or give a local vector folder)"
        ) from exc
    folder = Path(str(snapshot)) / subfolder
    if not (folder / "config.json").is_file():
        raise YapoError(f"Hub repo {repo_id!r} has no vector folder at {subfolder or 'its root'}")
    return folder
