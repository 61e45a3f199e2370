"""The judge: rubric parsing, and the HTTP client against a real local server.

The server is a stdlib ``ThreadingHTTPServer`` speaking ``POST /v1/chat/completions``.
What it replies is scripted by the ANSWER being graded (``good``, ``fail500x2``,
``always500``, ``malformed-once``, ...), so one run exercises success, retries,
non-retryable errors, malformed bodies, the cache and the concurrency limit.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import make_model
from tests.test_eval_support import (
    GOOD,
    Script,
    make_eval_tokenizer,
    make_open_questions,
    serve_judge,
)

from yapo import YapoError
from yapo.evaluate.judge import (
    JudgeCache,
    Judgement,
    JudgeRequest,
    LocalJudge,
    OpenAIJudge,
    RubricParseError,
    parse_judgement,
)
from yapo.evaluate.judge import local as local_module
from yapo.evaluate.metrics import summarize
from yapo.evaluate.openended import run_open
from yapo.evaluate.scoring import Throughput


@pytest.fixture
def server() -> Iterator[tuple[str, Script]]:
    with serve_judge() as running:
        yield running


def _request(answer: str, key: str | None = None) -> JudgeRequest:
    return JudgeRequest(
        key=key or answer,
        question="w1 w2",
        answer=answer,
        reference="w3",
        country="Spain",
        language="es",
    )


def _judge(url: str, **kwargs: Any) -> OpenAIJudge:
    options: dict[str, Any] = {"max_retries": 2, "backoff": 0.0, "timeout": 10.0}
    options.update(kwargs)
    return OpenAIJudge("judge-test", url, api_key="test-key", **options)


def test_rubric_replies_are_read_leniently_but_checked_strictly() -> None:
    scores, rationale = parse_judgement(json.dumps(GOOD))
    assert scores == {
        "language_quality": 2.0,
        "factual_accuracy": 1.5,
        "cultural_appropriateness": 3.0,
        "content_quality": 1.0,
    }
    assert rationale == "fine"
    fenced, _ = parse_judgement("Sure!\n```json\n" + json.dumps(GOOD) + "\n```\nDone.")
    assert fenced == scores
    lines = (
        "**Language quality (0-2)**: 2\nFactual accuracy: 1.5/3\n"
        "Cultural appropriateness = 3\ncontent_quality: 1"
    )
    assert parse_judgement(lines)[0] == scores
    keys = json.dumps(
        {
            "Language Quality": 1,
            "Factual Accuracy": 0,
            "Cultural-Appropriateness": 0,
            "content quality": 2,
        }
    )
    assert sum(parse_judgement(keys)[0].values()) == 3.0
    with pytest.raises(RubricParseError, match="outside"):
        parse_judgement(json.dumps({**GOOD, "factual_accuracy": 4}))
    with pytest.raises(RubricParseError, match="content_quality missing"):
        parse_judgement(json.dumps({k: v for k, v in GOOD.items() if k != "content_quality"}))
    with pytest.raises(RubricParseError, match="not a number"):
        parse_judgement(json.dumps({**GOOD, "language_quality": "two"}))
    with pytest.raises(RubricParseError):
        parse_judgement("no scores at all")


def test_http_judge_grades_retries_and_records_failures(server: tuple[str, Script]) -> None:
    url, script = server
    answers = [
        "good",
        "fenced",
        "fail500x2",
        "malformed-once",
        "always500",
        "bad-request",
        "always-malformed",
        "garbage-body",
        "no-choices",
    ]
    judge = _judge(url, concurrency=3)
    results = judge.judge([_request(a) for a in answers])
    by_answer = {a: r for a, r in zip(answers, results)}
    assert [r.key for r in results] == answers
    assert all(r.judge == "judge-test" for r in results)

    assert by_answer["good"].ok and by_answer["good"].total == pytest.approx(7.5)
    assert by_answer["good"].normalized == pytest.approx(0.75)
    assert by_answer["good"].attempts == 1 and by_answer["good"].rationale == "fine"
    assert by_answer["fenced"].total == pytest.approx(7.5)
    assert by_answer["fail500x2"].ok and by_answer["fail500x2"].attempts == 3
    assert by_answer["malformed-once"].ok and by_answer["malformed-once"].attempts == 2

    for answer, error in [
        ("always500", "HTTP 500"),
        ("bad-request", "HTTP 400"),
        ("always-malformed", "unusable judge reply"),
        ("garbage-body", "malformed response"),
        ("no-choices", "malformed response"),
    ]:
        failed = by_answer[answer]
        assert not failed.ok and failed.total is None and error in str(failed.error), answer
    assert by_answer["always500"].attempts == 3 == script.calls["always500"]
    assert by_answer["bad-request"].attempts == 1 == script.calls["bad-request"]  # not retried
    assert script.calls["always-malformed"] == 3

    body = script.bodies[0]
    assert body["model"] == "judge-test" and body["temperature"] == 0.0
    assert "cultural_appropriateness (0-3)" in body["messages"][0]["content"]
    assert "COUNTRY: Spain" in body["messages"][1]["content"]
    assert judge.describe()["model"] == "judge-test"
    assert judge.describe()["base_url"] == url


def test_official_api_without_a_key_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("YAPO_JUDGE_API_KEY", raising=False)
    with pytest.raises(YapoError, match="needs a key"):
        OpenAIJudge("gpt-4o-mini")
    assert OpenAIJudge("local", "http://127.0.0.1:9/v1").name == "local"  # local: no key needed


def test_concurrency_is_limited(server: tuple[str, Script]) -> None:
    url, script = server
    judge = _judge(url, concurrency=2)
    results = judge.judge([_request(f"slow-{i}") for i in range(6)])
    assert all(r.ok for r in results)
    assert script.max_in_flight == 2


def test_cache_skips_the_server_and_keeps_only_successes(
    server: tuple[str, Script], tmp_path: Path
) -> None:
    url, script = server
    path = tmp_path / "cache.jsonl"
    requests = [_request("good"), _request("always500")]
    first = _judge(url, cache=JudgeCache(path)).judge(requests)
    assert [r.ok for r in first] == [True, False]
    assert script.calls == {"good": 1, "always500": 3}

    again = _judge(url, cache=JudgeCache(path)).judge(
        [_request("good", key="other-key"), _request("always500")]
    )
    assert again[0].cached and again[0].key == "other-key" and again[0].total == first[0].total
    assert script.calls == {"good": 1, "always500": 6}  # the failure was asked again
    assert len(JudgeCache(path)) == 1

    other_judge = OpenAIJudge(
        "another-judge", url, api_key="k", backoff=0.0, cache=JudgeCache(path)
    )
    other_judge.judge([_request("good")])
    assert script.calls["good"] == 2  # the judge model is part of the key

    with open(path, "a", encoding="utf-8") as handle:
        handle.write('{"key": "torn", "judgem')  # a crash mid-write
    reloaded = JudgeCache(path)
    assert len(reloaded) == 2 and reloaded.skipped_lines == 1


def test_open_ended_run_counts_judge_failures_and_keeps_going(server: tuple[str, Script]) -> None:
    url, _ = server
    model = make_model("llama")
    tokenizer = make_eval_tokenizer()
    questions = make_open_questions()

    class PartlyDown(OpenAIJudge):
        """The real client, pointed at answers the server fails on for one question."""

        def judge(self, requests: Any) -> list[Judgement]:
            rewritten = [
                JudgeRequest(
                    r.key,
                    r.question,
                    "always500" if r.key.startswith("o1/") else "good",
                    r.reference,
                    r.country,
                    r.language,
                )
                for r in requests
            ]
            return super().judge(rewritten)

    judge = PartlyDown("judge-test", url, api_key="k", backoff=0.0, max_retries=1)
    run = run_open(model, tokenizer, questions, judge, vector=None)
    assert len(run.answers) == 2 * len(questions)
    assert run.failures == 2
    assert all(a.judgement.ok == (a.id != "o1") for a in run.answers)
    assert run.throughput.sequences == 6
    summary = summarize(run.pairs(), samples=20)
    spain = summary.get("country", "Spain").metrics
    assert spain["localized"].value == pytest.approx(0.75)  # o0 only; o1 failed
    assert summary.get("country", "Egypt").metrics["mixed"].value == pytest.approx(0.75)


def test_local_judge_records_unusable_replies_and_reads_good_ones(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    model = make_model("llama")
    tokenizer = make_eval_tokenizer(chat=True)
    requests = [_request("w5"), _request("w6")]
    judge = LocalJudge(model, tokenizer, name="tiny-judge", max_new_tokens=4)
    garbage = judge.judge(requests)  # a random tiny model writes no rubric
    assert [j.ok for j in garbage] == [False, False]
    assert all("unusable judge reply" in str(j.error) and j.judge == "tiny-judge" for j in garbage)

    seen: list[str] = []

    def scripted(_model: Any, _tokenizer: Any, prompts: list[str], **_: Any) -> Any:
        seen.extend(prompts)
        return [json.dumps(GOOD), "nonsense"], Throughput()

    monkeypatch.setattr(local_module, "generate_texts", scripted)
    cache = JudgeCache(tmp_path / "local.jsonl")
    judge = LocalJudge(model, tokenizer, name="tiny-judge", cache=cache)
    graded = judge.judge(requests)
    assert graded[0].total == pytest.approx(7.5) and not graded[1].ok
    assert seen[0].startswith("<bos>") and "COUNTRY: Spain" in seen[0]
    assert len(cache) == 1
    assert judge.describe()["backend"] == "local-hf"
