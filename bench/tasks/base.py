"""The task contract: what the harness needs from a task, and nothing more."""
from __future__ import annotations

from typing import Any

from bench.data.examples import Example
from bench.data.prompts import PromptFormat

EVAL_SPLITS = ("test", "validation")  # eval.split: the task's test sets, or its held-out validation split


class Task:
    """Subclasses set `name`, `primary_metric` and implement the three methods below."""

    name: str = "task"
    primary_metric: str = "exact_match"
    # Strings that end a generation early (besides the tokenizer's eos), e.g. "Question:".
    stop_strings: tuple[str, ...] = ()
    # How prompts reach the model (bench/data/prompts.py): plain text unless the task says otherwise.
    prompt_format: PromptFormat = PromptFormat("plain")
    num_fewshot: int = 0

    @property
    def use_chat_template(self) -> PromptFormat:
        """The prompt format under the name the run still passes it by (bench/run/recipe.py)."""
        return self.prompt_format

    def train_examples(self) -> list[Example]:
        raise NotImplementedError

    def eval_sets(self) -> dict[str, list[Example]]:
        """Name of each evaluation set -> its examples (several for MetaMathQA -> GSM8K + MATH)."""
        raise NotImplementedError

    def validation_examples(self) -> list[Example]:
        """The held-out part of the training file (bench/tasks/validation.py); none by default."""
        return []

    def scored_sets(self, split: str) -> dict[str, list[Example]]:
        """What `eval.split` scores: `test` -> eval_sets(), `validation` -> the held-out examples."""
        if split not in EVAL_SPLITS:
            raise ValueError(f"eval.split={split!r}; allowed: {', '.join(EVAL_SPLITS)}")
        if split == "test":
            return self.eval_sets()
        examples = self.validation_examples()
        if not examples:
            raise ValueError(f"eval.split=validation: task {self.name!r} holds out no validation examples "
                             f"(set task.validation_size)")
        return {"validation": examples}

    def validation_record(self) -> dict:
        """result.json `validation`: the held-out split's size, seed and sha256 of its text."""
        from bench.tasks.validation import validation_digest

        examples = self.validation_examples()
        return {"size": len(examples), "seed": getattr(self, "validation_seed", None),
                "sha256": validation_digest(examples)}

    def score(self, generation: str, example: Example) -> dict[str, Any]:
        """Return `{"extracted": ..., "<metric>": bool, ...}`; `primary_metric` must be a key."""
        raise NotImplementedError
