"""The synthetic arithmetic task the project generates itself (the embedded default).

Examples look like `17#5=` -> `23`. A task *family* is a set of operators over an operand range;
the default sweep pretrains a tiny base on one family (+, -, max, min) and fine-tunes it on a
held-out operator (`#`, a+b+1), so a method only scores by adapting what the base already knows.

Splits never overlap: the (operator, a, b) triples are shuffled once with `seed` and cut into a
train part and an eval part; `validation_size` of the train part are held out as the validation
split (bench/tasks/validation.py).
"""
from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence

from bench.data.examples import Example
from bench.tasks.base import Task
from bench.tasks.validation import hold_out

OPERATORS: dict[str, Callable[[int, int], int]] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    ">": max,
    "<": min,
    "#": lambda a, b: a + b + 1,
    "*": lambda a, b: a * b,
    "%": lambda a, b: (a + b) % 10,
}
ANSWER = re.compile(r"-?\d+")


def format_problem(op: str, a: int, b: int) -> tuple[str, str]:
    return f"{a}{op}{b}=", str(OPERATORS[op](a, b))


class ArithmeticTask(Task):
    def __init__(
        self,
        *,
        name: str,
        operators: Sequence[str],
        operand_max: int,
        eval_fraction: float,
        n_eval: int | None,
        seed: int,
        validation_size: int,
        validation_seed: int,
    ) -> None:
        unknown = [op for op in operators if op not in OPERATORS]
        if unknown or not operators:
            raise ValueError(
                f"task.operators={list(operators)}: unknown {unknown}; allowed: {sorted(OPERATORS)}"
            )
        if operand_max < 2:
            raise ValueError(f"task.operand_max must be >= 2, got {operand_max}")
        if not 0.0 < eval_fraction < 1.0:
            raise ValueError(f"task.eval_fraction must be in (0, 1), got {eval_fraction}")
        self.name = name
        self.operators = list(operators)
        triples = [(op, a, b) for op in self.operators for a in range(operand_max) for b in range(operand_max)]
        # Subtraction stays non-negative so every answer is a plain digit string.
        triples = [(op, a, b) for op, a, b in triples if op != "-" or a >= b]
        random.Random(seed).shuffle(triples)
        n_eval_split = max(1, int(len(triples) * eval_fraction))
        self._eval = [self._example(t) for t in triples[:n_eval_split]][: n_eval or None]
        # The validation split comes out of the training part: never trained on, never in the eval part.
        self.validation_seed = validation_seed
        self._train, self._validation = hold_out([self._example(t) for t in triples[n_eval_split:]],
                                                 validation_size, validation_seed)

    @staticmethod
    def _example(triple: tuple[str, int, int]) -> Example:
        op, a, b = triple
        prompt, answer = format_problem(op, a, b)
        return Example(id=f"{a}{op}{b}", prompt=prompt, target=answer, gold=answer, meta={"op": op})

    def train_examples(self) -> list[Example]:
        return list(self._train)

    def eval_sets(self) -> dict[str, list[Example]]:
        return {self.name: list(self._eval)}

    def validation_examples(self) -> list[Example]:
        return list(self._validation)

    def score(self, generation: str, example: Example) -> dict:
        match = ANSWER.match(generation.strip())
        extracted = match.group(0) if match else None
        return {"extracted": extracted, "exact_match": extracted == example.gold}
