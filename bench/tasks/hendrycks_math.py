"""MATH (Hendrycks et al.) and MATH-500 rows -> examples, and their scoring (bench/tasks/scoring.py).

Row fields: `problem`, `solution`, and optionally `answer` (MATH-500 has the official one; when
`fields.answer` is null the gold is the last `\\boxed{}` of the solution, as MATH's own code does).
Training targets are the solution, whose last `\\boxed{}` teaches the answer format we extract.
"""
from __future__ import annotations

from collections.abc import Mapping

from bench.data.examples import Example
from bench.tasks.scoring import MATH_EXTRACTIONS, last_boxed, score_math
from bench.tasks.sources import Row, field


class MathFormat:
    kind = "math"
    metrics = ("math_verify", "exact_match")

    def __init__(self, extraction: str = "boxed"):
        if extraction not in MATH_EXTRACTIONS:
            raise ValueError(f"extraction={extraction!r}; allowed: {', '.join(MATH_EXTRACTIONS)}")
        self.extraction = extraction

    def example(self, row: Row, fields: Mapping, prompt_template: str, target_template: str) -> Example:
        problem, solution = field(row, fields, "problem"), field(row, fields, "solution")
        gold = field(row, fields, "answer", required=False)
        if gold is None:
            gold = last_boxed(solution)  # None for the 2 MATH train rows without one: fine for training
        meta = {"kind": self.kind}
        for role in ("level", "subject"):
            if fields.get(role):
                meta[role] = field(row, fields, role)
        return Example(id=row.origin, prompt=prompt_template.replace("{question}", problem),
                       target=target_template.replace("{answer}", solution), gold=gold, meta=meta)

    def score(self, generation: str, example: Example) -> dict:
        return score_math(generation, example.gold, self.extraction)
