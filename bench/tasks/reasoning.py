"""Math-reasoning tasks from real datasets: one training source, one or more evaluation sources.

Each source names its `kind` (how rows become examples and how generations are scored), where its
rows come from (bench/tasks/sources.py: `path` or `hub`), and its `fields` (role -> column).
Eval sources also name `accuracy`: which of the kind's metrics is the set's primary accuracy; every
verdict carries it as `accuracy`, so `task.primary_metric: accuracy` averages over mixed sets
(GSM8K + MATH-500 for the MetaMathQA protocol).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bench.data.examples import Example
from bench.data.prompts import PromptFormat
from bench.errors import DataError
from bench.tasks.base import Task
from bench.tasks.fewshot import draw_exemplars, with_fewshot
from bench.tasks.gsm8k import GSM8KFormat
from bench.tasks.hendrycks_math import MathFormat
from bench.tasks.metamathqa import MetaMathQAFormat
from bench.tasks.sources import load_rows

KINDS = ("gsm8k", "math", "metamathqa")


class ReasoningTask(Task):
    primary_metric = "accuracy"

    def __init__(
        self,
        name: str,
        train: Mapping,
        eval: Mapping[str, Mapping],
        prompt_template: str = "Question: {question}\nAnswer:",
        target_template: str = " {answer}",
        stop_strings: list[str] = (),
        prompt_format: str = "plain",
        system_prompt: str | None = None,
        num_fewshot: int = 0,
        fewshot_seed: int = 1234,
        keep_calculator_annotations: bool = False,
        max_new_tokens: int = 512,
    ) -> None:
        if "{question}" not in prompt_template:
            raise ValueError(f"task.prompt_template must contain {{question}}, got {prompt_template!r}")
        if "{answer}" not in target_template:
            raise ValueError(f"task.target_template must contain {{answer}}, got {target_template!r}")
        if not eval:
            raise ValueError("task.eval names no evaluation source")
        self.name = name
        self.stop_strings = tuple(stop_strings)
        self.prompt_format = PromptFormat(prompt_format, system_prompt)
        self.num_fewshot, self.fewshot_seed = num_fewshot, fewshot_seed
        self.keep_calculator_annotations = keep_calculator_annotations
        self.templates = (prompt_template, target_template)
        self.max_new_tokens = max_new_tokens  # read by conf/config.yaml's eval.max_new_tokens default
        self._train = self._examples(train, "task.train")
        self._formats: dict[str, Any] = {}
        self._accuracy: dict[str, str] = {}
        self._eval: dict[str, list[Example]] = {}
        for set_name, source in eval.items():
            key = f"task.eval.{set_name}"
            fmt = self._format(source, key)
            if not fmt.metrics:
                raise ValueError(f"{key}.kind={source['kind']!r} is a training set only; "
                                 f"evaluate on {', '.join(k for k in KINDS if k != 'metamathqa')}")
            accuracy = source.get("accuracy")
            if accuracy not in fmt.metrics:
                raise ValueError(f"{key}.accuracy={accuracy!r}; allowed for kind {fmt.kind}: {', '.join(fmt.metrics)}")
            examples = self._examples(source, key, fmt)
            missing = [ex.id for ex in examples if not ex.gold]
            if missing:
                raise DataError(f"{key}: {len(missing)} rows have no gold answer, first at {missing[0]}")
            self._formats[set_name], self._accuracy[set_name], self._eval[set_name] = fmt, accuracy, examples
        exemplars = draw_exemplars(self._train, self._eval, num_fewshot, fewshot_seed)
        self.fewshot_ids = [ex.id for ex in exemplars]  # recorded in result.json (prompt_record)
        self._eval = {name: with_fewshot(examples, exemplars) for name, examples in self._eval.items()}

    def _format(self, source: Mapping, key: str):
        kind = source.get("kind")
        if kind == "gsm8k":
            return GSM8KFormat(self.keep_calculator_annotations)
        if kind == "math":
            return MathFormat(source.get("extraction", "boxed"))
        if kind == "metamathqa":
            return MetaMathQAFormat()
        raise ValueError(f"{key}.kind={kind!r}; allowed: {', '.join(KINDS)}")

    def _examples(self, source: Mapping, key: str, fmt=None) -> list[Example]:
        fmt = fmt or self._format(source, key)
        fields = source.get("fields")
        if not fields:
            raise ValueError(f"{key}.fields is required (role -> column name)")
        examples = []
        for row in load_rows(source, key):
            ex = fmt.example(row, fields, *self.templates)
            ex.meta["source"] = key
            examples.append(ex)
        return examples

    def train_examples(self) -> list[Example]:
        return list(self._train)

    def eval_sets(self) -> dict[str, list[Example]]:
        return {name: list(examples) for name, examples in self._eval.items()}

    def score(self, generation: str, example: Example) -> dict[str, Any]:
        set_name = example.meta["source"].removeprefix("task.eval.")
        verdict = self._formats[set_name].score(generation, example)
        return {**verdict, "accuracy": verdict[self._accuracy[set_name]]}
