"""The task contract: what the harness needs from a task, and nothing more."""
from __future__ import annotations

from typing import Any

from bench.data.examples import Example
from bench.data.prompts import PromptFormat


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

    def score(self, generation: str, example: Example) -> dict[str, Any]:
        """Return `{"extracted": ..., "<metric>": bool, ...}`; `primary_metric` must be a key."""
        raise NotImplementedError
