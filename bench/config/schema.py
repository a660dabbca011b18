"""Structured-config schemas (Hydra ConfigStore): the *types* of every section, so that a misspelt
key or a wrong type fails at start with Hydra's own message naming the key.

Every default value is written once, in `conf/config.yaml` (beside the comment that explains it);
the fields here are MISSING, so a key the yaml forgets fails loudly instead of taking a second,
silently different default. The model/task/method groups stay open: their keys are the knobs of
whatever class `_target_` names, checked by that class's constructor. The closed vocabularies of
the optimizer's keys are here too, below the code that reads them (bench/run/optim.py) and the
checks that name them (bench/config/checks.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

SCHEDULES = ("constant", "linear", "cosine")  # train.schedule: bench/run/optim.py build_scheduler
# train.lr_scaling: the exponent p of lr x r^p, r = tokens per step over the default budget's.
# sqrt: the square-root rule for Adam (Malladi et al. 2022, "On the SDEs and Scaling Rules for
# Adaptive Gradient Algorithms", arXiv 2205.10287); linear: Goyal et al. 2017's rule for SGD.
LR_SCALINGS = {"none": 0.0, "sqrt": 0.5, "linear": 1.0}


@dataclass
class OptimConfig:
    """What bench/run/optim.py and the loop read: shared by fine-tuning and the base pretraining."""
    batch_size: int = MISSING
    grad_accum: int = MISSING
    lr: float = MISSING
    betas: list[float] = MISSING
    schedule: str = MISSING
    warmup_steps: int = MISSING
    min_lr_ratio: float = MISSING
    weight_decay: float = MISSING
    grad_clip: Optional[float] = MISSING


@dataclass
class TrainConfig(OptimConfig):
    max_steps: Optional[int] = MISSING
    epochs: Optional[int] = MISSING
    precision: str = MISSING
    gradient_checkpointing: bool = MISSING
    max_seq_len: int = MISSING
    overlong: str = MISSING
    loss_on_prompt: bool = MISSING
    batching: str = MISSING
    pack_len: int = MISSING
    pack_tokens: Optional[int] = MISSING
    lr_scaling: str = MISSING
    throughput_warmup_steps: int = MISSING
    checkpoint_every: Optional[int] = MISSING
    keep_checkpoints: int = MISSING
    resume: bool = MISSING
    fast_path: str = MISSING
    compile: bool = MISSING
    cuda_graphs: Any = MISSING  # true | false | auto (bench/compiled.py CUDA_GRAPH_SETTINGS)
    log_every: int = MISSING
    save_model: bool = MISSING


@dataclass
class EvalConfig:
    split: str = MISSING
    max_new_tokens: int = MISSING
    batch_size: int = MISSING
    limit: Optional[int] = MISSING
    sample: str = MISSING
    sample_seed: int = MISSING
    engine: str = MISSING
    cuda_graphs: bool = MISSING
    refill: bool = MISSING
    check_every: int = MISSING


@dataclass
class WandbConfig:
    mode: str = MISSING
    project: str = MISSING
    entity: Optional[str] = MISSING
    group: Optional[str] = MISSING


@dataclass
class BasePretrainingConfig(OptimConfig):
    operators: list[str] = MISSING
    operand_max: int = MISSING
    seed: int = MISSING
    steps: int = MISSING


@dataclass
class ProtocolConfig:
    """The comparison protocol's keys (bench/protocol.py)."""
    name: Optional[str] = MISSING
    stage: Optional[str] = MISSING
    selection_dir: Optional[str] = MISSING
    lr_index: Optional[int] = MISSING
    lr_grid: dict[str, list[float]] = MISSING
    stages: dict[str, Any] = MISSING


@dataclass
class SweepConfig:
    rerun: bool = MISSING


@dataclass
class SlmbenchConfig:
    model: Any = None
    task: Any = None
    method: Any = None
    seed: int = MISSING
    device: str = MISSING
    cache_dir: str = MISSING
    store_dir: str = MISSING
    timing: Optional[str] = MISSING
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    base_pretraining: BasePretrainingConfig = field(default_factory=BasePretrainingConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    # Experiments that tune the learning rate per method set `train.lr: ${lr_by_method.${hydra:runtime.choices.method}}`.
    lr_by_method: dict[str, float] = field(default_factory=dict)


def register() -> None:
    """The schema, and the protocol's `${protocol_lr:...}` resolver, before Hydra composes."""
    from bench.protocol import register_resolver

    ConfigStore.instance().store(name="slmbench_schema", node=SlmbenchConfig)
    register_resolver()


register()
