"""Build the multilingual corpus the shipped default SAE was trained on.

Rebuilds ``train.jsonl``, ``heldout.jsonl``, ``heldout_eval.jsonl`` (a small
language-stratified evaluation set, see :func:`stratified_eval`) and ``manifest.json``
(tokens per source and language) in ``--out`` from real text available offline — nothing
is downloaded:

* ``blend``  — BLEnD questions in their local languages, their English translations,
  and annotator answers (both languages), from ``--data/blend/annotations``;
* ``bipo``   — BiPO behaviour prompts and answers (English), ``train.csv`` files only;
* ``gettext``— translated UI messages (``msgstr``) of the gettext catalogues installed
  under ``/usr/share/locale`` (and their English ``msgid`` originals once);
* ``man``    — manual pages under ``/usr/share/man`` rendered to text with ``groff``:
  every localized page (es, pt, pt_BR, de, fr, ...) and a capped sample of English ones;
* ``samples``— optional: the model's own continuations of the multilingual seed prompts
  in ``benchmarks/sae_seed_prompts.txt`` (``--sample-tokens``; 0 disables).

Documents are split into held-out and training sets by a hash of their text (about
``--heldout-fraction``), so the split does not depend on the order of the sources.
The corpus is other people's text: keep it outside the repository.

    python benchmarks/build_sae_corpus.py --out /work/sae_work/corpus \
        --data /work/shared/data --sample-tokens 100000
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import json
import random
import re
import struct
import subprocess
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from yapo._io import atomic_path, write_json
from yapo.data.blend import BLEND_LANGUAGES
from yapo.sae.training.corpus import read_seed_prompts, sample_texts

Doc = tuple[str, str, str]  # (source, language, text)

# Token caps per (source, language) for the training split; "*" is any other language.
# They keep the corpus within what a CPU can extract in half an hour (about 2.3M tokens)
# while favouring the paper's languages (en, es, pt, ar, hi) and BLEnD's.
CAPS: dict[str, dict[str, int]] = {
    "blend": {"*": 10**9},
    "bipo": {"*": 250_000},
    "gettext": {
        "en": 200_000,
        "es": 250_000,
        "pt": 130_000,
        "pt_BR": 130_000,
        "ar": 10**9,
        "hi": 10**9,
        "zh_CN": 50_000,
        "ko": 50_000,
        "fa": 10**9,
        "el": 50_000,
        "id": 50_000,
        "az": 10**9,
        "as": 50_000,
        "am": 10**9,
        "ha": 10**9,
        "*": 1_500,
    },
    "man": {"en": 150_000, "es": 10**9, "pt": 60_000, "pt_BR": 10**9, "*": 20_000},
    "samples": {"*": 10**9},
}
PACK_CHARS = 3000  # short records are packed into documents of about this many characters


def pack(lines: list[str], limit: int = PACK_CHARS) -> Iterator[str]:
    """Join short records into longer documents so activations see some context."""
    chunk: list[str] = []
    size = 0
    for line in lines:
        chunk.append(line)
        size += len(line) + 1
        if size >= limit:
            yield "\n".join(chunk)
            chunk, size = [], 0
    if chunk:
        yield "\n".join(chunk)


# ---------------------------------------------------------------- BLEnD
def blend_docs(root: Path) -> Iterator[Doc]:
    for path in sorted((root / "blend" / "annotations").glob("*_data.json")):
        country = path.name.removesuffix("_data.json")
        language = BLEND_LANGUAGES.get(country, "xx")
        data = json.loads(path.read_text(encoding="utf-8"))
        local: list[str] = []
        english: list[str] = []
        for entry in data.values():
            answers = [a for ann in entry.get("annotations", []) for a in ann.get("answers", [])]
            en_answers = [
                a for ann in entry.get("annotations", []) for a in ann.get("en_answers", [])
            ]
            local.append(f"{entry['question']}\n{', '.join(answers)}")
            english.append(f"{entry['en_question']}\n{', '.join(en_answers)}")
        for text in pack(local):
            yield "blend", language, text
        if language != "en":  # UK/US local text is already English
            for text in pack(english):
                yield "blend", "en", text


# ----------------------------------------------------------------- BiPO
def bipo_docs(root: Path) -> Iterator[Doc]:
    for path in sorted((root / "bipo").glob("*/train.csv")):
        with path.open(encoding="utf-8", newline="") as handle:
            rows = [
                f"{r['question']}\n{r['matching']}\n{r['not_matching']}"
                for r in csv.DictReader(handle)
                if (r.get("question") or "").strip()
            ]
        for text in pack(rows):
            yield "bipo", "en", text


# -------------------------------------------------------------- gettext
def read_mo(path: Path) -> list[tuple[str, str]]:
    """(msgid, msgstr) pairs of a GNU .mo catalogue (format: GNU gettext manual §10.3)."""
    data = path.read_bytes()
    magic = struct.unpack("<I", data[:4])[0]
    endian = "<" if magic == 0x950412DE else ">"
    _, count, orig_table, trans_table = struct.unpack(endian + "4I", data[4:20])
    pairs = []
    for i in range(count):
        olen, ooff = struct.unpack(endian + "2I", data[orig_table + 8 * i : orig_table + 8 * i + 8])
        tlen, toff = struct.unpack(
            endian + "2I", data[trans_table + 8 * i : trans_table + 8 * i + 8]
        )
        msgid = data[ooff : ooff + olen].decode("utf-8", errors="replace")
        msgstr = data[toff : toff + tlen].decode("utf-8", errors="replace")
        if msgid:  # the empty msgid holds the catalogue header
            pairs.append((msgid.split("\x00")[0], msgstr.split("\x00")[0]))
    return pairs


def gettext_docs(locale_root: Path) -> Iterator[Doc]:
    seen_english: set[str] = set()
    english: list[str] = []
    for folder in sorted(p for p in locale_root.iterdir() if (p / "LC_MESSAGES").is_dir()):
        language = folder.name.split("@")[0]
        for mo in sorted((folder / "LC_MESSAGES").glob("*.mo")):
            try:
                pairs = read_mo(mo)
            except (struct.error, IndexError):
                continue
            strings = [s.strip() for _, s in pairs if len(s.strip()) > 1]
            for text in pack(strings):
                yield "gettext", language, text
            for msgid, _ in pairs:
                if msgid not in seen_english and len(msgid.strip()) > 1:
                    seen_english.add(msgid)
                    english.append(msgid.strip())
    for text in pack(english):
        yield "gettext", "en", text


# ------------------------------------------------------------------ man
def render_man(path: Path) -> str:
    try:
        source = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        result = subprocess.run(
            ["groff", "-k", "-man", "-Tutf8", "-P-cbou", "-rLL=2000n", "-rHY=0"],
            input=source,
            capture_output=True,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired, EOFError):
        return ""
    lines = result.stdout.decode("utf-8", errors="replace").splitlines()[1:-1]  # header/footer
    text = "\n".join(re.sub(r"\s+", " ", line).strip() for line in lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def man_docs(man_root: Path, english_pages: int, seed: int) -> Iterator[Doc]:
    for folder in sorted(man_root.iterdir()):
        if not folder.is_dir() or folder.name.startswith("man"):
            continue
        language = folder.name.split(".")[0]
        for page in sorted(p for p in folder.rglob("*") if p.is_file()):
            text = render_man(page)
            if len(text) > 200:
                yield "man", language, text
    pages = sorted(p for p in man_root.glob("man[1-8]/*") if p.is_file())
    random.Random(seed).shuffle(pages)
    for page in pages[:english_pages]:
        text = render_man(page)
        if len(text) > 200:
            yield "man", "en", text


# ----------------------------------------------------------------- main
def is_heldout(text: str, fraction: float) -> bool:
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=Path("/work/shared/data"))
    parser.add_argument("--locale-root", type=Path, default=Path("/usr/share/locale"))
    parser.add_argument("--man-root", type=Path, default=Path("/usr/share/man"))
    parser.add_argument("--english-man-pages", type=int, default=1500)
    parser.add_argument("--heldout-fraction", type=float, default=0.04)
    parser.add_argument("--sample-tokens", type=int, default=0)
    parser.add_argument(
        "--seeds", type=Path, default=Path(__file__).with_name("sae_seed_prompts.txt")
    )
    parser.add_argument("--model", default="default")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from yapo.models import load_model

    model, tokenizer = load_model(args.model, dtype="bfloat16" if args.sample_tokens else None)
    docs: list[Doc] = []
    docs += blend_docs(args.data)
    docs += bipo_docs(args.data)
    docs += gettext_docs(args.locale_root)
    docs += man_docs(args.man_root, args.english_man_pages, args.seed)
    if args.sample_tokens > 0:
        seed_lines = read_seed_prompts(args.seeds)
        languages = [line.split("\t", 1) for line in seed_lines]
        prompts = [text for _, text in languages]
        texts = sample_texts(model, tokenizer, prompts, max_tokens=args.sample_tokens)
        for i, text in enumerate(texts):
            docs.append(("samples", languages[i % len(languages)][0], text))

    random.Random(args.seed).shuffle(docs)  # mix languages within every stretch of training
    stats: dict[str, dict[str, dict[str, int]]] = {
        "train": defaultdict(lambda: defaultdict(int)),
        "heldout": defaultdict(lambda: defaultdict(int)),
    }
    split: dict[str, list[dict[str, str]]] = {"train": [], "heldout": []}
    for source, language, text in docs:
        name = "heldout" if is_heldout(text, args.heldout_fraction) else "train"
        tokens = len(tokenizer(text, add_special_tokens=False)["input_ids"])
        caps = CAPS[source]
        cap = caps.get(language, caps["*"])
        if name == "heldout":
            cap = int(cap * args.heldout_fraction)
        if stats[name][source][language] >= cap:
            continue
        stats[name][source][language] += tokens
        split[name].append({"text": text, "source": source, "lang": language})
    args.out.mkdir(parents=True, exist_ok=True)
    for name, records in split.items():
        path = args.out / f"{name}.jsonl"

        with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    eval_records = stratified_eval(split["heldout"])
    with atomic_path(args.out / "heldout_eval.jsonl") as tmp, tmp.open("w", encoding="utf-8") as f:
        for record in eval_records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    manifest = {
        split_name: {
            "documents": len(split[split_name]),
            "tokens": sum(sum(v.values()) for v in per_source.values()),
            "by_source": {s: dict(sorted(v.items())) for s, v in sorted(per_source.items())},
            "by_language": _by_language(per_source),
        }
        for split_name, per_source in stats.items()
    }
    manifest["command"] = "python benchmarks/build_sae_corpus.py " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in sorted(vars(args).items())
    )
    write_json(args.out / "manifest.json", manifest)
    print(json.dumps({k: manifest[k]["tokens"] for k in ("train", "heldout")}))


PAPER_LANGUAGES = ("en", "es", "pt", "pt_BR", "ar", "hi")


def stratified_eval(
    heldout: list[dict[str, str]], groups: int = 60, characters: int = 1000
) -> list[dict[str, str]]:
    """One document (its first ``characters``) per (source, language) group of the held-out
    split, the paper's languages first, ``groups`` at most: a small evaluation set in which
    no single source or language dominates (``yapo sae eval --corpus heldout_eval.jsonl``)."""
    first: dict[tuple[str, str], dict[str, str]] = {}
    for record in heldout:
        first.setdefault((record["source"], record["lang"]), record)

    def order(key: tuple[str, str]) -> tuple[int, str, str]:
        source, lang = key
        rank = PAPER_LANGUAGES.index(lang) if lang in PAPER_LANGUAGES else len(PAPER_LANGUAGES)
        return rank, source, lang

    keys = sorted(first, key=order)[:groups]
    return [dict(first[k], text=first[k]["text"][:characters]) for k in keys]


def _by_language(per_source: dict[str, dict[str, int]]) -> dict[str, int]:
    totals: dict[str, int] = defaultdict(int)
    for per_language in per_source.values():
        for language, tokens in per_language.items():
            totals[language] += tokens
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


if __name__ == "__main__":
    main()
