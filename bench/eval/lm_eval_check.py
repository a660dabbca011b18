"""Cross-check a kept model's accuracy with lm-evaluation-harness (`pip install ".[lmeval]"`).

    python -m bench.eval.lm_eval_check <run dir>          # or: slmbench-lm-eval-check <run dir>

Reads the run's result.json (eval settings) and samples.jsonl (every scored question: its id,
the exact prompt, the gold answer and our verdict), loads `<run dir>/model/` (kept by
`train.save_model=true`) and has lm-eval generate and score the same questions from the same
prompts, with the run's stop strings and max_new_tokens, through a task yaml of ours
(bench/eval/lm_eval_tasks/<kind>.yaml: lm-eval's `json` dataset builder on a local jsonl, lm-eval's
own filters and exact_match). Writes `<run dir>/lm_eval_check.json`: both accuracies per eval set
and their per-question agreement, with every disagreement spelled out.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import torch
import yaml
from omegaconf import OmegaConf

from bench.models.loading import load_model, load_tokenizer
from bench.records.recorder import write_json_atomic
from bench.records.schema import RESULT_FILE, SAMPLES_FILE
from bench.runtime import resolve_device, resolve_precision
from bench.tasks.sources import read_jsonl

CHECK_FILE = "lm_eval_check.json"
TASKS_DIR = Path(__file__).resolve().parent / "lm_eval_tasks"
# Which kind of eval set a sample is (its verdict keys), and which of our metrics matches which
# lm-eval filter: GSM8K's `flexible` is lm-eval's flexible-extract (our `strict` also accepts
# "The answer is N", lm-eval's strict-match does not, so it is not compared).
KINDS = {
    "gsm8k": {"verdicts": ("flexible", "math_verify", "strict"), "ours": "flexible", "filter": "flexible-extract"},
    "arithmetic": {"verdicts": ("exact_match",), "ours": "exact_match", "filter": "leading-integer"},
}
# Not verdicts of a kind: the sample's fields, and reasoning tasks' `accuracy` (a copy of the set's
# configured primary verdict, bench/tasks/reasoning.py).
SAMPLE_KEYS = ("eval_set", "id", "prompt", "generation", "gold", "extracted", "accuracy")


def eval_set_kind(sample: dict) -> str:
    verdicts = tuple(sorted(k for k in sample if k not in SAMPLE_KEYS))
    for kind, spec in KINDS.items():
        if verdicts == spec["verdicts"]:
            return kind
    raise ValueError(f"eval set {sample['eval_set']!r}: verdicts {list(verdicts)} match no cross-checkable kind "
                     f"({', '.join(KINDS)}); lm-eval cross-checks cover GSM8K and the arithmetic task")


def read_samples(run_dir: Path) -> dict[str, list[dict]]:
    path = run_dir / SAMPLES_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no samples.jsonl (is {run_dir} a finished slmbench run dir?)")
    by_set: dict[str, list[dict]] = defaultdict(list)
    for row in read_jsonl(path):  # bad JSON: a DataError naming file:line
        by_set[row.data["eval_set"]].append(row.data)
    return dict(by_set)


def write_task(work_dir: Path, set_name: str, kind: str, samples: list[dict], stop_strings, max_new_tokens: int) -> str:
    """The filled task yaml and its documents (id, prompt, gold) under `work_dir`; returns the task name."""
    name = f"slmbench_{kind}_{''.join(c if c.isalnum() else '_' for c in set_name)}"
    docs = work_dir / f"{name}.jsonl"
    docs.write_text("".join(json.dumps({k: s[k] for k in ("id", "prompt", "gold")}) + "\n" for s in samples))
    task = yaml.safe_load((TASKS_DIR / f"{kind}.yaml").read_text())
    task["task"] = name
    task["dataset_kwargs"]["data_files"] = {"train": str(docs)}
    task["generation_kwargs"].update(until=list(stop_strings), max_gen_toks=int(max_new_tokens))
    (work_dir / f"{name}.yaml").write_text(yaml.safe_dump(task, sort_keys=False))
    return name


def adds_bos(tokenizer) -> bool:
    """Whether our engines' `add_special_tokens=True` changes the encoding (a bos), so lm-eval's
    HFLM encodes the prompts the same way (`add_bos_token`)."""
    return tokenizer("1", add_special_tokens=True)["input_ids"] != tokenizer("1", add_special_tokens=False)["input_ids"]


def run_lm_eval(model, tokenizer, task_names: list[str], work_dir: Path, batch_size: int, precision: str) -> dict:
    """lm-eval's simple_evaluate on our tasks, with the already built model; returns its samples."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, add_bos_token=adds_bos(tokenizer),
              mixed_precision_dtype=torch.bfloat16 if precision == "bf16" else None)
    results = simple_evaluate(model=lm, tasks=task_names, log_samples=True, apply_chat_template=False,
                              task_manager=TaskManager(include_path=str(work_dir), include_defaults=False),
                              bootstrap_iters=0)
    return results["samples"]


def compare(ours: list[dict], theirs: list[dict], kind: str) -> dict:
    """Per-question agreement of our verdicts with lm-eval's, matched by question id."""
    spec = KINDS[kind]
    by_id = {s["doc"]["id"]: s for s in theirs if s["filter"] == spec["filter"]}
    if set(by_id) != {s["id"] for s in ours}:
        raise ValueError(f"lm-eval scored {len(by_id)} questions, the run {len(ours)}: the id sets differ")
    disagreements, same_prompt, same_generation = [], 0, 0
    for sample in ours:
        other = by_id[sample["id"]]
        verdict, other_verdict = bool(sample[spec["ours"]]), bool(other["exact_match"])
        same_prompt += other["arguments"][0][0] == sample["prompt"]
        same_generation += other["resps"][0][0].strip() == sample["generation"].strip()
        if verdict != other_verdict:
            disagreements.append({"id": sample["id"], "ours": verdict, "lm_eval": other_verdict,
                                  "generation": sample["generation"], "lm_eval_generation": other["resps"][0][0],
                                  "extracted": sample["extracted"], "lm_eval_extracted": other["filtered_resps"][0]})
    n = len(ours)
    return {"kind": kind, "n": n, "our_metric": spec["ours"], "lm_eval_metric": f"exact_match,{spec['filter']}",
            "ours_accuracy": sum(bool(s[spec["ours"]]) for s in ours) / n,
            "lm_eval_accuracy": sum(bool(s["exact_match"]) for s in by_id.values()) / n,
            "agreement": 1 - len(disagreements) / n, "same_prompt": same_prompt / n,
            "same_generation": same_generation / n, "disagreements": disagreements}


def cross_check(run_dir: Path | str, model_dir: Path | str | None = None) -> dict:
    """Run the check and write `<run dir>/lm_eval_check.json`; returns what it wrote."""
    import lm_eval

    run_dir = Path(run_dir).resolve()
    model_dir = Path(model_dir).resolve() if model_dir else run_dir / "model"
    cfg = OmegaConf.create(json.loads((run_dir / RESULT_FILE).read_text())["config"])
    samples = read_samples(run_dir)
    model_cfg = OmegaConf.merge(cfg.model, {"path": str(model_dir)})
    tokenizer = load_tokenizer(model_cfg, cache_dir=cfg.cache_dir)
    device = resolve_device(cfg.device)
    model = load_model(model_cfg, tokenizer, seed=cfg.seed, cache_dir=cfg.cache_dir).to(device).eval()
    # A model's own generation_config may carry a max_new_tokens (Qwen2.5's: 2048) that transformers
    # prefers over the max_length lm-eval passes; our engines always pass the run's budget, so lm-eval
    # must generate under the same one (its task yaml's max_gen_toks).
    model.generation_config.max_new_tokens = None
    work_dir = run_dir / "lm_eval_check"
    work_dir.mkdir(exist_ok=True)
    kinds = {name: eval_set_kind(set_samples[0]) for name, set_samples in samples.items()}
    names = {name: write_task(work_dir, name, kinds[name], set_samples, cfg.task.get("stop_strings") or [],
                              cfg.eval.max_new_tokens) for name, set_samples in samples.items()}
    theirs = run_lm_eval(model, tokenizer, list(names.values()), work_dir, cfg.eval.batch_size,
                         resolve_precision(cfg.train.precision, device))
    by_set = {name: compare(samples[name], theirs[names[name]], kinds[name]) for name in samples}
    report = {"run_dir": str(run_dir), "model_dir": str(model_dir), "lm_eval_version": lm_eval.__version__,
              "task_dir": str(work_dir), "agreement": min(s["agreement"] for s in by_set.values()),
              "eval_sets": by_set}
    write_json_atomic(run_dir / CHECK_FILE, report)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="slmbench-lm-eval-check", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a finished run dir with samples.jsonl and model/")
    parser.add_argument("--model-dir", type=Path, default=None, help="the saved model (default: <run_dir>/model)")
    args = parser.parse_args(argv)
    report = cross_check(args.run_dir, args.model_dir)
    for name, s in report["eval_sets"].items():
        print(f"{name}: ours {s['ours_accuracy']:.4f} ({s['our_metric']}), lm-eval {s['lm_eval_accuracy']:.4f} "
              f"({s['lm_eval_metric']}), per-question agreement {s['agreement']:.4f} over {s['n']}")
    print(f"written: {Path(report['run_dir']) / CHECK_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
