"""Data: record schemas, loaders, converters and prompt formatting.

* :mod:`~yapo.data.records` — :class:`PreferencePair`, :class:`CulturalMCQ`,
  :class:`OpenQuestion`.
* :mod:`~yapo.data.preferences` — :func:`load_preferences` (JSONL/JSON/CSV/Parquet/HF,
  BiPO's CSVs) and :func:`split_by_question`.
* :mod:`~yapo.data.cultural` — :func:`load_mcq`, :func:`load_open`,
  :func:`load_paper_hub_dataset`, :func:`mcq_to_preferences`.
* :mod:`~yapo.data.blend` — :func:`convert_blend` (BLEnD → MCQs).
* :mod:`~yapo.data.demo` — the shipped demo dataset.
* :mod:`~yapo.data.prompts` — MCQ layout, chat templates, :func:`tokenize_pair`.
* :mod:`~yapo.data.validation` — :class:`LoadReport`.
"""

from yapo.data.blend import BlendReport, convert_blend
from yapo.data.cultural import load_mcq, load_open, load_paper_hub_dataset, mcq_to_preferences
from yapo.data.demo import demo_dataset_path, load_demo_mcq, load_demo_open
from yapo.data.files import write_jsonl
from yapo.data.paper import PaperDataset
from yapo.data.preferences import load_preferences
from yapo.data.prompts import (
    ANSWER_LETTERS,
    answer_index,
    answer_letter,
    answer_token_ids,
    format_mcq_prompt,
    format_prompt,
    tokenize_pair,
)
from yapo.data.records import CulturalMCQ, OpenQuestion, PreferencePair
from yapo.data.split import split_by_question
from yapo.data.validation import LoadReport

__all__ = [
    "ANSWER_LETTERS",
    "BlendReport",
    "CulturalMCQ",
    "LoadReport",
    "OpenQuestion",
    "PaperDataset",
    "PreferencePair",
    "answer_index",
    "answer_letter",
    "answer_token_ids",
    "convert_blend",
    "demo_dataset_path",
    "format_mcq_prompt",
    "format_prompt",
    "load_demo_mcq",
    "load_demo_open",
    "load_mcq",
    "load_open",
    "load_paper_hub_dataset",
    "load_preferences",
    "mcq_to_preferences",
    "split_by_question",
    "tokenize_pair",
    "write_jsonl",
]
