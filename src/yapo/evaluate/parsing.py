r"""Reading the chosen option out of a generated MCQ answer (``\boxed{k}``).

Chat models are asked to put their answer in ``\boxed{}``, as in the paper. What goes
inside varies between models, so the last ``\boxed{...}`` of the reply is read as

* a letter (``B``, ``(B)``, ``B.``, ``B) Couscous``) — the option with that letter;
* a number ``1..n`` — the n-th option (1-based, as people count options);
* the text of an option (case and spacing ignored) — that option.

Anything else, or no ``\boxed{}`` at all, is *unparseable*: the benchmark counts it as
a wrong answer and reports how many there were, so a model that stops following the
format under steering is visible rather than hidden in its accuracy.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

BOXED_INSTRUCTION = (
    "Think about the country the question is about, then give the letter of the correct "
    "option inside \\boxed{}, for example \\boxed{A}."
)

_LETTER = re.compile(r"^\(?\s*([A-Za-z])\s*\)?(?:[.):\s]|$)")
_WRAPPERS = re.compile(r"\\(?:text|textbf|mathrm|mathbf)\s*\{([^{}]*)\}")


def boxed_contents(text: str) -> list[str]:
    r"""Every ``\boxed{...}`` body in ``text``, in order (nested braces handled)."""
    found: list[str] = []
    start = 0
    while True:
        begin = text.find("\\boxed", start)
        if begin < 0:
            return found
        brace = begin + len("\\boxed")
        while brace < len(text) and text[brace].isspace():
            brace += 1
        if brace >= len(text) or text[brace] != "{":
            start = brace
            continue
        depth = 0
        for end in range(brace, len(text)):
            if text[end] == "{":
                depth += 1
            elif text[end] == "}":
                depth -= 1
                if depth == 0:
                    found.append(text[brace + 1 : end])
                    break
        else:
            return found  # unbalanced: the reply was cut off
        start = end + 1


def _clean(body: str) -> str:
    body = _WRAPPERS.sub(r"\1", body)
    return body.strip().strip("$").strip()


def _normalise(text: str) -> str:
    return " ".join(text.lower().split()).strip(" .")


def parse_choice(body: str, options: Sequence[str]) -> int | None:
    """The option index named by one ``\\boxed{}`` body, or ``None``."""
    body = _clean(body)
    if not body:
        return None
    n = len(options)
    if body.isdigit():
        number = int(body)
        return number - 1 if 1 <= number <= n else None
    wanted = _normalise(body)
    for index, option in enumerate(options):
        if _normalise(option) == wanted:
            return index
    match = _LETTER.match(body)
    if match:
        index = ord(match.group(1).upper()) - ord("A")
        return index if 0 <= index < n else None
    return None


def parse_boxed_answer(text: str, options: Sequence[str]) -> int | None:
    r"""The option chosen by the *last* ``\boxed{}`` of a reply, or ``None``."""
    bodies = boxed_contents(text)
    if not bodies:
        return None
    return parse_choice(bodies[-1], options)
