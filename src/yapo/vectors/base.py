"""What every steering vector shares: metadata, fit checks, ``apply`` and ``save``."""

from __future__ import annotations

import contextlib
import datetime as _dt
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from safetensors.torch import save_file
from torch import Tensor, nn

from yapo._finite import check_finite
from yapo._io import atomic_dir, write_json, write_text
from yapo._version import __version__
from yapo.errors import MismatchError, YapoError
from yapo.intervene import Positions, add_to_layer
from yapo.models.fingerprint import model_fingerprint
from yapo.models.layers import hidden_size, num_layers
from yapo.vectors.edits import Edit

VECTOR_FILE = "vector.safetensors"
CONFIG_FILE = "config.json"


@dataclass
class VectorMeta:
    """Everything saved next to the numbers of a vector (``config.json``)."""

    method: str
    layer: int
    d_model: int
    model: str = "unknown"
    model_fingerprint: dict[str, Any] | None = None
    d_sae: int | None = None
    sae_reference: str | None = None
    sae_checksum: str | None = None
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    version: str = __version__
    created: str = field(
        default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VectorMeta:
        """Read a saved config; wrong types are a :class:`YapoError`, not a traceback."""
        if not isinstance(data, dict):
            raise YapoError(f"vector config must be a JSON object, got {type(data).__name__}")
        known = set(cls.__dataclass_fields__)
        missing = {"method", "layer", "d_model"} - data.keys()
        if missing:
            raise YapoError(f"vector config lacks {sorted(missing)}")
        from yapo.vectors.meta_check import check_meta_types

        check_meta_types(data)
        return cls(**{k: v for k, v in data.items() if k in known})


class SteeringVector(ABC):
    """A vector that edits the residual stream at one layer.

    Subclasses define :meth:`delta`; everything else (fit checks, hooks, saving) is here.
    """

    kind: str
    vector: Tensor
    meta: VectorMeta
    #: How ``vector`` changes the stream; the same object kind the trainer steered with.
    edit: Edit
    #: Refuse models whose weights differ from the training model's (see
    #: :mod:`yapo.models.fingerprint`); ``False`` accepts fine-tuned siblings.
    strict_model: bool = True

    @property
    def layer(self) -> int:
        return self.meta.layer

    @abstractmethod
    def delta(self, hidden: Tensor, multiplier: float = 1.0, direction: int = 1) -> Tensor:
        """The change ``h' - h`` for hidden states ``h``, in ``h``'s dtype and device."""

    def check_fits(self, model: nn.Module) -> None:
        """Refuse, with the reason, a model this vector was not made for."""
        d_model = hidden_size(model)
        if self.meta.d_model != d_model:
            raise MismatchError(
                f"this {self.meta.method} vector was made for a model with hidden size "
                f"{self.meta.d_model} ({self.meta.model}); this model's is {d_model}"
            )
        n = num_layers(model)
        if not -n <= self.layer < n:
            raise MismatchError(
                f"this vector steers layer {self.layer} but the model has only {n} blocks "
                f"(valid 0..{n - 1})"
            )
        saved = self.meta.model_fingerprint
        if saved:
            from yapo.models.fingerprint import other_model_allowed, weights_problem

            current = model_fingerprint(model)
            diffs = [
                f"{key} {saved[key]} vs {current[key]}"
                for key in ("model_type", "hidden_size", "num_layers")
                if key in saved and saved[key] != current.get(key)
            ]
            weights = weights_problem(saved, current)
            if not diffs and weights and self.strict_model and not other_model_allowed():
                raise MismatchError(
                    f"this vector was trained on {self.meta.model}, another model than this "
                    f"one: {weights}; for a fine-tuned sibling pass strict_model=False "
                    "(load_vector), --allow-other-model, or set YAPO_ALLOW_OTHER_MODEL=1"
                )
            if diffs:
                raise MismatchError(
                    f"this vector was trained on {self.meta.model} and does not fit this model "
                    f"({'; '.join(diffs)}; vector vs model)"
                )

    @contextlib.contextmanager
    def apply(
        self,
        model: nn.Module,
        multiplier: float = 1.0,
        direction: int = 1,
        positions: Positions = "all",
    ) -> Iterator[SteeringVector]:
        """Steer ``model`` inside a ``with`` block: ``h' = h + delta(h; d·λ)``.

        ``direction`` is d in {-1, +1} of the paper (-1 steers away from the behaviour);
        ``multiplier`` is λ. Hooks are removed on exit, also when the body raises.
        """
        if direction not in (-1, 1):
            raise YapoError(f"direction must be +1 or -1, got {direction!r}")
        check_finite(self.vector, f"this {self.meta.method} vector")
        self.check_fits(model)
        with add_to_layer(
            model,
            self.layer,
            lambda h: self.delta(h, multiplier=multiplier, direction=direction),
            positions,
        ):
            yield self

    def _extra_tensors(self) -> dict[str, Tensor]:
        return {}

    def save(self, folder: str | Path, *, metrics: dict[str, Any] | None = None) -> Path:
        """Write ``vector.safetensors`` + ``config.json`` atomically into ``folder``.

        A ``README.md`` model card (YAML front matter; ``metrics`` included) is written
        too, so that the folder can be uploaded to the Hugging Face Hub as it is.
        """
        from yapo.vectors.card import CARD_FILE, render_card

        tensors = {"vector": self.vector.detach().float().cpu().contiguous()}
        check_finite(tensors["vector"], f"the {self.meta.method} vector to save in {folder}")
        tensors.update(self._extra_tensors())
        config = {"kind": self.kind, **self.meta.to_json()}
        with atomic_dir(folder) as tmp:
            save_file(tensors, str(tmp / VECTOR_FILE))
            write_json(tmp / CONFIG_FILE, config)
            write_text(tmp / CARD_FILE, render_card(self, metrics))
        return Path(folder)

    def __repr__(self) -> str:
        nnz = int((self.vector != 0).sum())
        return (
            f"{type(self).__name__}(method={self.meta.method}, layer={self.layer}, "
            f"size={self.vector.numel()}, nonzero={nnz}, norm={float(self.vector.norm()):.4g})"
        )
