"""A judge that is a local Hugging Face model, for offline runs and reproducibility.

The rubric messages are rendered with the tokenizer's chat template (the system
message is folded into the user turn for templates that reject a system role, such as
Gemma's); a tokenizer without a template gets a plain-text prompt. Decoding is greedy, so
a retry would give the same reply: an unusable reply is recorded as a failure at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from torch import nn

from yapo.evaluate.judge.base import Judgement
from yapo.evaluate.judge.cache import JudgeCache
from yapo.evaluate.judge.cultural import CULTURAL_RUBRIC
from yapo.evaluate.judge.rubric import Rubric, UnusableReply
from yapo.evaluate.textgen import generate_texts


def render_messages(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    """The judge prompt as text, through the chat template when there is one."""
    if getattr(tokenizer, "chat_template", None):
        try:
            return str(
                tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            )
        except Exception:  # template without a system role
            merged = [
                {
                    "role": "user",
                    "content": "\n\n".join(m["content"] for m in messages),
                }
            ]
            return str(
                tokenizer.apply_chat_template(merged, tokenize=False, add_generation_prompt=True)
            )
    body = "\n\n".join(m["content"] for m in messages)
    return f"{body}\n\nJSON:"


class LocalJudge:
    """Grade answers with a causal LM loaded in this process, with ``rubric`` (default:
    the cultural 0–10 rubric) saying what is asked and how replies are read."""

    backend = "local-hf"

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        *,
        name: str | None = None,
        batch_size: int = 4,
        max_new_tokens: int = 256,
        cache: JudgeCache | None = None,
        rubric: Rubric[Any] = CULTURAL_RUBRIC,
    ) -> None:
        self.model = model
        self.rubric = rubric
        self.tokenizer = tokenizer
        self.name = name or str(getattr(model, "name_or_path", "") or "local-model")
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.cache = cache

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "model": self.name,
            "decoding": "greedy",
            "max_new_tokens": self.max_new_tokens,
            "rubric": self.rubric.version,
        }

    def judge(self, requests: Sequence[Any]) -> list[Judgement]:
        results: list[Judgement | None] = [None] * len(requests)
        todo: list[int] = []
        for i, request in enumerate(requests):
            hit = self.cache.get(self.rubric.cache_key(request, self.name)) if self.cache else None
            if hit is not None:
                results[i] = replace(hit, key=request.key, cached=True)
            else:
                todo.append(i)
        if todo:
            prompts = [
                render_messages(self.tokenizer, self.rubric.messages(requests[i])) for i in todo
            ]
            try:
                replies, _ = generate_texts(
                    self.model,
                    self.tokenizer,
                    prompts,
                    max_new_tokens=self.max_new_tokens,
                    batch_size=self.batch_size,
                )
            except Exception as exc:  # a judge failure is recorded, never fatal
                replies = [None] * len(todo)  # type: ignore[list-item]
                failure = f"generation failed ({type(exc).__name__}: {exc})"
            else:
                failure = ""
            for i, reply in zip(todo, replies):
                results[i] = self._judgement(requests[i], reply, failure)
                if self.cache is not None:
                    key = self.rubric.cache_key(requests[i], self.name)
                    self.cache.put(key, results[i])  # type: ignore[arg-type]
        return [r for r in results if r is not None]

    def _judgement(self, request: Any, reply: str | None, failure: str) -> Judgement:
        if reply is None:
            return Judgement(key=request.key, judge=self.name, error=failure, attempts=1)
        try:
            scores, rationale = self.rubric.read(reply)
        except UnusableReply as exc:
            return Judgement(
                key=request.key, judge=self.name, error=str(exc), attempts=1, raw=reply
            )
        return Judgement(
            key=request.key,
            judge=self.name,
            scores=scores,
            rationale=rationale,
            attempts=1,
            raw=reply,
        )
