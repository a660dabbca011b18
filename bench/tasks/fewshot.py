"""Few-shot prompting: N solved training examples before each evaluation question.

The format is lm-evaluation-harness's gsm8k task (lm_eval/tasks/gsm8k/gsm8k.yaml: `num_fewshot: 5`,
`fewshot_split: train`, shots joined by the default `fewshot_delimiter` "\\n\\n", each shot its
`doc_to_text` "Question: ...\\nAnswer:" + " " + the solution): here each shot is a training
example's prompt + target, so it reads exactly like the question that follows it.

Our choices: one set of exemplars per run, drawn once with `task.fewshot_seed` (lm-eval's default
few-shot seed is 1234; it draws per question), so every question, method and seed of a sweep sees
the same shots and result.json can list them. Training prompts stay zero-shot.
"""
from __future__ import annotations

import logging
import random
from dataclasses import replace

from bench.data.examples import Example

log = logging.getLogger(__name__)
FEWSHOT_DELIMITER = "\n\n"  # lm-eval's default fewshot_delimiter


def draw_exemplars(train: list[Example], eval_sets: dict[str, list[Example]], n: int, seed: int) -> list[Example]:
    """`n` training examples drawn with `seed`; a training example whose question is also an
    evaluation question is never drawn (a train file that overlaps the eval file)."""
    if n == 0:
        return []
    eval_prompts = {ex.prompt for examples in eval_sets.values() for ex in examples}
    pool = [ex for ex in train if ex.prompt not in eval_prompts]
    if len(pool) < len(train):
        log.warning("%d training examples repeat an evaluation question: never used as few-shot exemplars",
                    len(train) - len(pool))
    if n > len(pool):
        raise ValueError(f"task.num_fewshot={n} exceeds the {len(pool)} usable training examples")
    return random.Random(seed).sample(pool, n)


def with_fewshot(examples: list[Example], exemplars: list[Example]) -> list[Example]:
    """Each example with the exemplars (prompt + solution) before its own prompt."""
    if not exemplars:
        return examples
    prefix = "".join(ex.prompt + ex.target + FEWSHOT_DELIMITER for ex in exemplars)
    return [replace(ex, prompt=prefix + ex.prompt, meta={**ex.meta, "num_fewshot": len(exemplars)})
            for ex in examples]
