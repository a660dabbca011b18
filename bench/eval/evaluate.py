"""Batched greedy generation (left padding) and scoring of every eval set of a task."""
from __future__ import annotations

import random

import torch
from tqdm.auto import tqdm

from bench.data.prompts import build_prompt
from bench.eval.static_engine import generate_static
from bench.tasks.base import Example, Task
from bench.runtime import autocast


def cut_at_stop_strings(text: str, stop_strings) -> str:
    cut = len(text)
    for stop in stop_strings:
        index = text.find(stop)
        if index != -1:
            cut = min(cut, index)
    return text[:cut]


@torch.no_grad()
def generate_hf(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int,
             device: torch.device, precision: str, desc: str = "eval") -> list[str]:
    """Greedy completions in the order of `prompts`.

    Prompts are sorted by length so each left-padded batch wastes little on padding.
    """
    model.eval()
    tokenizer.padding_side = "left"
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]), reverse=True)
    completions: list[str] = [""] * len(prompts)
    for start in tqdm(range(0, len(order), batch_size), desc=desc, dynamic_ncols=True, mininterval=1.0):
        index = order[start:start + batch_size]
        enc = tokenizer([prompts[i] for i in index], return_tensors="pt", padding=True,
                        add_special_tokens=True).to(device)
        with autocast(device, precision):
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        for i, text in zip(index, texts):
            completions[i] = text
    model.train()
    return completions


def evaluate(model, tokenizer, task: Task, eval_cfg, device: torch.device, precision: str,
             use_chat_template) -> tuple[dict[str, dict[str, float]], list[dict]]:
    """Returns ({eval set: {metric: accuracy}}, per-sample records for samples.jsonl)."""
    accuracy: dict[str, dict[str, float]] = {}
    samples: list[dict] = []
    for set_name, examples in task.eval_sets().items():
        examples = limit_examples(examples, eval_cfg.limit, eval_cfg.sample, eval_cfg.sample_seed)
        prompts = [build_prompt(tokenizer, ex.prompt, use_chat_template) for ex in examples]
        generations = generate_with_engine(model, tokenizer, prompts, eval_cfg, device, precision,
                                           desc=f"eval {set_name}")
        verdicts = []
        for ex, prompt, generation in zip(examples, prompts, generations):
            generation = cut_at_stop_strings(generation, task.stop_strings)
            verdict = task.score(generation, ex)
            verdicts.append(verdict)
            samples.append({"eval_set": set_name, "id": ex.id, "prompt": prompt, "generation": generation,
                            "gold": ex.gold, **verdict})
        metric_names = [k for k in verdicts[0] if k != "extracted"] if verdicts else [task.primary_metric]
        accuracy[set_name] = {m: sum(bool(v[m]) for v in verdicts) / max(1, len(verdicts)) for m in metric_names}
        accuracy[set_name]["n"] = len(verdicts)
    return accuracy, samples


ENGINES = ("hf", "static")


def generate_with_engine(model, tokenizer, prompts: list[str], eval_cfg, device: torch.device, precision: str,
                         desc: str = "eval") -> list[str]:
    """`eval.engine`: `hf` (HF generate, the reference) or `static` (bench/eval/static_engine.py: static KV
    cache, CUDA-graphed decode step; the same greedy tokens, several times faster on GPU)."""
    engine = eval_cfg.get("engine", "hf")
    if engine == "hf":
        return generate_hf(model, tokenizer, prompts, eval_cfg.max_new_tokens, eval_cfg.batch_size, device,
                        precision, desc=desc)
    if engine == "static":
        return generate_static(model, tokenizer, prompts, eval_cfg.max_new_tokens, eval_cfg.batch_size, device,
                               precision, cuda_graphs=bool(eval_cfg.get("cuda_graphs", True)), desc=desc)
    raise ValueError(f"eval.engine={engine!r}; allowed: {', '.join(ENGINES)}")


def limit_examples(examples: list[Example], limit, sample: str = "first", seed: int = 0) -> list[Example]:
    """`eval.limit`: null = all; N = the first N (`eval.sample=first`) or N drawn with
    `eval.sample_seed` (`eval.sample=random`, kept in dataset order). The seed is the eval's own,
    not the run's, so every method and seed of a sweep is scored on the same examples."""
    if limit is None:
        return examples
    if int(limit) <= 0:
        raise ValueError(f"eval.limit must be positive or null, got {limit}")
    if sample == "first":
        return examples[: int(limit)]
    if sample == "random":
        if int(limit) >= len(examples):
            return examples
        chosen = sorted(random.Random(seed).sample(range(len(examples)), int(limit)))
        return [examples[i] for i in chosen]
    raise ValueError(f"eval.sample={sample!r}; allowed: first, random")
