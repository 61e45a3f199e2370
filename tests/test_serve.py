"""``yapo serve`` through the real ``openai`` client on 127.0.0.1, on a tiny model.

The oracle is the library's own :func:`yapo.generation.generate` (what ``yapo generate``
calls) with the same vector, multiplier, direction and greedy decoding.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import openai
import pytest
import torch
from tests.conftest import HIDDEN, make_model, make_sae, make_tokenizer
from typer.testing import CliRunner

from yapo import DenseVector, SparseVector
from yapo.generation import generate
from yapo.serve import YapoHTTPServer, build_server, parse_vector_spec

CHAT_TEMPLATE = (
    "{% for m in messages %}w5 {{ m['content'] }} w6 {% endfor %}"
    "{% if add_generation_prompt %}w7{% endif %}"
)
PROMPT = "w10 w11 w12 w13"


@pytest.fixture(scope="module")
def setup() -> Iterator[dict[str, Any]]:
    torch.manual_seed(0)
    model = make_model("llama")
    tokenizer = make_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    dense = DenseVector.create(torch.randn(HIDDEN) * 4, model, 2, method="bipo")
    sae = make_sae()
    sparse_values = torch.zeros(96)
    sparse_values[torch.arange(0, 96, 7)] = torch.randn(14) * 3  # some negative: exact form
    sparse = SparseVector.create(sparse_values, model, 1, sae, method="yapo")
    server = build_server(
        "tiny-llama",
        {"dense": dense, "sparse": sparse},
        port=0,
        loaded=(model, tokenizer),
        default_max_tokens=8,
        max_tokens_limit=64,
    )
    server.start_background()
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    try:
        yield {
            "server": server,
            "client": client,
            "model": model,
            "tokenizer": tokenizer,
            "vectors": {"dense": dense, "sparse": sparse},
        }
    finally:
        server.shutdown()
        server.server_close()


def _library(setup: dict[str, Any], prompt: str, name: str | None, **kwargs: Any) -> str:
    vector = setup["vectors"][name] if name else None
    return generate(setup["model"], setup["tokenizer"], prompt, vector=vector, **kwargs)[0]


def _complete(setup: dict[str, Any], steering: list[dict[str, Any]] | None, **kw: Any) -> Any:
    extra = {"steering": steering} if steering is not None else None
    return setup["client"].completions.create(
        model="tiny-llama", prompt=kw.pop("prompt", PROMPT), temperature=0, extra_body=extra, **kw
    )


@pytest.mark.parametrize(
    ("name", "multiplier", "direction", "positions"),
    [("dense", 3.0, 1, "all"), ("sparse", 2.0, -1, "all"), ("dense", 2.0, -1, "generated")],
)
def test_steered_completion_equals_library_generate(
    setup: dict[str, Any], name: str, multiplier: float, direction: int, positions: str
) -> None:
    steering = [
        {"vector": name, "multiplier": multiplier, "direction": direction, "positions": positions}
    ]
    response = _complete(setup, steering, max_tokens=12)
    expected = _library(
        setup,
        PROMPT,
        name,
        multiplier=multiplier,
        direction=direction,
        positions=positions,
        max_new_tokens=12,
    )
    assert response.choices[0].text == expected
    assert response.usage.prompt_tokens == 5  # BOS + four words
    assert response.usage.completion_tokens >= 1
    plain = _library(setup, PROMPT, None, max_new_tokens=12)
    assert expected != plain  # the vector changes the output, so equality means something


def test_unsteered_and_chat_completion(setup: dict[str, Any]) -> None:
    plain = _complete(setup, None, max_tokens=10)
    assert plain.choices[0].text == _library(setup, PROMPT, None, max_new_tokens=10)
    chat = setup["client"].chat.completions.create(
        model="tiny-llama",
        messages=[{"role": "user", "content": "w20 w21 w22"}],
        temperature=0,
        max_tokens=10,
        extra_body={"steering": [{"vector": "dense", "multiplier": 3}]},
    )
    expected = _library(setup, "w20 w21 w22", "dense", multiplier=3.0, chat=True, max_new_tokens=10)
    assert chat.choices[0].message.content == expected
    assert chat.choices[0].message.role == "assistant"


def test_streaming_matches_the_whole_completion(setup: dict[str, Any]) -> None:
    steering = [{"vector": "sparse", "multiplier": 2.0}]
    whole = _complete(setup, steering, max_tokens=12).choices[0].text
    chunks = list(_complete(setup, steering, max_tokens=12, stream=True))
    assert "".join(c.choices[0].text for c in chunks) == whole
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    stream = setup["client"].chat.completions.create(
        model="tiny-llama",
        messages=[{"role": "user", "content": "w30 w31"}],
        temperature=0,
        max_tokens=8,
        stream=True,
        extra_body={"steering": {"vector": "dense", "multiplier": 3}},
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == _library(setup, "w30 w31", "dense", multiplier=3.0, chat=True, max_new_tokens=8)


def test_stop_strings_cut_the_text(setup: dict[str, Any]) -> None:
    steering = [{"vector": "dense", "multiplier": 3.0}]
    full = _complete(setup, steering, max_tokens=12).choices[0].text
    words = full.split()
    assert len(words) >= 3
    stop = words[2]
    cut = full[: full.find(stop)]
    response = _complete(setup, steering, max_tokens=12, stop=[stop])
    assert response.choices[0].text == cut and response.choices[0].finish_reason == "stop"
    streamed = _complete(setup, steering, max_tokens=12, stop=[stop], stream=True)
    assert "".join(c.choices[0].text for c in streamed) == cut


def test_concurrent_requests_with_different_vectors_do_not_leak(setup: dict[str, Any]) -> None:
    cases = {
        "dense": {"vector": "dense", "multiplier": 3.0},
        "sparse": {"vector": "sparse", "multiplier": 2.0, "direction": -1},
        "none": None,
    }
    expected = {
        "dense": _library(setup, PROMPT, "dense", multiplier=3.0, max_new_tokens=24),
        "sparse": _library(
            setup, PROMPT, "sparse", multiplier=2.0, direction=-1, max_new_tokens=24
        ),
        "none": _library(setup, PROMPT, None, max_new_tokens=24),
    }
    assert len(set(expected.values())) == 3
    results: dict[str, list[str]] = {k: [] for k in cases}
    barrier = threading.Barrier(6)

    def worker(name: str, stream: bool) -> None:
        barrier.wait()
        spec = cases[name]
        steering = [spec] if spec else None
        if stream:
            chunks = _complete(setup, steering, max_tokens=24, stream=True)
            results[name].append("".join(c.choices[0].text for c in chunks))
        else:
            results[name].append(_complete(setup, steering, max_tokens=24).choices[0].text)

    threads = [
        threading.Thread(target=worker, args=(name, stream))
        for name in cases
        for stream in (False, True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert {k: sorted(v) for k, v in results.items()} == {k: [v, v] for k, v in expected.items()}
    # nothing left hooked on the model
    assert _complete(setup, None, max_tokens=24).choices[0].text == expected["none"]


def _raw(setup: dict[str, Any], path: str, body: bytes | None, method: str = "POST") -> Any:
    server: YapoHTTPServer = setup["server"]
    request = urllib.request.Request(
        f"{server.url}{path}",
        data=body,
        method=method,
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"", 400, "empty"),
        (b"[1, 2]", 400, "JSON object"),
        (json.dumps({"model": "tiny-llama"}).encode(), 400, "'prompt' is required"),
        (json.dumps({"prompt": PROMPT, "max_tokens": 0}).encode(), 400, "max_tokens"),
        (json.dumps({"prompt": PROMPT, "max_tokens": 1000}).encode(), 400, "max_tokens"),
        (json.dumps({"prompt": PROMPT, "n": 2}).encode(), 400, "n=1"),
        (json.dumps({"prompt": PROMPT, "temperature": "hot"}).encode(), 400, "temperature"),
        (json.dumps({"prompt": PROMPT, "steering": [{"vector": "dense", "direction": 0}]}).encode(),
         400, "direction"),
        (json.dumps({"prompt": PROMPT, "steering": [{"vector": "dense", "multipler": 2}]}).encode(),
         400, "multipler"),
        (json.dumps({"prompt": PROMPT, "steering": [{"vector": "dense", "positions": "x"}]}).encode(),
         400, "positions"),
        (json.dumps({"prompt": PROMPT, "steering": [{"vector": "nope"}]}).encode(), 404, "nope"),
        (json.dumps({"prompt": PROMPT, "model": "gpt-4"}).encode(), 404, "gpt-4"),
        (json.dumps({"prompt": [5, 99999]}).encode(), 400, "token ids"),
    ],
)  # fmt: skip
def test_malformed_requests_get_4xx_and_the_server_keeps_serving(
    setup: dict[str, Any], body: bytes, status: int, words: str
) -> None:
    code, payload = _raw(setup, "/v1/completions", body)
    assert code == status and words in payload["error"]["message"]
    assert payload["error"]["type"] in ("invalid_request_error", "not_found_error")
    assert _complete(setup, None, max_tokens=2).choices[0].text is not None


def test_openai_client_raises_the_matching_errors(setup: dict[str, Any]) -> None:
    with pytest.raises(openai.NotFoundError, match="unknown vector"):
        _complete(setup, [{"vector": "missing"}], max_tokens=2)
    with pytest.raises(openai.NotFoundError, match="unknown vector"):
        list(_complete(setup, [{"vector": "missing"}], max_tokens=2, stream=True))
    with pytest.raises(openai.BadRequestError, match="messages"):
        setup["client"].chat.completions.create(model="tiny-llama", messages=[], max_tokens=2)
    code, payload = _raw(setup, "/v1/nowhere", b"{}")
    assert code == 404 and "no route" in payload["error"]["message"]
    code, payload = _raw(setup, "/v1/completions", None, method="GET")
    assert code == 405


def test_models_and_vectors_endpoints(setup: dict[str, Any]) -> None:
    models = setup["client"].models.list()
    assert [m.id for m in models.data] == ["tiny-llama"]
    code, payload = _raw(setup, "/v1/vectors", None, method="GET")
    assert code == 200
    by_name = {v["id"]: v for v in payload["data"]}
    assert by_name["dense"]["kind"] == "dense" and by_name["dense"]["layer"] == 2
    assert by_name["sparse"]["kind"] == "sparse" and by_name["sparse"]["d_sae"] == 96
    assert by_name["sparse"]["nonzero"] == 14
    code, one = _raw(setup, "/v1/vectors/sparse", None, method="GET")
    assert code == 200 and one["method"] == "yapo"
    code, _ = _raw(setup, "/v1/vectors/other", None, method="GET")
    assert code == 404


def test_vector_specs_and_cli_help() -> None:
    assert parse_vector_spec("power=/runs/a/vector") == ("power", "/runs/a/vector")
    assert parse_vector_spec("/runs/bipo-ps/vector") == ("bipo-ps", "/runs/bipo-ps/vector")
    assert parse_vector_spec("owner/name@v1") == ("name", "owner/name@v1")
    from yapo.cli.main import app

    result = CliRunner().invoke(app, ["serve", "--help"])
    assert result.exit_code == 0 and "steering" in result.output


def test_a_client_leaving_mid_stream_frees_the_server(setup: dict[str, Any]) -> None:
    import http.client

    server: YapoHTTPServer = setup["server"]
    host, port = server.server_address[:2]
    connection = http.client.HTTPConnection(str(host), int(port), timeout=30)
    body = {"prompt": PROMPT, "max_tokens": 60, "stream": True, "temperature": 0}
    connection.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "x"})
    response = connection.getresponse()
    assert response.status == 200 and response.readline().startswith(b"data: ")
    connection.close()  # gone before the end
    expected = _library(setup, PROMPT, None, max_new_tokens=4)
    assert _complete(setup, None, max_tokens=4).choices[0].text == expected
