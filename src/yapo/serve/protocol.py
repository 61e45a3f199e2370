"""The request bodies ``yapo serve`` accepts, validated into plain dataclasses.

OpenAI's completion and chat-completion fields, plus one extra body field (what
``extra_body=`` of the ``openai`` client merges into the JSON), in the style of
EasySteer / vLLM-Hook::

    "steering": [{"vector": "name", "multiplier": 2.0, "direction": 1, "positions": "all"}]

(a single object is accepted too). Every problem becomes a :class:`RequestError` with
the HTTP status and a message saying what to change; unknown top-level OpenAI fields
are ignored (clients send many), unknown keys *inside* a steering entry are refused
(a typo such as ``"multipler"`` must not silently steer at λ = 1).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from yapo.intervene import POSITIONS, Positions

STEERING_KEYS = ("vector", "multiplier", "direction", "positions")


class RequestError(Exception):
    """A request the server refuses: HTTP ``status``, a message and the offending field."""

    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param

    @property
    def error_type(self) -> str:
        return {404: "not_found_error", 405: "invalid_request_error"}.get(
            self.status, "invalid_request_error" if self.status < 500 else "server_error"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.status,
            }
        }


def _bad(message: str, param: str | None = None) -> RequestError:
    return RequestError(400, message, param)


@dataclass(frozen=True)
class SteeringSpec:
    """One entry of a request's ``steering``: a served vector's name and how to apply it
    (the engine turns it into a :class:`yapo.vectors.Steer` once the name is resolved)."""

    vector: str
    multiplier: float = 1.0
    direction: int = 1
    positions: Positions = "all"

    def to_json(self) -> dict[str, Any]:
        return {
            "vector": self.vector,
            "multiplier": self.multiplier,
            "direction": self.direction,
            "positions": self.positions,
        }


@dataclass
class GenerationRequest:
    """What to generate: a prompt or chat messages, decoding settings, steering."""

    chat: bool
    prompt: str | list[int] | None = None
    messages: list[dict[str, Any]] | None = None
    max_tokens: int = 16
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    stream: bool = False
    model: str | None = None
    steering: list[SteeringSpec] = field(default_factory=list)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def _number(body: dict[str, Any], key: str, default: float, low: float, high: float) -> float:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad(f"'{key}' must be a number, got {value!r}", key)
    if not low <= float(value) <= high:
        raise _bad(f"'{key}' must be between {low} and {high}, got {value}", key)
    return float(value)


def _integer(body: dict[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(f"'{key}' must be an integer, got {value!r}", key)
    return value


def parse_steering(raw: Any) -> list[SteeringSpec]:
    """Validate the ``steering`` extra field (list of entries, one entry, or null)."""
    if raw is None:
        return []
    entries = [raw] if isinstance(raw, dict) else raw
    if not isinstance(entries, list):
        raise _bad("'steering' must be a list of {vector, multiplier, direction, positions}")
    specs = []
    for i, entry in enumerate(entries):
        where = f"steering[{i}]"
        if isinstance(entry, str):
            entry = {"vector": entry}
        if not isinstance(entry, dict):
            raise _bad(f"{where} must be an object with a 'vector' name", where)
        unknown = sorted(set(entry) - set(STEERING_KEYS))
        if unknown:
            raise _bad(f"{where} has unknown keys {unknown}; allowed: {list(STEERING_KEYS)}", where)
        name = entry.get("vector")
        if not isinstance(name, str) or not name:
            raise _bad(f"{where}.vector must be the name of a served vector", f"{where}.vector")
        multiplier = _number(entry, "multiplier", 1.0, -1e6, 1e6)
        direction = entry.get("direction", 1)
        if direction not in (-1, 1) or isinstance(direction, bool):
            raise _bad(f"{where}.direction must be 1 or -1, got {direction!r}", where)
        positions = entry.get("positions", "all")
        if positions not in POSITIONS:
            raise _bad(f"{where}.positions must be one of {list(POSITIONS)}", where)
        specs.append(SteeringSpec(name, multiplier, int(direction), positions))
    return specs


def _messages(raw: Any) -> list[dict[str, Any]]:
    if not isinstance(raw, list) or not raw:
        raise _bad("'messages' must be a non-empty list of {role, content}", "messages")
    messages = []
    for i, message in enumerate(raw):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise _bad(f"messages[{i}] must be an object with a 'role'", f"messages[{i}]")
        content = message.get("content")
        if isinstance(content, list):  # content parts: keep the text ones
            parts = [p.get("text") for p in content if isinstance(p, dict)]
            if not all(isinstance(p, str) for p in parts):
                raise _bad(f"messages[{i}].content: only text parts are supported")
            content = "".join(str(p) for p in parts)
        if not isinstance(content, str):
            raise _bad(f"messages[{i}].content must be a string", f"messages[{i}].content")
        messages.append({"role": message["role"], "content": content})
    return messages


def _prompt(raw: Any) -> str | list[int]:
    if isinstance(raw, list) and len(raw) == 1 and isinstance(raw[0], str | list):
        raw = raw[0]  # a batch of one
    if isinstance(raw, str):
        return raw
    if isinstance(raw, list) and raw and all(isinstance(t, int) for t in raw):
        return [int(t) for t in raw]
    if isinstance(raw, list) and len(raw) > 1:
        raise _bad("one prompt per request, please (send several requests)", "prompt")
    raise _bad("'prompt' must be a string or a list of token ids", "prompt")


def parse_request(
    body: Any, *, chat: bool, default_max_tokens: int, max_tokens_limit: int
) -> GenerationRequest:
    """Validate a ``/v1/completions`` (``chat=False``) or ``/v1/chat/completions`` body."""
    if not isinstance(body, dict):
        raise _bad("the request body must be a JSON object")
    request = GenerationRequest(chat=chat)
    if chat:
        request.messages = _messages(body.get("messages"))
    else:
        if "prompt" not in body:
            raise _bad("'prompt' is required", "prompt")
        request.prompt = _prompt(body["prompt"])
    max_tokens = _integer(body, "max_completion_tokens") if chat else None
    max_tokens = max_tokens if max_tokens is not None else _integer(body, "max_tokens")
    request.max_tokens = default_max_tokens if max_tokens is None else max_tokens
    if not 1 <= request.max_tokens <= max_tokens_limit:
        raise _bad(f"'max_tokens' must be between 1 and {max_tokens_limit}", "max_tokens")
    request.temperature = _number(body, "temperature", 0.0, 0.0, 2.0)
    request.top_p = _number(body, "top_p", 1.0, 1e-6, 1.0)
    request.seed = _integer(body, "seed")
    n = _integer(body, "n")
    if n not in (None, 1):
        raise _bad("only n=1 is supported", "n")
    if body.get("logprobs") not in (None, False, 0) or body.get("echo"):
        raise _bad("logprobs and echo are not supported by yapo serve", "logprobs")
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None and not (
        isinstance(stop, list) and all(isinstance(s, str) and s for s in stop)
    ):
        raise _bad("'stop' must be a string or a list of non-empty strings", "stop")
    request.stop = list(stop or [])
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise _bad("'stream' must be true or false", "stream")
    request.stream = stream
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise _bad("'model' must be a string", "model")
    request.model = model
    request.steering = parse_steering(body.get("steering"))
    return request
