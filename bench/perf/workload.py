"""What the benchmark lab measures on: the product's own configs, runs and batches.

A lab row is an `slmbench` run: the config is composed by Hydra from `conf/` exactly as
`slmbench model=<model> method=<method> task=gsm8k ...` would compose it (`lab_overrides` lists
the overrides, so any row can be re-run from the command line), and the run is built by the
run object (bench/run/recipe.py). Real shapes without weights come from `conf/model/*.yaml` with
`model.init=random` and the config files under `--data-dir`; data come from the task pipeline.
The data dir is always an argument: nothing here points into a checkout's neighbours.
"""
from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig

from bench.paths import REPO_ROOT

CONF = REPO_ROOT / "conf"


def model_overrides(model: str, data_dir: Path | None) -> list[str]:
    """A hub model (conf/model/<model>.yaml with `hub_id`) becomes its real shape with random weights,
    from `<data_dir>/models/<org>__<name>/` (config and tokenizer); other models load as they are."""
    from omegaconf import OmegaConf

    path = CONF / "model" / f"{model}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))
        raise ValueError(f"--models: no {path}; known: {', '.join(known)}")
    hub_id = OmegaConf.load(path).get("hub_id")
    if hub_id is None:
        return [f"model={model}"]
    if data_dir is None:
        raise ValueError(f"--models {model}: a hub model needs --data-dir (its config and tokenizer files)")
    return [f"model={model}", "model.init=random", f"model.path={Path(data_dir) / 'models' / hub_id.replace('/', '__')}"]


def task_overrides(data_dir: Path | None) -> list[str]:
    """GSM8K train -> test from local files (the reference workload's task)."""
    if data_dir is None:
        raise ValueError("the GSM8K workload needs --data-dir (gsm8k/train.jsonl and gsm8k/test.jsonl)")
    gsm8k = Path(data_dir) / "gsm8k"
    return ["task=gsm8k", f"task.train.path={gsm8k / 'train.jsonl'}", f"task.eval.gsm8k_test.path={gsm8k / 'test.jsonl'}"]


def lab_overrides(model: str, method: str, steps: int, data_dir: Path | None, extra: list[str] = ()) -> list[str]:
    """The `slmbench` overrides of one lab row: constant LR, no warm-up, `steps` steps, W&B off."""
    base, _, knobs = method.partition(":")
    knob_overrides = [f"method.{knob}" for knob in knobs.split(",")] if knobs else []
    return [*model_overrides(model, data_dir), *task_overrides(data_dir), f"method={base}", *knob_overrides,
            f"train.max_steps={steps}", "train.epochs=null", "train.schedule=constant", "train.warmup_steps=0",
            "wandb.mode=disabled", *extra]


def compose(overrides: list[str]) -> DictConfig:
    """The config `slmbench <overrides>` runs with (Hydra's compose; no run dir, no Hydra runtime)."""
    from hydra import compose as hydra_compose, initialize_config_dir

    import bench.config.schema  # noqa: F401 - the schema config.yaml's defaults list names

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides))


def draw_batches(run, n: int) -> list[dict[str, torch.Tensor]]:
    """The next `n` batches of `run`'s stream, with the stream left where it was: what the run
    itself will train on, handed to the plain loop too."""
    position = run.batches.state_dict()
    batches = [next(run.batches) for _ in range(n)]
    run.batches.load_state_dict(position)
    return batches


def real_tokens(batch: dict[str, torch.Tensor]) -> int:
    """Non-padding tokens of a batch (what tokens/s counts in the lab)."""
    return int(batch["attention_mask"].sum()) if "attention_mask" in batch else batch["input_ids"].numel()
