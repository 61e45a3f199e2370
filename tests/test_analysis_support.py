"""Helpers for the analysis/behaviour/MMLU tests: a tokenizer that knows MCQ layout tokens.

The shared tiny tokenizer (``tests.conftest.make_tokenizer``) only has ``w<n>`` words;
MCQ prompts also need the answer letters, brackets, full stops and the ``Answer:`` cue.
"""

from __future__ import annotations

from pathlib import Path

from tests.conftest import VOCAB, make_model
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

LAYOUT = ["A", "B", "C", "D", "(", ")", ".", ":", "?", "Answer", ",", "The", "are"]


def make_letter_tokenizer() -> PreTrainedTokenizerFast:
    """Word-level, ids < VOCAB: specials, MCQ layout tokens, then ``w0``, ``w1``, ..."""
    words = ["<pad>", "<bos>", "<eos>", "<unk>", *LAYOUT]
    words += [f"w{i}" for i in range(VOCAB - len(words))]
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(
        single="<bos> $A", special_tokens=[("<bos>", 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
    )


def save_letter_model(folder: Path, arch: str = "llama") -> Path:
    """A tiny model with the letter tokenizer, written with save_pretrained."""
    make_model(arch).save_pretrained(folder)
    make_letter_tokenizer().save_pretrained(folder)
    return folder
