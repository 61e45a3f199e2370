"""Evaluation: MCQ scoring, cultural metrics with bootstrap intervals, LLM judges, sweeps.

The pieces, bottom up::

    score_choices(model, tokenizer, prompts, choices, vector=..., multiplier=...)
    run_mcq(model, tokenizer, items, McqConfig(mode="loglik"), vector=...)
    summarize(pairs)  # accuracy, RCA, PNLG per country / language / overall, with CIs
    run_open(model, tokenizer, questions, OpenAIJudge("gpt-4o-mini"))
    run_benchmark(model, tokenizer, conditions, mcq_items=..., open_questions=..., judge=...)
    run_sweep(model, tokenizer, items, vectors, multipliers=[-2, -1, 0, 1, 2])
"""

from yapo.evaluate.benchmark import (
    BASELINE,
    BenchmarkResult,
    Condition,
    MetricConfig,
    make_conditions,
    run_benchmark,
    write_benchmark,
)
from yapo.evaluate.conditions import ConditionScores, score_conditions
from yapo.evaluate.mcq import McqConfig, McqPrediction, McqRun, run_mcq, run_mcq_conditions
from yapo.evaluate.metrics import MetricsSummary, PairScore, pnlg, rca, summarize
from yapo.evaluate.openended import OpenConfig, OpenRun, run_open
from yapo.evaluate.parsing import parse_boxed_answer
from yapo.evaluate.scoring import Throughput, score_choices, score_choices_with_stats
from yapo.evaluate.selection import SelectionConfig, select_multipliers
from yapo.evaluate.sweep import SweepResult, parse_multipliers, run_sweep, write_sweep
from yapo.vectors.steer import Steer

__all__ = [
    "BASELINE",
    "BenchmarkResult",
    "Condition",
    "ConditionScores",
    "McqConfig",
    "McqPrediction",
    "McqRun",
    "MetricConfig",
    "MetricsSummary",
    "OpenConfig",
    "OpenRun",
    "PairScore",
    "SelectionConfig",
    "Steer",
    "SweepResult",
    "Throughput",
    "make_conditions",
    "parse_boxed_answer",
    "parse_multipliers",
    "pnlg",
    "rca",
    "run_benchmark",
    "run_mcq",
    "run_mcq_conditions",
    "run_open",
    "run_sweep",
    "score_choices",
    "score_choices_with_stats",
    "score_conditions",
    "select_multipliers",
    "summarize",
    "write_benchmark",
    "write_sweep",
]
