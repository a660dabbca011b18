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
from bench.errors import ConfigError, DataError
from bench.tasks.base import Task
from bench.tasks.fewshot import draw_exemplars, with_fewshot
from bench.tasks.gsm8k import GSM8KFormat
from bench.tasks.hendrycks_math import MathFormat
from bench.tasks.metamathqa import MetaMathQAFormat
from bench.tasks.sources import load_rows
from bench.tasks.validation import hold_out

KINDS = ("gsm8k", "math", "metamathqa")


class ReasoningTask(Task):
    primary_metric = "accuracy"

    def __init__(
        self,
        *,
        name: str,
        train: Mapping,
        eval: Mapping[str, Mapping],
        prompt_template: str,
        target_template: str,
        stop_strings: list[str],
        prompt_format: str,
        system_prompt: str | None,
        num_fewshot: int,
        fewshot_seed: int,
        keep_calculator_annotations: bool,
        max_new_tokens: int,
        validation_size: int,
        validation_seed: int,
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
        # The validation split is held out of the training file before anything else sees it.
        self.validation_seed = validation_seed
        self._train, self._validation = hold_out(self._examples(train, "task.train"), validation_size, validation_seed)
        # Per source key (an example's meta["source"]): how its generations are scored, and its primary metric.
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
            self._formats[key], self._accuracy[key], self._eval[set_name] = fmt, accuracy, examples
        if self._validation:
            self._score_validation_like(train["kind"])
        exemplars = draw_exemplars(self._train, {**self._eval, "validation": self._validation}, num_fewshot,
                                   fewshot_seed)
        self.fewshot_ids = [ex.id for ex in exemplars]  # recorded in result.json (prompt_record)
        self._eval = {name: with_fewshot(examples, exemplars) for name, examples in self._eval.items()}
        self._validation = with_fewshot(self._validation, exemplars)

    def _score_validation_like(self, kind: str) -> None:
        """The held-out training examples are scored as the first eval set of their kind is (its
        format and primary accuracy: GSM8K's flexible, MATH's math_verify)."""
        like = next((key for key, fmt in self._formats.items() if fmt.kind == kind), None)
        if like is None:
            raise ConfigError(f"task.validation_size: the training set's kind {kind!r} has no eval set of the "
                              f"same kind to score it by; use task.validation_size=0")
        for ex in self._validation:
            ex.meta["source"] = "task.validation"
        self._formats["task.validation"], self._accuracy["task.validation"] = self._formats[like], self._accuracy[like]

    def _format(self, source: Mapping, key: str):
        kind = source.get("kind")
        if kind == "gsm8k":
            return GSM8KFormat(self.keep_calculator_annotations)
        if kind == "math":
            # MathFormat's own default (boxed) where the source names no extraction: written once, there
            return MathFormat(source["extraction"]) if "extraction" in source else MathFormat()
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

    def validation_examples(self) -> list[Example]:
        return list(self._validation)

    def score(self, generation: str, example: Example) -> dict[str, Any]:
        source = example.meta["source"]
        verdict = self._formats[source].score(generation, example)
        return {**verdict, "accuracy": verdict[self._accuracy[source]]}
