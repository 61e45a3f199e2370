"""Text for SAE training: plain-text / JSONL files, and the model's own samples.

An SAE only sees what it is trained on, so the corpus decides which features exist.
Files are read lazily (one document at a time) so a corpus larger than memory can be
streamed. Formats, chosen by suffix:

* ``.jsonl`` / ``.json`` — one JSON object per line, text in ``text_field`` (default
  ``"text"``); lines without that field are an error (a typo in the field name would
  otherwise give an empty corpus silently);
* anything else — plain UTF-8 text, one document per blank-line-separated paragraph.

The model's own samples (:func:`sample_texts`) are a fallback for languages with little
real text available: they are on-distribution for the model by construction, but they
are not real text, and a corpus made mostly of them teaches the SAE the model's
habits rather than the world's. Keep them a minority and say how much was used.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from yapo.errors import YapoError

JSON_SUFFIXES = (".jsonl", ".json")


def iter_file_texts(path: str | Path, text_field: str = "text") -> Iterator[str]:
    """Yield the documents of one corpus file (see module docstring for formats)."""
    path = Path(path)
    if not path.is_file():
        raise YapoError(f"corpus file not found: {path}")
    if path.suffix.lower() in JSON_SUFFIXES:
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise YapoError(f"{path}:{number} is not valid JSON: {exc}") from exc
                if not isinstance(record, dict) or text_field not in record:
                    raise YapoError(
                        f"{path}:{number} has no {text_field!r} field "
                        "(pass --text-field to name the field that holds the text)"
                    )
                text = str(record[text_field])
                if text.strip():
                    yield text
        return
    paragraph: list[str] = []
    with path.open(encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if line.strip():
                paragraph.append(line.rstrip("\n"))
            elif paragraph:
                yield "\n".join(paragraph)
                paragraph = []
    if paragraph:
        yield "\n".join(paragraph)


def iter_corpus(files: Sequence[str | Path], text_field: str = "text") -> Iterator[str]:
    """Yield every document of every file, in order (the order is part of reproducibility)."""
    if not files:
        raise YapoError("no corpus files given")
    for file in files:
        yield from iter_file_texts(file, text_field=text_field)


def read_seed_prompts(path: str | Path) -> list[str]:
    """Seed prompts for :func:`sample_texts`: one per line, ``#`` starts a comment."""
    path = Path(path)
    if not path.is_file():
        raise YapoError(f"seed prompt file not found: {path}")
    seeds = [
        line.strip()
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not seeds:
        raise YapoError(f"{path} holds no seed prompts")
    return seeds


def sample_texts(
    model: Any,
    tokenizer: Any,
    seeds: Sequence[str],
    *,
    max_tokens: int,
    max_new_tokens: int = 192,
    batch_size: int = 16,
    temperature: float = 0.9,
    seed: int = 0,
    progress: bool = True,
) -> list[str]:
    """Sample continuations of ``seeds`` (cycled) until about ``max_tokens`` new tokens.

    Each returned text is the seed followed by its continuation, so the activations of
    the seed (real, human-written) are included too. Sampling is seeded per batch so a
    rerun gives the same texts on the same machine.
    """
    from tqdm.auto import tqdm

    from yapo.generation import generate

    if not seeds:
        raise YapoError("no seed prompts to sample from")
    if max_tokens <= 0:
        return []
    texts: list[str] = []
    produced = 0
    bar = tqdm(total=max_tokens, desc="sampling", unit="tok", disable=not progress)
    batch_index = 0
    while produced < max_tokens:
        start = (batch_index * batch_size) % len(seeds)
        prompts = [seeds[(start + i) % len(seeds)] for i in range(batch_size)]
        outputs = generate(
            model,
            tokenizer,
            prompts,
            max_new_tokens=max_new_tokens,
            do_sample=True,
            temperature=temperature,
            seed=seed + batch_index,
        )
        for prompt, output in zip(prompts, outputs):
            n = len(tokenizer(output, add_special_tokens=False)["input_ids"])
            produced += n
            bar.update(n)
            texts.append(prompt + output)
        batch_index += 1
    bar.close()
    return texts


def write_jsonl_texts(path: str | Path, texts: Iterable[str], **fields: Any) -> int:
    """Write ``{"text": ..., **fields}`` lines atomically; returns the number written."""
    from yapo._io import atomic_path

    count = 0
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as handle:
        for text in texts:
            handle.write(json.dumps({"text": text, **fields}, ensure_ascii=False) + "\n")
            count += 1
    return count
