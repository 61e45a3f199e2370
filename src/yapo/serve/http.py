"""The OpenAI-compatible HTTP front of ``yapo serve`` (standard library ``http.server``).

Routes: ``POST /v1/completions``, ``POST /v1/chat/completions`` (both with
``"stream": true`` as server-sent events), ``GET /v1/models``, ``GET /v1/vectors``
(and ``/v1/vectors/<name>``), ``GET /health``. Each connection gets a thread
(``ThreadingHTTPServer``); generation itself is serialised by the engine's lock. A
request that fails — malformed (400), unknown vector or model (404), or a bug (500) —
gets a JSON error in OpenAI's shape and the server keeps serving.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import traceback
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from yapo.serve.engine import Completion, Engine
from yapo.serve.protocol import GenerationRequest, RequestError, parse_request
from yapo.vectors.sparse import SparseVector

logger = logging.getLogger(__name__)
MAX_BODY = 4 * 1024 * 1024


def vector_info(name: str, vector: Any) -> dict[str, Any]:
    meta = vector.meta
    info = {
        "id": name,
        "object": "steering_vector",
        "kind": vector.kind,
        "method": meta.method,
        "layer": meta.layer,
        "d_model": meta.d_model,
        "model": meta.model,
        "nonzero": int((vector.vector != 0).sum()),
        "norm": float(vector.vector.norm()),
    }
    if isinstance(vector, SparseVector):
        info.update(d_sae=meta.d_sae, sae_reference=meta.sae_reference)
    return info


class _Handler(BaseHTTPRequestHandler):
    server: YapoHTTPServer
    protocol_version = "HTTP/1.1"

    # ----------------------------------------------------------------- plumbing
    def log_message(self, format: str, *args: Any) -> None:
        logger.info("%s - %s", self.address_string(), format % args)

    def _send_json(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_error(self, error: RequestError) -> None:
        self._send_json(error.status, error.to_json())

    def _body(self) -> Any:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.close_connection = True
            raise RequestError(400, "invalid Content-Length") from None
        if length > MAX_BODY:
            self.close_connection = True
            raise RequestError(413, f"request body over {MAX_BODY} bytes")
        raw = self.rfile.read(length) if length else b""
        if not raw.strip():
            raise RequestError(400, "the request body is empty; send a JSON object")
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RequestError(400, f"the request body is not valid JSON: {exc}") from None

    def _guard(self, work: Any) -> None:
        try:
            work()
        except RequestError as error:
            self._send_error(error)
        except (BrokenPipeError, ConnectionResetError):
            logger.info("client went away")
        except Exception as exc:  # a bug: report it, keep serving
            logger.error("request failed:\n%s", traceback.format_exc())
            self._send_error(RequestError(500, f"internal error: {type(exc).__name__}: {exc}"))

    # ------------------------------------------------------------------- routes
    def do_GET(self) -> None:
        self._guard(self._get)

    def do_POST(self) -> None:
        self._guard(self._post)

    def _not_allowed(self) -> None:
        self._send_error(RequestError(405, f"{self.command} is not supported here"))

    do_PUT = do_DELETE = do_PATCH = _not_allowed

    def _get(self) -> None:
        engine = self.server.engine
        path = self.path.split("?", 1)[0].rstrip("/")
        if path == "/health":
            self._send_json(200, {"status": "ok"})
        elif path == "/v1/models":
            model = {"id": engine.model_id, "object": "model", "created": self.server.started}
            self._send_json(200, {"object": "list", "data": [{**model, "owned_by": "yapo"}]})
        elif path == "/v1/vectors":
            data = [vector_info(n, v) for n, v in sorted(engine.vectors.items())]
            self._send_json(200, {"object": "list", "data": data})
        elif path.startswith("/v1/vectors/"):
            name = path[len("/v1/vectors/") :]
            if name not in engine.vectors:
                raise RequestError(404, f"unknown vector {name!r}")
            self._send_json(200, vector_info(name, engine.vectors[name]))
        elif path in ("/v1/completions", "/v1/chat/completions"):
            raise RequestError(405, f"use POST for {path}")
        else:
            raise RequestError(404, f"no route {path}")

    def _post(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        body = self._body()  # read first: an unread body would corrupt a kept-alive connection
        if path not in ("/v1/completions", "/v1/chat/completions"):
            raise RequestError(404, f"no route {path}")
        chat = path.endswith("chat/completions")
        request = parse_request(
            body,
            chat=chat,
            default_max_tokens=self.server.default_max_tokens if chat else 16,
            max_tokens_limit=self.server.max_tokens_limit,
        )
        engine = self.server.engine
        if request.stream:
            self._stream(engine, request)
        else:
            self._send_json(200, self._response(request, engine.complete(request)))

    # ---------------------------------------------------------------- responses
    def _envelope(self, request: GenerationRequest, chunk: bool) -> dict[str, Any]:
        kind = ("chat.completion" if request.chat else "text_completion") + (
            ".chunk" if chunk and request.chat else ""
        )
        prefix = "chatcmpl" if request.chat else "cmpl"
        return {
            "id": f"{prefix}-{uuid.uuid4().hex[:24]}",
            "object": kind,
            "created": int(time.time()),
            "model": self.server.engine.model_id,
        }

    def _response(self, request: GenerationRequest, done: Completion) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0, "finish_reason": done.finish_reason}
        if request.chat:
            choice["message"] = {"role": "assistant", "content": done.text}
        else:
            choice.update(text=done.text, logprobs=None)
        return {
            **self._envelope(request, chunk=False),
            "choices": [choice],
            "usage": _usage(done),
            "steering": [s.to_json() for s in request.steering],
        }

    def _stream(self, engine: Engine, request: GenerationRequest) -> None:
        pieces = engine.stream(request)
        try:
            first = next(pieces)  # errors (404, 400) surface before any byte is sent
        except StopIteration:  # pragma: no cover - stream always ends with a Completion
            return
        envelope = self._envelope(request, chunk=True)
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            if request.chat:
                self._event({**envelope, "choices": [_delta({"role": "assistant"}, None)]})
            try:
                for piece in _chain(first, pieces):
                    if isinstance(piece, Completion):
                        end = _delta({}, piece.finish_reason) if request.chat else _text("", piece)
                        self._event({**envelope, "choices": [end], "usage": _usage(piece)})
                        break
                    choice = (
                        _delta({"content": piece}, None) if request.chat else _text(piece, None)
                    )
                    self._event({**envelope, "choices": [choice]})
            except (BrokenPipeError, ConnectionResetError):
                raise
            except Exception as exc:  # headers are out: report in the stream itself
                logger.error("streaming failed:\n%s", traceback.format_exc())
                self._event(RequestError(500, f"internal error: {exc}").to_json())
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
        finally:
            pieces.close()  # releases the engine's lock even if the client went away

    def _event(self, payload: dict[str, Any]) -> None:
        self.wfile.write(f"data: {json.dumps(payload, ensure_ascii=False)}\n\n".encode())
        self.wfile.flush()


def _chain(first: str | Completion, rest: Iterator[str | Completion]) -> Iterator[Any]:
    yield first
    yield from rest


def _usage(done: Completion) -> dict[str, int]:
    return {
        "prompt_tokens": done.prompt_tokens,
        "completion_tokens": done.completion_tokens,
        "total_tokens": done.prompt_tokens + done.completion_tokens,
    }


def _delta(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
    return {"index": 0, "delta": delta, "finish_reason": finish}


def _text(text: str, done: Completion | None) -> dict[str, Any]:
    finish = done.finish_reason if done is not None else None
    return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}


class YapoHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server around an :class:`Engine`."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        engine: Engine,
        host: str = "127.0.0.1",
        port: int = 8000,
        *,
        default_max_tokens: int = 256,
        max_tokens_limit: int = 4096,
    ) -> None:
        super().__init__((host, port), _Handler)
        self.engine = engine
        self.default_max_tokens = default_max_tokens
        self.max_tokens_limit = max_tokens_limit
        self.started = int(time.time())

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def start_background(self) -> threading.Thread:
        """Serve in a daemon thread (tests, notebooks, benchmarks); stop with ``shutdown``."""
        thread = threading.Thread(target=self.serve_forever, name="yapo-serve", daemon=True)
        thread.start()
        return thread
