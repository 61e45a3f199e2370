"""MCQ layout, chat templates and exact token ids of tokenize_pair."""

from __future__ import annotations

import pytest
from tests.conftest import make_tokenizer
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from yapo.data.prompts import (
    answer_index,
    answer_letter,
    answer_token_ids,
    format_mcq_prompt,
    format_prompt,
    parse_mcq_prompt,
    tokenize_pair,
)
from yapo.errors import YapoError


def letter_tokenizer() -> PreTrainedTokenizerFast:
    """Word-level tokenizer that knows the answer letters and a few words."""
    words = ["<pad>", "<bos>", "<eos>", "<unk>", "A", "B", "C", "D", "Answer", ":", "x", "y"]
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(
        single="<bos> $A", special_tokens=[("<bos>", 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>"
    )


def test_format_mcq_prompt_exact_text() -> None:
    prompt = format_mcq_prompt("What is eaten at breakfast?", ["Ful", " Pancakes ", "Msemen"])
    assert prompt == "What is eaten at breakfast?\nA. Ful\nB. Pancakes\nC. Msemen\nAnswer:"
    parens = format_mcq_prompt("Q?", ["x", "y"], "parens", instruction="Answer with a letter.")
    assert parens == "Q?\n(A) x\n(B) y\nAnswer with a letter.\nAnswer:"


def test_format_mcq_prompt_rejects_bad_input() -> None:
    with pytest.raises(YapoError, match="at least two"):
        format_mcq_prompt("Q?", ["only"])
    with pytest.raises(YapoError, match="style"):
        format_mcq_prompt("Q?", ["a", "b"], "numbers")  # type: ignore[arg-type]


def test_parse_mcq_prompt_round_trip() -> None:
    options = ["Couscous", "Tacos", "Hamburger", "Paella"]
    for style in ("letters", "parens"):
        text = format_mcq_prompt("Which dish?\nPick one.", options, style)  # type: ignore[arg-type]
        assert parse_mcq_prompt(text) == ("Which dish?\nPick one.", options)
    assert parse_mcq_prompt("A) one\nB) two\nC) three") == ("", ["one", "two", "three"])
    assert parse_mcq_prompt("No options here") is None
    assert parse_mcq_prompt("Q\nA. one\nC. skipped B") is None  # not consecutive


def test_answer_letters() -> None:
    assert [answer_letter(i) for i in range(4)] == ["A", "B", "C", "D"]
    assert answer_index("c") == 2 and answer_index("(B)") == 1 and answer_index(" D. ") == 3
    with pytest.raises(YapoError):
        answer_index("AB")
    with pytest.raises(YapoError):
        answer_letter(26)


def test_tokenize_pair_exact_ids() -> None:
    tok = make_tokenizer()  # w<i> has id i + 4; <bos>=1, <eos>=2
    ids, mask = tokenize_pair(tok, "w0 w1 w2", "w3 w4")
    assert ids == [1, 4, 5, 6, 7, 8, 2]
    assert mask == [0, 0, 0, 0, 1, 1, 1]


def test_tokenize_pair_keeps_the_last_prompt_tokens() -> None:
    tok = make_tokenizer()
    ids, mask = tokenize_pair(tok, "w0 w1 w2 w3 w4", "w9", max_prompt_length=3)
    assert ids == [1, 7, 8, 13, 2]  # BOS pinned, then the last two prompt tokens
    assert mask == [0, 0, 0, 1, 1]
    ids, mask = tokenize_pair(tok, "w0 w1 w2 w3 w4", "w9", max_prompt_length=3, keep_bos=False)
    assert ids == [6, 7, 8, 13, 2]
    assert mask == [0, 0, 0, 1, 1]
    ids, _ = tokenize_pair(tok, "w0 w1", "w9", max_prompt_length=3)
    assert ids == [1, 4, 5, 13, 2]  # short prompts are untouched
    with pytest.raises(YapoError):
        tokenize_pair(tok, "w0", "w1", max_prompt_length=0)


def test_tokenize_pair_does_not_double_bos_of_chat_text() -> None:
    tok = make_tokenizer()
    ids, mask = tokenize_pair(tok, "<bos> w0", "w1")
    assert ids == [1, 4, 5, 2]
    assert mask == [0, 0, 1, 1]


def test_tokenize_pair_empty_response_is_just_eos() -> None:
    ids, mask = tokenize_pair(make_tokenizer(), "w0", "")
    assert ids == [1, 4, 2] and mask == [0, 0, 1]


def test_format_prompt_plain_and_chat() -> None:
    tok = make_tokenizer()
    assert format_prompt(tok, "w0 w1") == "w0 w1"  # no template: as written
    assert format_prompt(tok, "w0", system="w5") == "w5\n\nw0"
    with pytest.raises(YapoError, match="no chat template"):
        format_prompt(tok, "w0", chat=True)
    tok.chat_template = (
        "{{ bos_token }}{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}"
        "{% if add_generation_prompt %}[assistant] {% endif %}"
    )
    assert format_prompt(tok, "hello") == "<bos>[user] hello\n[assistant] "
    assert format_prompt(tok, "hello", chat=False) == "hello"
    assert format_prompt(tok, "hi", system="be kind") == (
        "<bos>[system] be kind\n[user] hi\n[assistant] "
    )


def test_answer_token_ids() -> None:
    tok = letter_tokenizer()
    assert answer_token_ids(tok, 4) == [4, 5, 6, 7]
    ids, mask = tokenize_pair(tok, format_mcq_prompt("x", ["x", "y"]), answer_letter(1))
    assert ids[-2:] == [answer_token_ids(tok, 2)[1], 2] and mask[-2:] == [1, 1]
    with pytest.raises(YapoError, match="distinct"):
        answer_token_ids(make_tokenizer(), 2)  # letters unknown: both are <unk>
