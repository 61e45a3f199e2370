"""Generation for ``yapo serve``: one model, named vectors, one request at a time.

Steering is a forward hook on a shared model, so two requests steered differently must
never overlap: the engine **serialises** requests with a lock (a request, streaming
included, holds the model from tokenisation to its last token). That is the simple
choice that is obviously leak-free; throughput is then one request's tokens/s (see
``benchmarks/bench_serve.py``). Each request's vectors are applied with the library's
own ``vector.apply`` (exact YaPO/SAS edits, no approximation) and removed in
``finally``; the tokenisation and decoding calls are the ones
:func:`yapo.generation.generate` makes, so a served completion equals ``yapo generate``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from transformers import PreTrainedModel

from yapo.intervene import input_device
from yapo.serve.protocol import GenerationRequest, RequestError, SteeringSpec
from yapo.vectors.base import SteeringVector
from yapo.vectors.steer import Steer


@dataclass
class Completion:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


def _cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    cuts = [text.find(s) for s in stops if s in text]
    return (text[: min(cuts)], True) if cuts else (text, False)


class _Stop:
    """Stopping criterion: a stop string appeared, or a streaming consumer went away.

    Stop strings are checked on the decoded text (transformers' own ``stop_strings``
    needs tokenizer internals that not every tokenizer has).
    """

    def __init__(self, tokenizer: Any, prompt_length: int, stops: list[str]) -> None:
        self.event = threading.Event()
        self.tokenizer = tokenizer
        self.prompt_length = prompt_length
        self.stops = stops

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **_: Any) -> torch.Tensor:
        done = self.event.is_set()
        if not done and self.stops:
            new = input_ids[0, self.prompt_length :]
            text = str(self.tokenizer.decode(new, skip_special_tokens=True))
            done = any(stop in text for stop in self.stops)
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)


class Engine:
    """A model, its tokenizer and the vectors a request may name."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: Any,
        vectors: dict[str, SteeringVector],
        model_id: str,
    ) -> None:
        for vector in vectors.values():
            vector.check_fits(model)
        self.model = model
        self.tokenizer = tokenizer
        self.vectors = dict(vectors)
        self.model_id = model_id
        self.lock = threading.Lock()
        self.device = input_device(model)

    # ------------------------------------------------------------------ requests
    def resolve(self, specs: list[SteeringSpec]) -> list[Steer]:
        """The steering a request names, one :class:`Steer` per entry (404 for an unknown
        vector)."""
        chosen = []
        for spec in specs:
            vector = self.vectors.get(spec.vector)
            if vector is None:
                known = ", ".join(sorted(self.vectors)) or "none"
                raise RequestError(
                    404, f"unknown vector {spec.vector!r}; served vectors: {known}", "steering"
                )
            chosen.append(Steer(vector, spec.multiplier, spec.direction, spec.positions))
        return chosen

    def check_model(self, request: GenerationRequest) -> None:
        if request.model not in (None, "", self.model_id):
            raise RequestError(
                404, f"model {request.model!r} is not served here; use {self.model_id!r}", "model"
            )

    def prompt_ids(self, request: GenerationRequest) -> torch.Tensor:
        """Token ids of the prompt, made exactly as :func:`yapo.generation.generate` makes them."""
        tokenizer = self.tokenizer
        if request.chat:
            if not getattr(tokenizer, "chat_template", None):
                raise RequestError(
                    400,
                    "this model's tokenizer has no chat template; use /v1/completions",
                    "messages",
                )
            text = tokenizer.apply_chat_template(
                request.messages, tokenize=False, add_generation_prompt=True
            )
            ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
        elif isinstance(request.prompt, list):
            ids = torch.tensor([request.prompt])
            vocab = int(getattr(self.model.config, "vocab_size", 0) or 0)
            if vocab and (int(ids.max()) >= vocab or int(ids.min()) < 0):
                raise RequestError(400, f"token ids must be in 0..{vocab - 1}", "prompt")
        else:
            ids = tokenizer(str(request.prompt), return_tensors="pt")["input_ids"]
        if ids.shape[1] == 0:
            raise RequestError(400, "the prompt is empty", "prompt")
        limit = getattr(self.model.config, "max_position_embeddings", None)
        if limit and ids.shape[1] + request.max_tokens > int(limit):
            raise RequestError(
                400, f"prompt + max_tokens exceeds the model's context of {limit} tokens"
            )
        return ids.to(self.device)  # type: ignore[no-any-return]

    def _generate_kwargs(self, request: GenerationRequest, ids: torch.Tensor) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "input_ids": ids,
            "attention_mask": torch.ones_like(ids),
            "max_new_tokens": request.max_tokens,
            "pad_token_id": self.tokenizer.pad_token_id,
            "do_sample": not request.greedy,
        }
        if not request.greedy:
            kwargs["temperature"] = request.temperature
            kwargs["top_p"] = request.top_p
        return kwargs

    @contextlib.contextmanager
    def _steered(self, request: GenerationRequest) -> Iterator[None]:
        chosen = self.resolve(request.steering)
        with contextlib.ExitStack() as stack:
            for steer in chosen:
                stack.enter_context(steer.apply(self.model))
            if request.seed is not None:
                torch.manual_seed(request.seed)
            yield

    def _finish(
        self, request: GenerationRequest, ids: torch.Tensor, new: torch.Tensor
    ) -> Completion:
        text = str(self.tokenizer.decode(new, skip_special_tokens=True))
        text, stopped = _cut_at_stop(text, request.stop)
        eos = self.model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
        ended = stopped or (new.numel() > 0 and int(new[-1]) in eos_ids)
        reason = "length" if not ended and new.numel() >= request.max_tokens else "stop"
        return Completion(text, reason, int(ids.shape[1]), int(new.numel()))

    def complete(self, request: GenerationRequest) -> Completion:
        """Generate a whole completion (holding the lock)."""
        self.check_model(request)
        self.resolve(request.steering)  # 404 before waiting for the lock
        with self.lock:
            ids = self.prompt_ids(request)
            stop = _Stop(self.tokenizer, ids.shape[1], request.stop)
            with self._steered(request), torch.no_grad():
                output = self.model.generate(  # type: ignore[operator]
                    **self._generate_kwargs(request, ids), stopping_criteria=[stop]
                )
            return self._finish(request, ids, output[0, ids.shape[1] :])

    def stream(self, request: GenerationRequest) -> Generator[str | Completion, None, None]:
        """Yield text pieces as they are generated, then the final :class:`Completion`.

        The lock is held until the generator finishes or is closed (a client that goes
        away stops generation at the next token).
        """
        from transformers import TextIteratorStreamer

        self.check_model(request)
        self.resolve(request.steering)
        with self.lock:
            ids = self.prompt_ids(request)
            streamer = TextIteratorStreamer(
                self.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600
            )
            cancel = _Stop(self.tokenizer, ids.shape[1], request.stop)
            result: dict[str, Any] = {}

            def run() -> None:
                try:
                    with self._steered(request), torch.no_grad():
                        kwargs = self._generate_kwargs(request, ids)
                        result["output"] = self.model.generate(  # type: ignore[operator]
                            **kwargs, streamer=streamer, stopping_criteria=[cancel]
                        )
                except BaseException as exc:  # surfaced to the consumer below
                    result["error"] = exc
                    streamer.end()  # type: ignore[no-untyped-call]

            worker = threading.Thread(target=run, name="yapo-serve-generate", daemon=True)
            worker.start()
            try:
                yield from self._stream_text(streamer, request.stop, cancel)
            finally:
                cancel.event.set()
                worker.join()
            if "error" in result:
                raise result["error"]
            yield self._finish(request, ids, result["output"][0, ids.shape[1] :])

    @staticmethod
    def _stream_text(streamer: Any, stops: list[str], cancel: _Stop) -> Iterator[str]:
        """Pass text through, holding back what could be the start of a stop string."""
        hold = max((len(s) for s in stops), default=1) - 1
        sent, buffer = 0, ""
        for piece in streamer:
            buffer += piece
            cut, stopped = _cut_at_stop(buffer, stops)
            if stopped:
                if len(cut) > sent:
                    yield cut[sent:]
                cancel.event.set()
                for _ in streamer:  # drain until generation has stopped
                    pass
                return
            safe = len(buffer) - hold
            if safe > sent:
                yield buffer[sent:safe]
                sent = safe
        if len(buffer) > sent:
            yield buffer[sent:]
