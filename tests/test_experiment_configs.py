"""conf/experiment/*.yaml and conf/method/lora-r128.yaml: they compose, sweep the paper's axes,
name only configs that exist, and mark every training/eval hyperparameter with its source."""
from __future__ import annotations

import re

import pytest
from hydra import compose, initialize_config_dir

from conftest import CONF, compose_config

PAPER = {"adagradselect_paper": {"full", "lora-r128", "lora", "topk", "adagradselect"},
         "ist_paper": {"lora", "ist"}}
PAPER_MODELS = {"qwen2.5-0.5b", "llama3.2-1b", "phi4-mini"}


def composed(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=True)


def sweep_axes(cfg) -> dict[str, list[str]]:
    return {k: str(v).split(",") for k, v in cfg.hydra.sweeper.params.items()}


def test_lora_r128_extends_lora():
    method = compose_config("method=lora-r128").method
    lora = compose_config("method=lora").method
    assert (method.r, method.lora_alpha) == (128, 256)
    assert method._target_ == lora._target_ and method.target_modules == lora.target_modules


@pytest.mark.parametrize("name", ["adagradselect_paper_smoke", "ist_paper_smoke"])
def test_smoke_experiments_compose_on_what_exists(name):
    cfg = composed(f"+experiment={name}")
    axes = sweep_axes(cfg)
    assert set(axes) == {"method", "model", "seed"} and len(axes["seed"]) >= 2
    assert set(axes["model"]) == {"tiny-qwen2", "tiny-llama", "tiny-phi3"}
    for method in axes["method"]:
        assert (CONF / "method" / f"{method}.yaml").exists(), method
        assert method in cfg.lr_by_method, f"{name}: lr_by_method has no {method}"
    assert cfg.task.name == "arithmetic" and cfg.wandb.mode == "disabled" and cfg.train.max_steps <= 5


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_experiment_axes_and_sources(name):
    text = (CONF / "experiment" / f"{name}.yaml").read_text()
    axes = {k: v.split("#")[0].strip().split(",") for k, v in re.findall(r"^      (\w+): (.+)$", text, re.M)}
    assert set(axes["method"]) == PAPER[name] and set(axes["model"]) == PAPER_MODELS and len(axes["seed"]) == 3
    lr_block = re.search(r"^lr_by_method:\n((?:  .*\n|\s*#.*\n)+)", text, re.M).group(1)
    lrs = set(re.findall(r"^  ([\w-]+): [\d.e+-]+$", lr_block, re.M))
    assert lrs == PAPER[name]
    # Every training and evaluation hyperparameter says where it comes from (a comment on its line).
    for section in ("train", "eval"):
        block = text.split(f"\n{section}:\n")[1].split("\n\n")[0]
        for line in block.splitlines():
            assert "#" in line or "${" in line, f"{name}.yaml {section}: no source comment on {line.strip()!r}"


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_experiment_composes_and_names_only_configs_that_exist(name):
    text = (CONF / "experiment" / f"{name}.yaml").read_text()
    axes = {k: v.split("#")[0].strip().split(",") for k, v in re.findall(r"^      (\w+): (.+)$", text, re.M)}
    needed = [CONF / "task" / "metamathqa.yaml", *(CONF / "model" / f"{m}.yaml" for m in axes["model"]),
              *(CONF / "method" / f"{m}.yaml" for m in axes["method"])]
    missing = [str(p.relative_to(CONF)) for p in needed if not p.exists()]
    assert not missing, f"conf/experiment/{name}.yaml sweeps configs that do not exist: {', '.join(missing)}"
    cfg = composed(f"+experiment={name}")
    assert cfg.train.epochs == 3 and cfg.train.max_steps is None and cfg.train.precision == "bf16"
