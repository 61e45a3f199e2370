"""A judge behind any OpenAI-compatible chat-completions endpoint.

OpenAI itself, vLLM (``vllm serve``), Ollama (``http://localhost:11434/v1``), the
llama.cpp server and most hosted gateways all speak ``POST /v1/chat/completions``, so
one client (the official ``openai`` package) covers them: give a base URL and a model.

Robustness, because judging hundreds of answers over a network always hits something:

* retries with exponential back-off on timeouts, connection errors, HTTP 408/409/429
  and 5xx, and on replies its rubric cannot read (a sampled judge may answer properly
  on the next try); other 4xx errors (bad model name, bad key) are
  not retried;
* at most ``concurrency`` requests in flight at once (a thread pool);
* an optional on-disk cache of successful judgements (:class:`JudgeCache`);
* every failure is recorded on its item (:class:`Judgement.error`), never raised;
* ``timeout`` bounds each request and ``deadline`` the whole run (seconds from the
  first request): once it has passed, the items still waiting fail at once with
  "judge deadline passed" instead of costing ``timeout × (retries + 1)`` each, and a
  request in flight is cut at the deadline. A hung server therefore costs at most
  ``deadline`` seconds, not hours.

The retries are done here rather than by the ``openai`` client (created with
``max_retries=0``) so that unusable replies are retried too and attempts are counted.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from tqdm.auto import tqdm

from yapo.errors import YapoError
from yapo.evaluate.judge.base import Judgement
from yapo.evaluate.judge.cache import JudgeCache
from yapo.evaluate.judge.cultural import CULTURAL_RUBRIC
from yapo.evaluate.judge.rubric import Rubric, UnusableReply

logger = logging.getLogger(__name__)
RETRYABLE_STATUS = frozenset({408, 409, 429})
API_KEY_ENV = "YAPO_JUDGE_API_KEY"


class OpenAIJudge:
    """Grade answers with a model served behind an OpenAI-compatible API.

    ``rubric`` says what is asked and how replies are read (default: the cultural
    0–10 rubric); everything else here is transport and is the same for every rubric.
    """

    backend = "openai-compatible"

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        concurrency: int = 4,
        max_retries: int = 3,
        timeout: float = 120.0,
        deadline: float | None = None,
        backoff: float = 1.0,
        temperature: float = 0.0,
        max_tokens: int = 400,
        cache: JudgeCache | None = None,
        rubric: Rubric[Any] = CULTURAL_RUBRIC,
    ) -> None:
        if not model:
            raise YapoError("the judge needs a model name (--judge-model)")
        if concurrency < 1:
            raise YapoError(f"judge concurrency must be at least 1, got {concurrency}")
        if max_retries < 0:
            raise YapoError(f"judge max_retries must be >= 0, got {max_retries}")
        if not (timeout > 0 and math.isfinite(timeout)):
            raise YapoError(
                f"the judge timeout must be a positive number of seconds, got {timeout}"
            )
        if deadline is not None and not (deadline > 0 and math.isfinite(deadline)):
            raise YapoError(
                f"the judge deadline must be a positive number of seconds, got {deadline}"
            )
        from openai import OpenAI

        self.name = model
        self.rubric = rubric
        self.base_url = base_url
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.backoff = backoff
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.cache = cache
        self.timeout = float(timeout)
        self.deadline = None if deadline is None else float(deadline)
        self._ends: float | None = None  # monotonic time of the deadline, set on first use
        # Local servers (vLLM, Ollama, llama.cpp) accept any key; the client insists on one.
        key = api_key or os.environ.get(API_KEY_ENV) or os.environ.get("OPENAI_API_KEY")
        if base_url is None and not key:
            raise YapoError(
                f"the OpenAI API needs a key: set {API_KEY_ENV} or OPENAI_API_KEY, or give "
                "--judge-url for a local server (vLLM, Ollama, llama.cpp)"
            )
        self._client = OpenAI(
            base_url=base_url, api_key=key or "not-needed", max_retries=0, timeout=timeout
        )

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "model": self.name,
            "base_url": self.base_url,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "max_retries": self.max_retries,
            "timeout": self.timeout,
            "deadline": self.deadline,
            "rubric": self.rubric.version,
        }

    def judge(self, requests: Sequence[Any]) -> list[Judgement]:
        """One judgement per request, in order; cached ones are not asked again."""
        results: list[Judgement | None] = [None] * len(requests)
        todo: list[int] = []
        if self.deadline is not None and self._ends is None:
            self._ends = time.monotonic() + self.deadline
        for i, request in enumerate(requests):
            hit = self.cache.get(self.rubric.cache_key(request, self.name)) if self.cache else None
            if hit is not None:
                results[i] = replace(hit, key=request.key, cached=True)
            else:
                todo.append(i)
        if todo:
            with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
                fresh = pool.map(self._judge_one, [requests[i] for i in todo])
                bar = tqdm(fresh, total=len(todo), desc="judging", leave=False, disable=None)
                for i, judgement in zip(todo, bar):
                    results[i] = judgement
                    if self.cache is not None:
                        self.cache.put(self.rubric.cache_key(requests[i], self.name), judgement)
        failed = [r for r in results if r is not None and not r.ok]
        if failed:
            logger.warning(
                "judge %s failed on %d of %d answers (first: %s)",
                self.name,
                len(failed),
                len(requests),
                failed[0].error,
            )
        return [r for r in results if r is not None]

    def _time_left(self) -> float | None:
        """Seconds until the overall deadline (``None``: no deadline)."""
        return None if self._ends is None else self._ends - time.monotonic()

    def _read_reply(self, request: Any, raw: str, attempts: int) -> Judgement:
        """Turn the judge's reply into a judgement; an unusable reply is a failed one
        (which the retry loop retries like an HTTP error)."""
        try:
            scores, rationale = self.rubric.read(raw)
        except UnusableReply as exc:
            return Judgement(
                key=request.key, judge=self.name, error=str(exc), attempts=attempts, raw=raw
            )
        return Judgement(
            key=request.key,
            judge=self.name,
            scores=scores,
            rationale=rationale,
            attempts=attempts,
            raw=raw,
        )

    def _judge_one(self, request: Any) -> Judgement:
        import openai

        error = "not attempted"
        raw: str | None = None
        attempts = 0
        for attempt in range(self.max_retries + 1):
            left = self._time_left()
            if left is not None and left <= 0:
                error = f"judge deadline of {self.deadline:g}s passed ({error})"
                break
            attempts += 1
            retryable = True
            client = self._client
            if left is not None and left < self.timeout:
                client = client.with_options(timeout=left)
            try:
                response = client.chat.completions.create(
                    model=self.name,
                    messages=self.rubric.messages(request),  # type: ignore[arg-type]
                    temperature=self.temperature,
                    max_tokens=self.max_tokens,
                )
                raw = response.choices[0].message.content or ""
                judgement = self._read_reply(request, raw, attempts)
                if judgement.ok:
                    return judgement
                error = judgement.error or "unusable reply"
            except openai.APIStatusError as exc:
                error = f"HTTP {exc.status_code}: {exc.message}"
                retryable = exc.status_code in RETRYABLE_STATUS or exc.status_code >= 500
            except openai.APIConnectionError as exc:  # includes timeouts
                error = f"{type(exc).__name__}: {exc}"
            except Exception as exc:  # malformed bodies, empty choices, ...
                error = f"malformed response ({type(exc).__name__}: {exc})"
            if not retryable:
                break
            if attempt < self.max_retries and self.backoff > 0:
                pause = self.backoff * 2**attempt
                left = self._time_left()
                time.sleep(pause if left is None else max(0.0, min(pause, left)))
        return Judgement(key=request.key, judge=self.name, error=error, attempts=attempts, raw=raw)
