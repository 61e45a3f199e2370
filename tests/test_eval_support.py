"""Builders shared by the evaluation tests (tiny tokenizer, MCQ items), and their checks.

The tokenizer is word-level over a fixed vocabulary that includes the pieces of an MCQ
prompt (letters, ``.``, ``Answer``, ``:``), so letters and options tokenize to distinct
ids and scores can differ between options. It fits the conftest models (ids < VOCAB).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.conftest import VOCAB
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from yapo.data.prompts import format_mcq_prompt
from yapo.data.records import CulturalMCQ, OpenQuestion

SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]
PIECES = ["A", "B", "C", "D", ".", ":", "Answer", "{", "}", "\\", "boxed"]
WORDS = [f"w{i}" for i in range(VOCAB - len(SPECIALS) - len(PIECES))]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}w1 {{ m['content'] }} w2 {% endfor %}"
    "{% if add_generation_prompt %}w3{% endif %}"
)


def make_eval_tokenizer(chat: bool = False) -> PreTrainedTokenizerFast:
    vocab = {token: i for i, token in enumerate(SPECIALS + PIECES + WORDS)}
    assert len(vocab) == VOCAB
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(
        single="<bos> $A", special_tokens=[("<bos>", 1)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
    )
    if chat:
        tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def make_items() -> list[CulturalMCQ]:
    """Eight MCQs over three countries in two languages; option 2 is the Western one."""
    items = []
    layout = [("es", "Spain"), ("es", "Spain"), ("es", "Spain"), ("es", "Mexico")]
    layout += [("es", "Mexico"), ("ar", "Egypt"), ("ar", "Egypt"), ("ar", "Egypt")]
    for n, (language, country) in enumerate(layout):
        base = 10 + 5 * n
        items.append(
            CulturalMCQ(
                id=f"q{n}-{language}",
                question_id=f"q{n}",
                language=language,
                country=country,
                localized=f"w{base} w{base + 1} w{base + 2} w60",
                nonlocalized=f"w{base} w{base + 1} w{base + 2}",
                options=[f"w{base + 3}", f"w{base + 4} w{base + 1}", f"w{70 + n}"],
                answer=n % 2,
                option_countries=[country, "Other", "Western"],
            )
        )
    return items


def make_open_questions() -> list[OpenQuestion]:
    return [
        OpenQuestion(
            id=f"o{n}",
            question_id=f"o{n}",
            language="es" if n < 2 else "ar",
            country="Spain" if n < 2 else "Egypt",
            localized=f"w{20 + n} w21 w60",
            nonlocalized=f"w{20 + n} w21",
            reference=f"w{30 + n}",
        )
        for n in range(3)
    ]


def write_mcq_jsonl(path: Path, items: list[CulturalMCQ], extra_lines: list[str] = ()) -> Path:  # type: ignore[assignment]
    lines = [json.dumps(item.to_json()) for item in items]
    path.write_text("\n".join([*lines, *extra_lines]) + "\n", encoding="utf-8")
    return path


GOOD = {
    "language_quality": 2,
    "factual_accuracy": 1.5,
    "cultural_appropriateness": 3,
    "content_quality": 1,
    "rationale": "fine",
}


class Script:
    """Server state: calls per answer, requests seen, and concurrency high-water mark."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: dict[str, int] = {}
        self.bodies: list[dict[str, Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0

    def reply(self, answer: str, call: int) -> tuple[int, str]:
        """(HTTP status, body) for the ``call``-th request about ``answer`` (1-based)."""
        ok = _completion(json.dumps(GOOD))
        if answer.startswith("slow"):
            time.sleep(0.15)
            return 200, ok
        if answer == "fail500x2":
            return (500, '{"error": {"message": "boom"}}') if call <= 2 else (200, ok)
        if answer == "always500":
            return 500, '{"error": {"message": "still down"}}'
        if answer == "bad-request":
            return 400, '{"error": {"message": "unknown model"}}'
        if answer == "malformed-once":
            return (200, _completion("I think it is good.")) if call == 1 else (200, ok)
        if answer == "always-malformed":
            return 200, _completion('{"language_quality": 9, "factual_accuracy": 1}')
        if answer == "garbage-body":
            return 200, "<html>not json</html>"
        if answer == "no-choices":
            return 200, json.dumps({"id": "x", "object": "chat.completion", "choices": []})
        if answer == "fenced":
            return 200, _completion("Here:\n```json\n" + json.dumps(GOOD) + "\n```")
        return 200, ok


def _completion(content: str) -> str:
    return json.dumps(
        {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": 0,
            "model": "judge-test",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                }
            ],
        }
    )


def _answer_of(body: dict[str, Any]) -> str:
    user = body["messages"][-1]["content"]
    return user.split("ANSWER:", 1)[1].strip()


@contextlib.contextmanager
def serve_judge() -> Iterator[tuple[str, Script]]:
    """A real OpenAI-compatible server on localhost: ``(base_url, script)``."""
    script = Script()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            body = json.loads(self.rfile.read(length))
            with script.lock:
                script.bodies.append(body)
                answer = _answer_of(body)
                call = script.calls[answer] = script.calls.get(answer, 0) + 1
                script.in_flight += 1
                script.max_in_flight = max(script.max_in_flight, script.in_flight)
            try:
                if self.path != "/v1/chat/completions":
                    status, payload = 404, "{}"
                else:
                    status, payload = script.reply(answer, call)
            finally:
                with script.lock:
                    script.in_flight -= 1
            data = payload.encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            return None

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", script
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_mcq_pieces_tokenize_to_distinct_known_ids() -> None:
    tokenizer = make_eval_tokenizer()
    item = make_items()[0]
    ids = tokenizer(format_mcq_prompt(item.localized, item.options))["input_ids"]
    assert ids[0] == tokenizer.bos_token_id
    assert tokenizer.unk_token_id not in ids
    letters = [tokenizer("A B C D", add_special_tokens=False)["input_ids"]]
    assert len(set(letters[0])) == 4


def test_chat_template_renders_bos_once() -> None:
    tokenizer = make_eval_tokenizer(chat=True)
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "w5"}], tokenize=False, add_generation_prompt=True
    )
    assert text.startswith("<bos>") and text.count("<bos>") == 1
