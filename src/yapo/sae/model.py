"""A sparse autoencoder over one layer's residual stream.

Encode: ``pre = (x - b_dec·[apply_b_dec_to_input]) @ W_enc + b_enc`` followed by one of

* ``jumprelu`` — ``relu(pre) · (pre > threshold)`` (Gemma Scope);
* ``relu`` — ``relu(pre)`` (the "standard" SAELens architecture);
* ``topk`` — keep the ``k`` largest pre-activations per token, then ReLU.

Decode: ``s @ W_dec + b_dec``. All maths runs in float32 whatever the model's dtype:
activations are cast up on the way in, and callers cast results back down.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from yapo.errors import MismatchError, YapoError
from yapo.sae.saelens import save_saelens_folder

Activation = Literal["jumprelu", "relu", "topk"]
ACTIVATIONS: tuple[Activation, ...] = ("jumprelu", "relu", "topk")


class SAE(nn.Module):
    """Weights and maths of one SAE. Parameters are float32 and trainable by default."""

    W_enc: nn.Parameter
    W_dec: nn.Parameter
    b_enc: nn.Parameter
    b_dec: nn.Parameter
    threshold: nn.Parameter

    def __init__(
        self,
        W_enc: Tensor,
        b_enc: Tensor,
        W_dec: Tensor,
        b_dec: Tensor,
        *,
        activation: Activation = "jumprelu",
        threshold: Tensor | None = None,
        k: int | None = None,
        apply_b_dec_to_input: bool = False,
        metadata: dict[str, Any] | None = None,
        reference: str | None = None,
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise YapoError(f"unknown SAE activation {activation!r}; use one of {ACTIVATIONS}")
        d_in, d_sae = W_enc.shape
        expected = {
            "b_enc": (b_enc, (d_sae,)),
            "W_dec": (W_dec, (d_sae, d_in)),
            "b_dec": (b_dec, (d_in,)),
        }
        if threshold is not None:
            expected["threshold"] = (threshold, (d_sae,))
        for name, (tensor, shape) in expected.items():
            if tuple(tensor.shape) != shape:
                raise YapoError(
                    f"SAE weight {name} has shape {tuple(tensor.shape)}, expected {shape} "
                    f"for W_enc of shape {(d_in, d_sae)}"
                )
        if activation == "jumprelu" and threshold is None:
            raise YapoError("a JumpReLU SAE needs a threshold tensor")
        if activation == "topk" and (k is None or not 0 < k <= d_sae):
            raise YapoError(f"a TopK SAE needs 0 < k <= d_sae={d_sae}, got k={k}")

        def param(t: Tensor) -> nn.Parameter:
            return nn.Parameter(t.detach().to(torch.float32).clone())

        self.W_enc = param(W_enc)
        self.b_enc = param(b_enc)
        self.W_dec = param(W_dec)
        self.b_dec = param(b_dec)
        self.threshold = param(threshold if threshold is not None else torch.zeros(d_sae))
        self.activation: Activation = activation
        self.k = k
        self.apply_b_dec_to_input = apply_b_dec_to_input
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.reference = reference
        self._checksum: str | None = None

    # ----------------------------------------------------------------- sizes
    @property
    def d_in(self) -> int:
        return int(self.W_enc.shape[0])

    @property
    def d_sae(self) -> int:
        return int(self.W_enc.shape[1])

    # ------------------------------------------------------------------ maths
    def _input(self, x: Tensor) -> Tensor:
        x = x.to(device=self.W_enc.device, dtype=torch.float32)
        if x.shape[-1] != self.d_in:
            raise MismatchError(
                f"activations have size {x.shape[-1]} but this SAE expects d_in={self.d_in}"
            )
        return x - self.b_dec if self.apply_b_dec_to_input else x

    def pre_activations(self, x: Tensor) -> Tensor:
        """``x @ W_enc + b_enc`` in float32 (after the optional b_dec shift)."""
        return self._input(x) @ self.W_enc + self.b_enc

    def activate(self, pre: Tensor, latents: Tensor | None = None) -> Tensor:
        """Apply the activation to pre-activations (of ``latents`` only, if given)."""
        if self.activation == "relu":
            return torch.relu(pre)
        if self.activation == "jumprelu":
            threshold = self.threshold if latents is None else self.threshold[latents]
            return torch.relu(pre) * (pre > threshold).to(pre.dtype)
        if latents is not None:
            raise YapoError("a TopK code depends on every latent; encode all of them")
        assert self.k is not None
        values, indices = pre.topk(self.k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, indices, torch.relu(values))

    def encode(self, x: Tensor) -> Tensor:
        """Sparse codes ``s >= 0`` of shape ``(..., d_sae)``, float32."""
        return self.activate(self.pre_activations(x))

    def encode_latents(self, x: Tensor, latents: Tensor) -> Tensor:
        """Codes of only the given latents, without computing the others.

        Exact for JumpReLU and ReLU SAEs, whose latents are independent; TopK needs the
        full encode because whether a latent survives depends on all the others.
        """
        if self.activation == "topk":
            return self.encode(x)[..., latents]
        pre = self._input(x) @ self.W_enc[:, latents] + self.b_enc[latents]
        return self.activate(pre, latents)

    def decode(self, codes: Tensor) -> Tensor:
        """``codes @ W_dec + b_dec`` in float32."""
        return codes.to(torch.float32) @ self.W_dec + self.b_dec

    def forward(self, x: Tensor) -> Tensor:
        """Reconstruction ``Dec(Enc(x))``."""
        return self.decode(self.encode(x))

    # ------------------------------------------------------------ identity
    def checksum(self) -> str:
        """SHA-256 of the weights and activation settings (first 16 hex digits).

        Saved with every sparse vector so that applying it through a different SAE,
        even one of the same shape, is refused instead of silently meaning something
        else. Cached: weights of a loaded SAE are not expected to change (call
        :meth:`invalidate_checksum` after training).
        """
        if self._checksum is None:
            digest = hashlib.sha256()
            digest.update(f"{self.activation}|{self.k}|{self.apply_b_dec_to_input}".encode())
            for name in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold"):
                tensor = getattr(self, name).detach().to("cpu", torch.float32).contiguous()
                digest.update(name.encode())
                digest.update(tensor.numpy().tobytes())
            self._checksum = digest.hexdigest()[:16]
        return self._checksum

    def invalidate_checksum(self) -> None:
        self._checksum = None

    def neuronpedia_id(self) -> str | None:
        """Neuronpedia id (``model/source``) when the SAE's metadata names one."""
        value = self.metadata.get("neuronpedia_id")
        return str(value) if value else None

    def save(self, folder: str | Path, dtype: torch.dtype = torch.float32) -> Path:
        """Write the SAELens layout (``cfg.json`` + ``sae_weights.safetensors``)."""
        return save_saelens_folder(self, folder, dtype=dtype)

    def __repr__(self) -> str:
        k = f", k={self.k}" if self.activation == "topk" else ""
        return f"SAE(d_in={self.d_in}, d_sae={self.d_sae}, activation={self.activation}{k})"
