"""A dense vector seen in SAE space, and two vectors compared latent by latent.

BiPO learns a dense residual-stream vector; YaPO learns coordinates in an SAE's latent
space. The paper's limitations section proposes comparing them feature by feature; for
that a dense vector ``v`` (size ``d_model``) needs SAE coordinates. Two complementary
views are given:

* **Encoder direction** ``v @ W_enc``: how much adding ``v`` to the residual stream raises
  (or lowers) each latent's pre-activation. Exact and linear, but it answers "which
  latents does ``v`` excite", which for a non-orthogonal dictionary spreads over many
  correlated latents.
* **Decoder fit**: coefficients ``c`` with ``c @ W_dec ≈ v`` — "which latents, added
  through the decoder as YaPO adds them, build ``v``". Non-negative least squares
  (``c ≥ 0``) matches how YaPO's positive entries act (``u⁺ @ W_dec``); ``signed=True``
  also allows removing latents (``c = c⁺ - c⁻``, both ``≥ 0``), which is how YaPO's
  negative entries act when the latent is active. With ``d_sae > d_model`` the system is
  underdetermined, so a small L1 weight picks the sparse solution and a final NNLS on
  the chosen latents removes its shrinkage (:func:`decoder_fit`); a vector really built
  from a few decoder rows comes back as those rows with their weights.

The solver is accelerated projected gradient (FISTA with restarts) in torch: it scales
to 65k-latent SAEs on CPU or GPU, where active-set solvers (``scipy.optimize.nnls``)
need the dense 65k x 2k problem in float64 and hundreds of refactorisations.

:func:`compare_vectors` puts two vectors (dense or sparse, any mix) in the same SAE
coordinates and reports the cosine of those coordinates, the cosine of the
residual-stream directions, and the overlap of their top latents.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

from yapo.errors import MismatchError, YapoError
from yapo.sae.model import SAE
from yapo.vectors.base import SteeringVector
from yapo.vectors.dense import DenseVector
from yapo.vectors.sparse import SparseVector

Coordinates = Literal["nnls", "signed", "encoder"]
COORDINATES: tuple[Coordinates, ...] = ("nnls", "signed", "encoder")
DEFAULT_SPARSITY = 0.01


def encoder_direction(sae: SAE, vector: Tensor) -> Tensor:
    """``vector @ W_enc``: the change of every latent's pre-activation per unit of ``vector``."""
    _check_width(sae, vector)
    with torch.no_grad():
        return vector.to(sae.W_enc.device, torch.float32) @ sae.W_enc


def _check_width(sae: SAE, vector: Tensor) -> None:
    if vector.ndim != 1 or vector.numel() != sae.d_in:
        raise MismatchError(
            f"a dense vector of shape {tuple(vector.shape)} cannot be projected into an SAE "
            f"that reads activations of size {sae.d_in}"
        )


@dataclass
class DecoderFit:
    """Coefficients ``c`` (``(d_sae,)``) with ``c @ W_dec ≈ v``, and how well they fit."""

    coefficients: Tensor
    residual_norm: float
    relative_residual: float
    iterations: int
    signed: bool
    sparsity: float

    @property
    def nonzero(self) -> int:
        return int((self.coefficients != 0).sum())

    def summary(self) -> dict[str, Any]:
        return {
            "residual_norm": self.residual_norm,
            "relative_residual": self.relative_residual,
            "iterations": self.iterations,
            "signed": self.signed,
            "sparsity": self.sparsity,
            "nonzero": self.nonzero,
        }


def _top_singular_value_squared(matrix: Tensor, iterations: int = 100) -> float:
    """``||M||_2^2`` by power iteration on ``M^T M`` (cheap for a 65k x 2k decoder)."""
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(matrix.shape[1], generator=g).to(matrix)
    x = x / x.norm()
    value = 0.0
    for _ in range(iterations):
        y = matrix.T @ (matrix @ x)
        value = float(y.norm())
        if value == 0.0:
            return 0.0
        x = y / value
    return value


def nnls(
    dictionary: Tensor,
    target: Tensor,
    *,
    l1: float = 0.0,
    max_iter: int = 3000,
    tol: float = 1e-7,
    init: Tensor | None = None,
) -> tuple[Tensor, int]:
    """``argmin_{c ≥ 0} ½||c @ dictionary - target||² + l1·Σc`` (rows of ``dictionary`` are atoms).

    FISTA (accelerated projected gradient) with gradient-based restarts, stopped when the
    relative change of ``c`` falls below ``tol``. Returns ``(c, iterations)``.
    """
    if l1 < 0:
        raise YapoError(f"l1 must be >= 0, got {l1}")
    A = dictionary.to(torch.float32)
    b = target.to(A.device, torch.float32)
    lipschitz = _top_singular_value_squared(A)
    if lipschitz == 0.0:
        return torch.zeros(A.shape[0], device=A.device), 0
    step = 1.0 / (lipschitz * 1.01)  # power iteration approaches ||A||² from below
    c = torch.zeros(A.shape[0], device=A.device) if init is None else init.to(A).clone()
    y, t = c.clone(), 1.0
    iterations = 0
    for iterations in range(1, max_iter + 1):  # noqa: B007 - the count is returned
        grad = (y @ A - b) @ A.T + l1
        c_next = torch.clamp(y - step * grad, min=0.0)
        if float(((y - c_next) * (c_next - c)).sum()) > 0:  # restart on oscillation
            t = 1.0
        t_next = (1.0 + math.sqrt(1.0 + 4.0 * t * t)) / 2.0
        y = c_next + ((t - 1.0) / t_next) * (c_next - c)
        change = float((c_next - c).norm()) / max(float(c_next.norm()), 1e-12)
        c, t = c_next, t_next
        if change < tol:
            break
    return c, iterations


def _debias(A: Tensor, b: Tensor, c: Tensor, max_iter: int, tol: float) -> Tensor:
    """Refit without the L1 shrinkage on the support ``c > 0`` (non-negative, exact if possible)."""
    support = torch.nonzero(c > 0).flatten()
    if support.numel() == 0:
        return c
    rows = A[support]
    fitted: Tensor | None = None
    if support.numel() <= A.shape[1]:
        solution = torch.linalg.lstsq(rows.double().T, b.double().unsqueeze(1)).solution
        solution = solution.squeeze(1)
        if float(solution.min()) >= -1e-6 * max(float(solution.abs().max()), 1e-12):
            fitted = solution.clamp(min=0).to(c.dtype)
    if fitted is None:
        fitted, _ = nnls(rows, b, max_iter=max_iter, tol=tol, init=c[support])
    # Latents the refit drives to (numerically) zero were only there for the shrinkage.
    fitted = torch.where(fitted > 1e-6 * float(fitted.max()), fitted, torch.zeros_like(fitted))
    out = torch.zeros_like(c)
    out[support] = fitted
    return out


def decoder_fit(
    sae: SAE,
    vector: Tensor,
    *,
    signed: bool = False,
    sparsity: float = DEFAULT_SPARSITY,
    max_iter: int = 3000,
    tol: float = 1e-7,
) -> DecoderFit:
    """Sparse non-negative (or signed) least-squares coefficients of ``vector`` on the decoder.

    Plain NNLS is not enough on an overcomplete dictionary: when the decoder rows do not
    lie in one half-space (they never do for a real SAE), many non-negative combinations
    fit exactly and the solver returns a dense one. So the fit is the non-negative lasso
    ``½||c W_dec - v||² + λ Σc`` with ``λ = sparsity · max(W_dec v)`` (``max(W_dec v)``
    is the smallest λ giving ``c = 0``), followed by plain NNLS on the latents it kept,
    which removes the lasso's shrinkage. A vector built from a few decoder rows comes
    back as exactly those rows and weights; ``sparsity=0`` is plain NNLS.
    """
    _check_width(sae, vector)
    if not 0.0 <= sparsity < 1.0:
        raise YapoError(f"sparsity must be in [0, 1), got {sparsity}")
    with torch.no_grad():
        W = sae.W_dec.detach().to(torch.float32)
        dictionary = torch.cat([W, -W]) if signed else W
        target = vector.detach().to(W.device, torch.float32)
        correlation = float((dictionary @ target).max()) if target.any() else 0.0
        l1 = sparsity * max(correlation, 0.0)
        c, iterations = nnls(dictionary, target, l1=l1, max_iter=max_iter, tol=tol)
        if l1 > 0:
            c = _debias(dictionary, target, c, max_iter, tol)
        if signed:
            c = c[: sae.d_sae] - c[sae.d_sae :]
        residual = float((c @ W - target).norm())
        norm = float(target.norm())
    return DecoderFit(
        coefficients=c.cpu(),
        residual_norm=residual,
        relative_residual=residual / norm if norm > 0 else 0.0,
        iterations=iterations,
        signed=signed,
        sparsity=sparsity,
    )


# ------------------------------------------------------------ comparison
def sae_coordinates(
    vector: SteeringVector, sae: SAE, how: Coordinates = "signed"
) -> tuple[Tensor, DecoderFit | None]:
    """A vector's coordinates in ``sae``'s latent space (``(d_sae,)``, float32, CPU).

    A sparse vector already has them (its SAE must be ``sae``: same checksum). A dense
    vector is projected: ``"nnls"`` (non-negative decoder fit), ``"signed"`` (decoder fit
    allowing negative coefficients) or ``"encoder"`` (``v @ W_enc``).
    """
    if how not in COORDINATES:
        raise YapoError(f"coordinates must be one of {COORDINATES}, got {how!r}")
    if isinstance(vector, SparseVector):
        if vector.sae.checksum() != sae.checksum():
            raise MismatchError(
                f"the sparse vector lives in SAE {vector.meta.sae_reference} (checksum "
                f"{vector.sae.checksum()}), not in {sae.reference} ({sae.checksum()}); its "
                "latent indices mean other things there"
            )
        return vector.vector.detach().float().cpu(), None
    if isinstance(vector, DenseVector):
        if how == "encoder":
            return encoder_direction(sae, vector.vector).cpu(), None
        fit = decoder_fit(sae, vector.vector, signed=how == "signed")
        return fit.coefficients, fit
    raise YapoError(f"cannot put a {type(vector).__name__} into SAE coordinates")


def residual_direction(vector: SteeringVector) -> Tensor:
    """The residual-stream direction a vector adds: ``v`` (dense) or ``v @ W_dec`` (sparse).

    For a sparse vector this is the change when every latent it lowers is active enough
    to be lowered in full; the exact change depends on the activations (docs/design.md).
    """
    if isinstance(vector, SparseVector):
        weights = vector.sae.W_dec.detach()
        return (vector.vector.float().to(weights.device) @ weights).cpu()
    return vector.vector.detach().float().cpu()


def top_indices(values: Tensor, k: int) -> list[int]:
    """Indices of the ``k`` largest ``|values|`` that are non-zero, largest first."""
    nonzero = int((values != 0).sum())
    k = min(k, nonzero)
    if k <= 0:
        return []
    return [int(i) for i in values.abs().topk(k).indices]


def _cosine(a: Tensor, b: Tensor) -> float:
    denominator = float(a.norm()) * float(b.norm())
    return float((a * b).sum()) / denominator if denominator > 0 else 0.0


@dataclass
class Comparison:
    """Two vectors side by side in one SAE's coordinates."""

    names: tuple[str, str]
    coordinates: tuple[str, str]
    cosine_sae: float
    cosine_residual: float
    top_k: int
    top_a: list[int]
    top_b: list[int]
    shared: list[int]
    jaccard: float
    sign_agreement: float | None
    latents: list[dict[str, Any]] = field(default_factory=list)
    fits: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def compare_vectors(
    a: SteeringVector,
    b: SteeringVector,
    sae: SAE,
    *,
    top_k: int = 20,
    how: Coordinates = "signed",
    names: tuple[str, str] = ("a", "b"),
) -> Comparison:
    """Cosine in SAE space and in the residual stream, and the overlap of top-``k`` latents."""
    if top_k < 1:
        raise YapoError(f"top_k must be at least 1, got {top_k}")
    ca, fit_a = sae_coordinates(a, sae, how)
    cb, fit_b = sae_coordinates(b, sae, how)
    ra, rb = residual_direction(a), residual_direction(b)
    if ra.numel() != rb.numel():
        raise MismatchError(f"the vectors have different widths ({ra.numel()} vs {rb.numel()})")
    top_a, top_b = top_indices(ca, top_k), top_indices(cb, top_k)
    shared = [i for i in top_a if i in set(top_b)]
    union = set(top_a) | set(top_b)
    signs = [bool(torch.sign(ca[i]) == torch.sign(cb[i])) for i in shared]
    latents = [
        {
            "index": i,
            names[0]: float(ca[i]),
            names[1]: float(cb[i]),
            f"rank_{names[0]}": top_a.index(i) + 1 if i in top_a else None,
            f"rank_{names[1]}": top_b.index(i) + 1 if i in top_b else None,
        }
        for i in sorted(union, key=lambda i: -(abs(float(ca[i])) + abs(float(cb[i]))))
    ]
    fits = {name: fit.summary() for name, fit in ((names[0], fit_a), (names[1], fit_b)) if fit}
    return Comparison(
        names=names,
        coordinates=tuple(_kind(v, how) for v in (a, b)),  # type: ignore[arg-type]
        cosine_sae=_cosine(ca, cb),
        cosine_residual=_cosine(ra, rb),
        top_k=top_k,
        top_a=top_a,
        top_b=top_b,
        shared=shared,
        jaccard=len(shared) / len(union) if union else 0.0,
        sign_agreement=sum(signs) / len(signs) if signs else None,
        latents=latents,
        fits=fits,
    )


def _kind(vector: SteeringVector, how: Coordinates) -> str:
    return "sparse (own coordinates)" if isinstance(vector, SparseVector) else f"dense ({how})"
