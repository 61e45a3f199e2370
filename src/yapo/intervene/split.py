"""Run a causal LM in two halves around block ``L``: once below, many times above.

Steering edits the output of block ``L``, so blocks ``0..L`` compute the same thing
whatever the steering vector is. A trainer can therefore run the lower half once per
sequence, keep ``h_L``, and per optimizer step run only blocks ``L+1..N``, the final
norm and the LM head (and that only at the positions whose log-probabilities it
needs).

How the upper half is run without knowing each architecture's forward: blocks
``0..L`` are swapped, for the duration of one call, for pass-through modules (which
keep the plain attributes the model's loop may read, such as ``attention_type``), and
the replacement of block ``L`` returns the given states instead of its input. The
model then builds its masks, rotary tables and positions from the usual inputs, so
whatever it does to the embeddings first (Gemma-2 scales them by sqrt(d_model);
GPT-2 adds position embeddings) cannot touch the injected states. The final logit
soft-capping of Gemma-2/3 is applied when the head is run here.

:func:`yapo.methods.logprobs.check_split_exact` compares the split against the plain
full forward, so an architecture this has not been tried on is caught before training
on it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from yapo.errors import YapoError
from yapo.intervene.devices import cache_argument
from yapo.intervene.hooks import run_to_layer
from yapo.intervene.outputs import rebuild_output
from yapo.models.layers import decoder_blocks, resolve_layer


class _PassThrough(nn.Module):
    """Stands in for a block below the split: returns its input unchanged.

    ``inject`` set: returns that tensor instead (the replacement of block ``L``).
    Plain attributes of the original block (``attention_type``, ``layer_idx``,
    ``is_sliding``...) are copied because model loops read them.
    """

    def __init__(self, original: nn.Module, tuple_output: bool) -> None:
        super().__init__()
        for name, value in vars(original).items():
            if name.startswith("_") or isinstance(value, (nn.Module, Tensor)):
                continue
            with contextlib.suppress(AttributeError, TypeError):
                object.__setattr__(self, name, value)
        self.tuple_output = tuple_output
        self.inject: Tensor | None = None

    def forward(self, hidden_states: Tensor, *args: Any, **kwargs: Any) -> Any:
        out = hidden_states if self.inject is None else self.inject
        return rebuild_output(out, () if self.tuple_output else None)


class LayerSplit:
    """A model cut after block ``layer``: :meth:`lower` gives ``h_L``, :meth:`upper` the rest.

    Not thread-safe while :meth:`upper` runs (blocks are swapped on the model itself
    and restored in ``finally``).
    """

    def __init__(self, model: nn.Module, layer: int) -> None:
        self.model = model
        self.layer = resolve_layer(model, layer)
        self.blocks = decoder_blocks(model)
        base = getattr(model, "base_model", model)
        self.base: nn.Module = base if isinstance(base, nn.Module) else model
        getter = getattr(model, "get_output_embeddings", None)
        head = getter() if callable(getter) else None
        if not isinstance(head, nn.Module):
            raise YapoError(f"{type(model).__name__} has no LM head (get_output_embeddings())")
        self.head: nn.Module = head
        config = getattr(model, "config", None)
        text_config = getattr(config, "get_text_config", lambda: config)()
        cap = getattr(text_config, "final_logit_softcapping", None)
        self.softcap: float | None = float(cap) if cap else None
        self.tuple_output = False

    # -------------------------------------------------------------- lower half
    def _call_options(self, position_ids: Tensor | None, cache: Any) -> dict[str, Any]:
        """Keyword arguments for the base model: explicit positions and a key/value cache."""
        options: dict[str, Any] = {"use_cache": cache is not None}
        if position_ids is not None:
            options["position_ids"] = position_ids
        if cache is not None:
            options[cache_argument(self.base)] = cache
        return options

    def lower(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        *,
        position_ids: Tensor | None = None,
        cache: Any = None,
    ) -> Tensor:
        """``h_L`` for every position: blocks ``0..L`` only (the rest is skipped).

        ``position_ids`` are needed for left-padded rows; a ``cache`` (a transformers
        ``Cache``) receives the key/values of blocks ``0..L`` and may hold earlier tokens.
        The block's output layout (tensor or tuple) is remembered for :meth:`upper`'s
        stand-ins.
        """
        hidden, rest = run_to_layer(
            self.model,
            self.layer,
            self.base,
            input_ids=input_ids,
            attention_mask=attention_mask,
            **self._call_options(position_ids, cache),
        )
        self.tuple_output = rest is not None
        return hidden

    # -------------------------------------------------------------- upper half
    @contextlib.contextmanager
    def _swapped(self, states: Tensor) -> Iterator[None]:
        originals = [self.blocks[i] for i in range(self.layer + 1)]
        try:
            for i, original in enumerate(originals):
                stand_in = _PassThrough(original, self.tuple_output)
                if i == self.layer:
                    stand_in.inject = states
                self.blocks[i] = stand_in
            yield
        finally:
            for i, original in enumerate(originals):
                self.blocks[i] = original

    def upper(
        self,
        states: Tensor,
        attention_mask: Tensor,
        *,
        position_ids: Tensor | None = None,
        cache: Any = None,
    ) -> Tensor:
        """Final hidden states (after the last norm) from layer-``L`` states.

        ``states`` may carry gradient (the steered ``h_L``); it flows through the upper
        blocks. Returns ``(batch, seq, d_model)``. With a ``cache``, blocks ``L+1..N``
        read and extend it (the pass-through blocks leave their own layers untouched).
        """
        with self._swapped(states):
            out = self.base(
                inputs_embeds=states.detach(),
                attention_mask=attention_mask,
                **self._call_options(position_ids, cache),
            )
        hidden = getattr(out, "last_hidden_state", None)
        if hidden is None:
            hidden = out[0]
        return hidden  # type: ignore[no-any-return]

    def logits(self, hidden: Tensor) -> Tensor:
        """LM head (with final soft-capping where the model has it) on any rows of states."""
        logits = self.head(hidden)
        if self.softcap is not None:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits  # type: ignore[no-any-return]
