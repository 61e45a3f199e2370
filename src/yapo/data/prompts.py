"""How questions become model inputs: MCQ layout, chat templates, and token ids.

The trainer and the MCQ scorer must see *exactly* the same text, so both use the
functions here:

* :func:`format_mcq_prompt` lays out a question and its options as lettered lines and
  ends with ``"Answer:"``, so that the answer is one letter (``A``, ``B``, ...; see
  :data:`ANSWER_LETTERS`, :func:`answer_letter`, :func:`answer_index`).
* :func:`format_prompt` wraps a prompt in the tokenizer's chat template when it has one
  (instruction-tuned models) and leaves it as written otherwise (base models).
* :func:`tokenize_pair` turns ``(prompt, response)`` into ``input_ids`` and a
  ``response_mask``. The prompt and the response are tokenized *separately* (as TRL's
  DPO trainer does), so a response's tokens are the same whatever prompt precedes it,
  and the response always ends with EOS: log-probabilities are summed over the
  response tokens including EOS. A prompt longer than ``max_prompt_length`` keeps its
  *last* tokens (the end of a prompt holds the question and the ``Answer:`` cue); a
  leading BOS is kept in place by default because models such as Gemma degrade badly
  without it.
* :func:`answer_token_ids` gives the token id of each answer letter as
  :func:`tokenize_pair` would produce it for a one-letter response, which is what an
  MCQ scorer compares.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Literal

from yapo.errors import YapoError

ANSWER_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
ANSWER_PREFIX = "Answer:"
McqStyle = Literal["letters", "parens"]
ChatMode = bool | Literal["auto"]

_OPTION_LINE = re.compile(r"^\s*(?:\(([A-Z])\)|([A-Z])[.):])\s*(.*?)\s*$")


def answer_letter(index: int) -> str:
    """The letter of option ``index`` (0 → ``"A"``)."""
    if not 0 <= index < len(ANSWER_LETTERS):
        raise YapoError(f"option index {index} has no answer letter (at most 26 options)")
    return ANSWER_LETTERS[index]


def answer_index(letter: str) -> int:
    """The option index of an answer letter; accepts ``"b"``, ``"B."``, ``"(B)"``."""
    cleaned = letter.strip().strip("().:").strip().upper()
    if len(cleaned) != 1 or cleaned not in ANSWER_LETTERS:
        raise YapoError(f"{letter!r} is not an answer letter (A, B, C, ...)")
    return ANSWER_LETTERS.index(cleaned)


def format_mcq_prompt(
    question: str,
    options: Sequence[str],
    style: McqStyle = "letters",
    *,
    answer_prefix: str = ANSWER_PREFIX,
    instruction: str | None = None,
) -> str:
    """Lay out an MCQ so that the answer is one letter.

    ``letters`` style::

        What is a common breakfast?
        A. Ful medames
        B. Pancakes
        Answer:

    ``parens`` style writes ``(A) Ful medames``. ``instruction`` (e.g. "Answer with
    the letter only.") goes on its own line before the ``Answer:`` cue.
    """
    if len(options) < 2:
        raise YapoError(f"an MCQ needs at least two options, got {len(options)}")
    if style not in ("letters", "parens"):
        raise YapoError(f"unknown MCQ style {style!r}; use 'letters' or 'parens'")
    lines = [question.strip()]
    for index, option in enumerate(options):
        letter = answer_letter(index)
        label = f"{letter}." if style == "letters" else f"({letter})"
        lines.append(f"{label} {option.strip()}")
    if instruction:
        lines.append(instruction.strip())
    lines.append(answer_prefix)
    return "\n".join(lines)


def parse_mcq_prompt(text: str) -> tuple[str, list[str]] | None:
    """Split an MCQ prompt into its question and options, or ``None`` if it has none.

    Recognises option lines ``A. text``, ``A) text``, ``A: text`` and ``(A) text`` with
    consecutive letters from ``A``; lines after the options (an ``Answer:`` cue) are
    dropped. Used to read other people's prompts back into :class:`CulturalMCQ`.
    """
    lines = text.strip().splitlines()
    question: list[str] = []
    options: list[str] = []
    for line in lines:
        match = _OPTION_LINE.match(line)
        letter = (match.group(1) or match.group(2)) if match else None
        if match and letter == ANSWER_LETTERS[len(options)] and match.group(3):
            options.append(match.group(3))
        elif options:
            break
        else:
            question.append(line)
    if len(options) < 2:
        return None
    return "\n".join(question).strip(), options


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def format_prompt(
    tokenizer: Any, prompt: str, chat: ChatMode = "auto", *, system: str | None = None
) -> str:
    """The text a model sees for ``prompt``.

    ``chat="auto"`` applies the tokenizer's chat template when it has one (one user
    turn plus the generation prompt, so the response follows directly) and returns the
    prompt unchanged otherwise; ``True`` requires a template; ``False`` never uses one.
    ``system`` becomes a system turn in a template, or a paragraph before the prompt in
    plain text.
    """
    use_chat = has_chat_template(tokenizer) if chat == "auto" else bool(chat)
    if not use_chat:
        if system:
            return f"{system.strip()}\n\n{prompt}"
        return prompt
    if not has_chat_template(tokenizer):
        raise YapoError(
            "chat=True but the tokenizer has no chat template; use chat='auto' or False"
        )
    messages = [{"role": "user", "content": prompt}]
    if system:
        messages.insert(0, {"role": "system", "content": system})
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return str(text)


def _ids(tokenizer: Any, text: str, add_special_tokens: bool) -> list[int]:
    return [int(i) for i in tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"]]


def tokenize_pair(
    tokenizer: Any,
    prompt: str,
    response: str,
    max_prompt_length: int = 512,
    *,
    add_special_tokens: bool | None = None,
    keep_bos: bool = True,
) -> tuple[list[int], list[int]]:
    """``(input_ids, response_mask)`` for a prompt followed by a response and EOS.

    ``response_mask[i]`` is 1 for the response tokens (EOS included) and 0 for the
    prompt. ``add_special_tokens=None`` adds the tokenizer's special tokens (BOS) to the
    prompt unless the prompt text already starts with the BOS string, as chat-template
    output does. A too-long prompt keeps its last ``max_prompt_length`` tokens, with its
    BOS pinned at the front when ``keep_bos`` (the BOS counts toward the limit).
    """
    if max_prompt_length < 1:
        raise YapoError(f"max_prompt_length must be at least 1, got {max_prompt_length}")
    eos = tokenizer.eos_token_id
    if eos is None:
        raise YapoError("the tokenizer has no EOS token; responses must end with EOS")
    if add_special_tokens is None:
        bos_text = getattr(tokenizer, "bos_token", None)
        add_special_tokens = not (bos_text and prompt.startswith(bos_text))
    prompt_ids = _ids(tokenizer, prompt, add_special_tokens)
    response_ids = [*_ids(tokenizer, response, False), int(eos)]
    if len(prompt_ids) > max_prompt_length:
        bos = tokenizer.bos_token_id
        if keep_bos and bos is not None and prompt_ids[0] == bos and max_prompt_length > 1:
            prompt_ids = [prompt_ids[0], *prompt_ids[len(prompt_ids) - max_prompt_length + 1 :]]
        else:
            prompt_ids = prompt_ids[len(prompt_ids) - max_prompt_length :]
    input_ids = prompt_ids + response_ids
    mask = [0] * len(prompt_ids) + [1] * len(response_ids)
    return input_ids, mask


def answer_token_ids(tokenizer: Any, n_options: int) -> list[int]:
    """Token id of each answer letter ``A..`` as the first token of a letter response.

    Raises when two letters share a first token (the scorer could not tell them apart).
    """
    ids = []
    for index in range(n_options):
        letter_ids = _ids(tokenizer, answer_letter(index), False)
        if not letter_ids:
            raise YapoError(f"the tokenizer turns the letter {answer_letter(index)!r} into nothing")
        ids.append(letter_ids[0])
    if len(set(ids)) != len(ids):
        raise YapoError(
            "answer letters do not start with distinct tokens for this tokenizer: "
            + ", ".join(f"{answer_letter(i)}→{t}" for i, t in enumerate(ids))
        )
    return ids
