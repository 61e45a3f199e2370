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

from yapo._io import atomic_dir, write_json
from yapo._version import __version__
from yapo.errors import MismatchError, YapoError
from yapo.hooks import Positions, add_to_layer
from yapo.models.layers import hidden_size, model_fingerprint, num_layers

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
        known = set(cls.__dataclass_fields__)
        missing = {"method", "layer", "d_model"} - data.keys()
        if missing:
            raise YapoError(f"vector config lacks {sorted(missing)}")
        return cls(**{k: v for k, v in data.items() if k in known})


class SteeringVector(ABC):
    """A vector that edits the residual stream at one layer.

    Subclasses define :meth:`delta`; everything else (fit checks, hooks, saving) is here.
    """

    kind: str
    vector: Tensor
    meta: VectorMeta

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
            current = model_fingerprint(model)
            diffs = [
                f"{key} {saved[key]} vs {current[key]}"
                for key in ("model_type", "hidden_size", "num_layers")
                if key in saved and saved[key] != current.get(key)
            ]
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

    def save(self, folder: str | Path) -> Path:
        """Write ``vector.safetensors`` + ``config.json`` atomically into ``folder``."""
        tensors = {"vector": self.vector.detach().float().cpu().contiguous()}
        tensors.update(self._extra_tensors())
        config = {"kind": self.kind, **self.meta.to_json()}
        with atomic_dir(folder) as tmp:
            save_file(tensors, str(tmp / VECTOR_FILE))
            write_json(tmp / CONFIG_FILE, config)
        return Path(folder)

    def __repr__(self) -> str:
        nnz = int((self.vector != 0).sum())
        return (
            f"{type(self).__name__}(method={self.meta.method}, layer={self.layer}, "
            f"size={self.vector.numel()}, nonzero={nnz}, norm={float(self.vector.norm()):.4g})"
        )
