"""GSM8K rows -> examples, and their scoring (bench/tasks/scoring.py, lm-eval's gsm8k normalisation).

Row fields (roles -> columns come from the task config): `question`, `answer`; the answer is a
worked solution whose last line is `#### N`. Training targets are that solution; the `<<a*b=c>>`
calculator annotations are stripped by default (openai/grade-school-math README: they are for a
calculator at sampling time, not text the model should learn to write).
"""
from __future__ import annotations

import re
from collections.abc import Mapping

from bench.data.examples import Example
from bench.errors import DataError
from bench.tasks.scoring import score_gsm8k
from bench.tasks.sources import Row, field

CALCULATOR_ANNOTATION = re.compile(r"<<[^>]*>>")


class GSM8KFormat:
    kind = "gsm8k"
    metrics = ("strict", "flexible", "math_verify")

    def __init__(self, keep_calculator_annotations: bool):
        self.keep_calculator_annotations = keep_calculator_annotations

    def example(self, row: Row, fields: Mapping, prompt_template: str, target_template: str) -> Example:
        question, solution = field(row, fields, "question"), field(row, fields, "answer")
        if "####" not in solution:
            raise DataError(f"{row.origin}: the {fields['answer']!r} field has no '#### <answer>' line")
        gold = solution.split("####")[-1].strip()
        if not self.keep_calculator_annotations:
            solution = CALCULATOR_ANNOTATION.sub("", solution)
        return Example(id=row.origin, prompt=prompt_template.replace("{question}", question),
                       target=target_template.replace("{answer}", solution), gold=gold,
                       meta={"kind": self.kind})

    def score(self, generation: str, example: Example) -> dict:
        return score_gsm8k(generation, example.gold)
