"""What a steering vector is made of: its top latents, where they fire, how often.

For a sparse (YaPO, SAS) vector the latents are its own coordinates; for a dense (BiPO,
CAA) vector they come from its projection into SAE space
(:mod:`yapo.analysis.projection`). Each top latent is listed with its value and sign,
its decoder norm (how far one unit of it moves the residual stream), its effective
size ``|v_i|·||W_dec[i]||``, and a Neuronpedia link when the SAE's metadata names a
Neuronpedia id. Given a corpus, the model is run up to the vector's layer, the latents
are encoded at every token, and for each latent the contexts where it fires most (one
per document, so one long text cannot fill the list) and its density (the fraction of
tokens where it is active) are recorded; :func:`render_html` shows those contexts with
each token shaded by the latent's activation.

The module is called ``features`` so that it never shadows the standard library's
``inspect``; the CLI command is ``yapo inspect``.
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from yapo.analysis.projection import (
    DEFAULT_SPARSITY,
    Comparison,
    Coordinates,
    DecoderFit,
    compare_vectors,
    encoder_direction,
    sae_coordinates,
    top_indices,
)
from yapo.errors import YapoError
from yapo.intervene import input_device, run_to_layer
from yapo.models.layers import resolve_layer
from yapo.sae.model import SAE
from yapo.vectors.base import SteeringVector
from yapo.vectors.sparse import SparseVector

NEURONPEDIA = "https://www.neuronpedia.org"
TEXT_FIELDS = ("text", "localized", "question", "prompt", "content")


# --------------------------------------------------------------- latents
@dataclass
class LatentInfo:
    """One latent of a vector: its weight in the vector and what one unit of it does."""

    index: int
    value: float
    sign: int
    decoder_norm: float
    effective: float
    encoder_value: float | None = None
    neuronpedia: str | None = None


def neuronpedia_url(sae: SAE, index: int) -> str | None:
    """``https://www.neuronpedia.org/<model>/<source>/<index>`` when the SAE names its id."""
    ident = sae.neuronpedia_id()
    return f"{NEURONPEDIA}/{ident.strip('/')}/{index}" if ident else None


def top_latents(
    coordinates: Tensor, sae: SAE, k: int = 20, encoder: Tensor | None = None
) -> list[LatentInfo]:
    """The ``k`` latents with the largest ``|coordinates|`` (non-zero only), largest first."""
    if k < 1:
        raise YapoError(f"--top must be at least 1, got {k}")
    if coordinates.numel() != sae.d_sae:
        raise YapoError(f"{coordinates.numel()} coordinates but the SAE has {sae.d_sae} latents")
    norms = sae.W_dec.detach().float().norm(dim=-1).cpu()
    infos = []
    for i in top_indices(coordinates, k):
        value = float(coordinates[i])
        infos.append(
            LatentInfo(
                index=i,
                value=value,
                sign=1 if value > 0 else -1,
                decoder_norm=float(norms[i]),
                effective=abs(value) * float(norms[i]),
                encoder_value=None if encoder is None else float(encoder[i]),
                neuronpedia=neuronpedia_url(sae, i),
            )
        )
    return infos


# --------------------------------------------------------------- corpus
@dataclass
class Context:
    """A window of one document around the token where a latent fired most in it."""

    document: int
    position: int
    activation: float
    tokens: list[str]
    activations: list[float]
    center: int


@dataclass
class LatentActivity:
    """How a latent behaves on a corpus."""

    index: int
    density: float
    active_tokens: int
    max_activation: float
    mean_when_active: float
    contexts: list[Context] = field(default_factory=list)


@dataclass
class CorpusActivity:
    """Per-latent activity over a corpus, and the corpus size."""

    documents: int
    tokens: int
    layer: int
    latents: dict[int, LatentActivity]
    seconds: float = 0.0


def read_corpus(paths: Sequence[str | Path], field_name: str | None = None) -> list[str]:
    """Documents from text files (one per non-empty line) or tables (JSONL, JSON, CSV, Parquet).

    For tables the text is taken from ``field_name`` or the first of ``text``,
    ``localized``, ``question``, ``prompt``, ``content`` that the rows have.
    """
    documents: list[str] = []
    for raw in paths:
        path = Path(raw)
        if not path.is_file():
            raise YapoError(f"corpus file not found: {path}")
        if path.suffix.lower() in (".txt", ".md", ""):
            documents.extend(line.strip() for line in path.read_text("utf-8").splitlines())
            continue
        from yapo.data.files import read_table

        table = read_table(str(path))
        names = [field_name] if field_name else [n for n in TEXT_FIELDS if n in table.columns]
        if not names or names[0] not in table.columns:
            raise YapoError(
                f"{path}: no text column; it has {table.columns}, pass --field with one of them"
            )
        documents.extend(str(row.data.get(names[0]) or "").strip() for row in table.rows)
    documents = [d for d in documents if d]
    if not documents:
        raise YapoError(f"the corpus {[str(p) for p in paths]} holds no text")
    return documents


def _batches(items: Sequence[str], size: int) -> Iterator[tuple[int, Sequence[str]]]:
    for start in range(0, len(items), size):
        yield start, items[start : start + size]


@dataclass
class _Batch:
    """One tokenized batch of documents and the chosen latents' codes at every token."""

    ids: Tensor  # (B, T)
    valid: Tensor  # (B, T) bool: real tokens, special tokens left out if asked
    acts: Tensor  # (B, T, k) float32 on the CPU, zero where not valid


def _encode_batch(
    model: nn.Module,
    tokenizer: Any,
    sae: SAE,
    layer: int,
    texts: Sequence[str],
    chosen: Tensor,
    special: set[int],
    max_length: int,
) -> _Batch:
    """Run the model up to ``layer`` on ``texts`` and encode the ``chosen`` latents."""
    batch = tokenizer(
        list(texts),
        return_tensors="pt",
        padding=True,
        truncation=True,
        max_length=max_length,
    )
    ids = batch["input_ids"]
    valid = batch["attention_mask"].bool()
    if special:
        valid &= ~torch.isin(ids, torch.tensor(sorted(special)))
    device = input_device(model)
    inputs = {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "attention_mask")}
    states, _ = run_to_layer(model, layer, **inputs, use_cache=False)
    with torch.no_grad():
        acts = sae.encode_latents(states, chosen).float().cpu()  # (B, T, k)
    return _Batch(ids, valid, acts.masked_fill(~valid.unsqueeze(-1), 0.0))


class _Tally:
    """Running counts, sums, maxima and best contexts of each chosen latent.

    Kept apart from the model loop so that a batch's contribution is one call and the
    per-document context ranking (one context per document, the ``top_n`` strongest)
    lives in one place.
    """

    def __init__(self, n_latents: int, top_n: int, window: int) -> None:
        self.counts = torch.zeros(n_latents, dtype=torch.long)
        self.sums = torch.zeros(n_latents, dtype=torch.float64)
        self.maxima = torch.zeros(n_latents)
        self.best: list[list[Context]] = [[] for _ in range(n_latents)]
        self.tokens = 0
        self.top_n = top_n
        self.window = window

    def add(self, tokenizer: Any, batch: _Batch, first_document: int) -> None:
        acts, valid = batch.acts, batch.valid
        self.tokens += int(valid.sum())
        active = (acts > 0) & valid.unsqueeze(-1)
        self.counts += active.sum(dim=(0, 1))
        self.sums += acts.sum(dim=(0, 1)).double()
        self.maxima = torch.maximum(self.maxima, acts.amax(dim=(0, 1)))
        peak, where = acts.max(dim=1)  # per document: (B, k)
        for j, row in enumerate(self.best):
            for b in range(acts.shape[0]):
                value = float(peak[b, j])
                if value <= 0:
                    continue
                if len(row) >= self.top_n and value <= row[-1].activation:
                    continue
                row.append(
                    _context(
                        tokenizer,
                        batch.ids[b],
                        valid[b],
                        acts[b, :, j],
                        int(where[b, j]),
                        first_document + b,
                        self.window,
                    )
                )
                row.sort(key=lambda c: -c.activation)
                del row[self.top_n :]

    def activity(self, j: int, latent: int) -> LatentActivity:
        active_count = int(self.counts[j])
        return LatentActivity(
            index=int(latent),
            density=active_count / self.tokens if self.tokens else 0.0,
            active_tokens=active_count,
            max_activation=float(self.maxima[j]),
            mean_when_active=float(self.sums[j]) / active_count if active_count else 0.0,
            contexts=self.best[j],
        )


def latent_activity(
    model: nn.Module,
    tokenizer: Any,
    sae: SAE,
    layer: int,
    documents: Sequence[str],
    latents: Sequence[int],
    *,
    top_n: int = 5,
    window: int = 10,
    batch_size: int = 8,
    max_length: int = 128,
    skip_special: bool = True,
) -> CorpusActivity:
    """Density and top contexts of ``latents`` at ``layer`` over ``documents``.

    Special tokens (BOS, padding) are left out by default: their residual norms are
    outliers and SAEs are usually trained without them.
    """
    if not latents:
        raise YapoError("no latents to look for in the corpus")
    index = resolve_layer(model, layer)
    chosen = torch.tensor(list(latents), dtype=torch.long, device=sae.W_enc.device)
    special = {int(i) for i in (getattr(tokenizer, "all_special_ids", None) or [])}
    tally = _Tally(len(latents), top_n, window)
    start_time = time.perf_counter()
    previous_side = getattr(tokenizer, "padding_side", "right")
    tokenizer.padding_side = "right"
    try:
        for start, texts in _batches(documents, batch_size):
            batch = _encode_batch(
                model,
                tokenizer,
                sae,
                index,
                texts,
                chosen,
                special if skip_special else set(),
                max_length,
            )
            tally.add(tokenizer, batch, start)
    finally:
        tokenizer.padding_side = previous_side
    return CorpusActivity(
        documents=len(documents),
        tokens=tally.tokens,
        layer=index,
        latents={int(latent): tally.activity(j, latent) for j, latent in enumerate(latents)},
        seconds=time.perf_counter() - start_time,
    )


def _context(
    tokenizer: Any,
    ids: Tensor,
    valid: Tensor,
    acts: Tensor,
    position: int,
    document: int,
    window: int,
) -> Context:
    positions = [
        p
        for p in range(max(0, position - window), position + window + 1)
        if p < ids.numel() and bool(valid[p])
    ]
    tokens = [str(tokenizer.decode([int(ids[p])])) for p in positions]
    return Context(
        document=document,
        position=position,
        activation=float(acts[position]),
        tokens=tokens,
        activations=[float(acts[p]) for p in positions],
        center=positions.index(position),
    )


# --------------------------------------------------------------- report
@dataclass
class Inspection:
    """Everything ``yapo inspect`` reports about one vector (and optionally a second)."""

    vector: dict[str, Any]
    sae: dict[str, Any]
    coordinates: str
    latents: list[LatentInfo]
    fit: DecoderFit | None = None
    corpus: CorpusActivity | None = None
    comparison: Comparison | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "vector": self.vector,
            "sae": self.sae,
            "coordinates": self.coordinates,
            "latents": [asdict(latent) for latent in self.latents],
            "fit": self.fit.summary() if self.fit else None,
            "corpus": None,
            "comparison": self.comparison.to_json() if self.comparison else None,
        }
        if self.corpus is not None:
            data["corpus"] = {
                "documents": self.corpus.documents,
                "tokens": self.corpus.tokens,
                "layer": self.corpus.layer,
                "seconds": round(self.corpus.seconds, 2),
                "latents": {str(k): asdict(v) for k, v in self.corpus.latents.items()},
            }
        return data


def describe_vector(vector: SteeringVector) -> dict[str, Any]:
    meta = vector.meta
    return {
        "kind": vector.kind,
        "method": meta.method,
        "model": meta.model,
        "layer": meta.layer,
        "size": vector.vector.numel(),
        "nonzero": int((vector.vector != 0).sum()),
        "norm": float(vector.vector.norm()),
        "sae_reference": meta.sae_reference,
    }


def describe_sae(sae: SAE) -> dict[str, Any]:
    return {
        "reference": sae.reference,
        "d_in": sae.d_in,
        "d_sae": sae.d_sae,
        "activation": sae.activation,
        "checksum": sae.checksum(),
        "neuronpedia_id": sae.neuronpedia_id(),
    }


def inspect_vector(
    vector: SteeringVector,
    sae: SAE | None = None,
    *,
    top: int = 20,
    coordinates: Coordinates = "signed",
    sparsity: float = DEFAULT_SPARSITY,
    model: nn.Module | None = None,
    tokenizer: Any | None = None,
    documents: Sequence[str] | None = None,
    contexts: int = 5,
    window: int = 10,
    batch_size: int = 8,
    max_length: int = 128,
    compare: SteeringVector | None = None,
    names: tuple[str, str] = ("vector", "other"),
) -> Inspection:
    """Top latents of ``vector`` (projected first if dense), their corpus activity, a comparison."""
    if isinstance(vector, SparseVector):
        sae = sae or vector.sae
    if sae is None:
        raise YapoError(
            "a dense vector has no SAE of its own: pass the SAE to project it into (--sae)"
        )
    fit: DecoderFit | None = None
    if isinstance(vector, SparseVector):
        coords, how = sae_coordinates(vector, sae)[0], "sparse (own coordinates)"
    elif coordinates == "encoder":
        coords, how = encoder_direction(sae, vector.vector).cpu(), "dense (encoder)"
    else:
        from yapo.analysis.projection import decoder_fit

        fit = decoder_fit(sae, vector.vector, signed=coordinates == "signed", sparsity=sparsity)
        coords, how = fit.coefficients, f"dense ({coordinates}, sparsity {sparsity})"
    encoder = (
        None if isinstance(vector, SparseVector) else encoder_direction(sae, vector.vector).cpu()
    )
    latents = top_latents(coords, sae, top, encoder=encoder)
    corpus = None
    if documents:
        if model is None or tokenizer is None:
            raise YapoError("corpus contexts need the model the vector was trained on (--model)")
        corpus = latent_activity(
            model,
            tokenizer,
            sae,
            vector.layer,
            documents,
            [latent.index for latent in latents],
            top_n=contexts,
            window=window,
            batch_size=batch_size,
            max_length=max_length,
        )
    comparison = None
    if compare is not None:
        comparison = compare_vectors(vector, compare, sae, top_k=top, how=coordinates, names=names)
    return Inspection(
        vector=describe_vector(vector),
        sae=describe_sae(sae),
        coordinates=how,
        latents=latents,
        fit=fit,
        corpus=corpus,
        comparison=comparison,
    )


# ------------------------------------------------------------------ HTML
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; max-width: 70em; }
table { border-collapse: collapse; } td, th { padding: 2px 8px; border-bottom: 1px solid #ddd; }
.ctx { font-family: ui-monospace, monospace; white-space: pre-wrap; margin: 4px 0; }
.tok { border-radius: 2px; } .peak { outline: 1px solid #a40; }
.pos { color: #070; } .neg { color: #a00; }
"""


def _shade(activation: float, peak: float) -> str:
    alpha = 0.0 if peak <= 0 else max(0.0, min(1.0, activation / peak))
    return f"background: rgba(255, 140, 0, {alpha:.2f})"


def render_html(report: Inspection, title: str = "yapo inspect") -> str:
    """A self-contained page: the latent table, then each latent's top contexts, shaded."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{html.escape(json.dumps(report.vector))}<br>SAE: {html.escape(json.dumps(report.sae))}"
        f"<br>coordinates: {html.escape(report.coordinates)}</p>",
        "<table><tr><th>#</th><th>latent</th><th>value</th><th>decoder norm</th>"
        "<th>|v|·‖W_dec‖</th><th>density</th><th>max act.</th></tr>",
    ]
    activity = report.corpus.latents if report.corpus else {}
    for rank, latent in enumerate(report.latents, 1):
        act = activity.get(latent.index)
        name = html.escape(str(latent.index))
        link = (
            f"<a href='{html.escape(latent.neuronpedia)}'>{name}</a>"
            if latent.neuronpedia
            else name
        )
        sign = "pos" if latent.sign > 0 else "neg"
        parts.append(
            f"<tr><td>{rank}</td><td><a href='#l{latent.index}'>#</a> {link}</td>"
            f"<td class='{sign}'>{latent.value:+.4g}</td><td>{latent.decoder_norm:.4g}</td>"
            f"<td>{latent.effective:.4g}</td>"
            f"<td>{'' if act is None else f'{act.density:.4%}'}</td>"
            f"<td>{'' if act is None else f'{act.max_activation:.4g}'}</td></tr>"
        )
    parts.append("</table>")
    if report.corpus is not None:
        parts.append(
            f"<p>Corpus: {report.corpus.documents} documents, {report.corpus.tokens} tokens, "
            f"layer {report.corpus.layer}.</p>"
        )
    for latent in report.latents:
        act = activity.get(latent.index)
        if act is None:
            continue
        parts.append(
            f"<h2 id='l{latent.index}'>Latent {latent.index} "
            f"<small class='{'pos' if latent.sign > 0 else 'neg'}'>({latent.value:+.4g})</small></h2>"
        )
        if not act.contexts:
            parts.append("<p>never active on this corpus</p>")
        for context in act.contexts:
            spans = []
            for i, (token, value) in enumerate(zip(context.tokens, context.activations)):
                text = html.escape(token.replace("\n", "↵"))
                peak = " peak" if i == context.center else ""
                spans.append(
                    f"<span class='tok{peak}' title='{value:.3f}' "
                    f"style='{_shade(value, act.max_activation)}'>{text}</span>"
                )
            parts.append(
                f"<div class='ctx'>[{context.activation:.3f}, doc {context.document}] {''.join(spans)}</div>"
            )
    if report.comparison is not None:
        c = report.comparison
        parts.append(
            f"<h2>Comparison: {html.escape(c.names[0])} vs {html.escape(c.names[1])}</h2>"
            f"<p>cosine in SAE space {c.cosine_sae:.4f}; cosine in the residual stream "
            f"{c.cosine_residual:.4f}; top-{c.top_k} overlap {len(c.shared)} "
            f"(Jaccard {c.jaccard:.3f})</p>"
        )
    parts.append("</body></html>")
    return "\n".join(parts)
