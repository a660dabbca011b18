"""Batched greedy generation (left padding) and scoring of every eval set of a task."""
from __future__ import annotations

import random

import torch
from tqdm.auto import tqdm

from bench.data.examples import Example
from bench.data.prompts import build_prompt
from bench.eval.static_engine import generate_static
from bench.eval.stop_tokens import stop_token_ids
from bench.runtime import autocast
from bench.tasks.base import Task


def cut_at_stop_strings(text: str, stop_strings) -> str:
    cut = len(text)
    for stop in stop_strings:
        index = text.find(stop)
        if index != -1:
            cut = min(cut, index)
    return text[:cut]


@torch.no_grad()
def generate_hf(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int,
             device: torch.device, precision: str, desc: str = "eval",
             stop_ids: list[int] | None = None) -> list[str]:
    """Greedy completions in the order of `prompts`, each ended by any of `stop_ids` (default:
    `stop_token_ids(model, tokenizer)`).

    Prompts are sorted by length so each left-padded batch wastes little on padding.
    """
    stop_ids = stop_token_ids(model, tokenizer) if stop_ids is None else list(stop_ids)
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
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=stop_ids)
        texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        for i, text in zip(index, texts):
            completions[i] = text
    model.train()
    return completions


def evaluate(model, tokenizer, task: Task, eval_cfg, device: torch.device, precision: str,
             use_chat_template, info: dict | None = None) -> tuple[dict[str, dict[str, float]], list[dict]]:
    """Returns ({eval set: {metric: accuracy}}, per-sample records for samples.jsonl).

    `info`, when given, receives what the generation used, for result.json: `eval_stop_token_ids`."""
    accuracy: dict[str, dict[str, float]] = {}
    samples: list[dict] = []
    stop_ids = stop_token_ids(model, tokenizer)
    if info is not None:
        info["eval_stop_token_ids"] = stop_ids
    for set_name, examples in task.scored_sets(eval_cfg.split).items():  # eval.split: test | validation
        examples = limit_examples(examples, eval_cfg.limit, eval_cfg.sample, eval_cfg.sample_seed)
        prompts = [build_prompt(tokenizer, ex.prompt, use_chat_template) for ex in examples]
        generations = generate_with_engine(model, tokenizer, prompts, eval_cfg, device, precision,
                                           desc=f"eval {set_name}", stop_ids=stop_ids,
                                           stop_strings=task.stop_strings)
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
SAMPLES = ("first", "random")  # eval.sample


def generate_with_engine(model, tokenizer, prompts: list[str], eval_cfg, device: torch.device, precision: str,
                         desc: str = "eval", stop_ids: list[int] | None = None,
                         stop_strings=()) -> list[str]:
    """`eval.engine`: `hf` (HF generate, the reference) or `static` (bench/eval/static_engine.py: static KV
    cache, CUDA-graphed decode step; the same greedy tokens, several times faster on GPU).

    The texts run at least to the first stop string (`cut_at_stop_strings` then cuts them): the static
    engine with `eval.refill` ends a row a little after its stop string to refill its slot."""
    # eval.engine's values are checked once, at start (bench/config/checks.py): hf, else static.
    if eval_cfg.engine == "hf":
        return generate_hf(model, tokenizer, prompts, eval_cfg.max_new_tokens, eval_cfg.batch_size, device,
                           precision, desc=desc, stop_ids=stop_ids)
    return generate_static(model, tokenizer, prompts, eval_cfg.max_new_tokens, eval_cfg.batch_size, device,
                           precision, cuda_graphs=eval_cfg.cuda_graphs, desc=desc, stop_ids=stop_ids,
                           stop_strings=stop_strings, refill=eval_cfg.refill, check_every=eval_cfg.check_every)


def limit_examples(examples: list[Example], limit, sample: str = "first", seed: int = 0) -> list[Example]:
    """`eval.limit`: null = all; N = the first N (`eval.sample=first`) or N drawn with
    `eval.sample_seed` (`eval.sample=random`, kept in dataset order). The seed is the eval's own,
    not the run's, so every method and seed of a sweep is scored on the same examples."""
    if limit is None:
        return examples
    if int(limit) <= 0:
        raise ValueError(f"eval.limit must be positive or null, got {limit}")
    if sample == "first":  # eval.sample's values are checked once, at start: first, else random
        return examples[: int(limit)]
    if int(limit) >= len(examples):
        return examples
    chosen = sorted(random.Random(seed).sample(range(len(examples)), int(limit)))
    return [examples[i] for i in chosen]
