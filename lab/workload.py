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

from bench.data.examples import IGNORE_INDEX
from bench.paths import CODE_ROOT

CONF = CODE_ROOT / "conf"


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


def sweep_methods() -> tuple[str, ...]:
    """The methods of the default sweep, in its order: conf/config.yaml `hydra.sweeper.params.method`,
    the one place the method list is written."""
    from omegaconf import OmegaConf

    return tuple(str(OmegaConf.load(CONF / "config.yaml").hydra.sweeper.params.method).split(","))


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
    """Non-padding tokens of a batch (what tokens/s counts in the lab). Padded batches: the
    attention mask. Packed rows (bench/data/packing.py, no attention mask): a row's real tokens end
    at its last labelled position, since every example ends with a labelled token (its eos, or its
    last target token when truncated) and the row's padding tail carries no label."""
    if "attention_mask" in batch:
        return int(batch["attention_mask"].sum())
    if "position_ids" not in batch:
        return batch["input_ids"].numel()
    labelled = batch["labels"] != IGNORE_INDEX
    columns = torch.arange(1, labelled.shape[1] + 1, device=labelled.device).expand_as(labelled)
    return int((columns * labelled).amax(dim=1).sum())


def padding_fraction(batches: list[dict[str, torch.Tensor]]) -> float | None:
    """Share of the batches' positions that hold no real token."""
    total = sum(b["input_ids"].numel() for b in batches)
    return 1 - sum(real_tokens(b) for b in batches) / total if total else None


def reference_overrides(model: str, data_dir: Path | None, batch_size: int, lr: float, seed: int, device: str,
                        method: str = "full", extra: list[str] = ()) -> list[str]:
    """The reference workload as users run it: `model` fine-tuned by `method` on GSM8K train for
    one epoch at `batch_size`, evaluated on the GSM8K test set; everything else the config's defaults."""
    return [*model_overrides(model, data_dir), *task_overrides(data_dir), f"method={method}", "train.epochs=1",
            "train.max_steps=null", f"train.batch_size={batch_size}", f"train.lr={lr}", f"seed={seed}",
            f"device={device}", "wandb.mode=disabled", *extra]
