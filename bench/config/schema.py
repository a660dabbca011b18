"""Structured-config schemas (Hydra ConfigStore): a misspelt key or a wrong type fails at start
with Hydra's own message naming the key. The model/task/method groups stay open: their keys are
the knobs of whatever class `_target_` names, checked by that class's constructor."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore


@dataclass
class OptimConfig:
    """What bench/run/optim.py and the loop read: shared by fine-tuning and the base pretraining."""
    batch_size: int = 32
    grad_accum: int = 1
    lr: float = 1.0e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    schedule: str = "cosine"
    warmup_steps: int = 10
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    grad_clip: Optional[float] = 1.0


@dataclass
class TrainConfig(OptimConfig):
    max_steps: Optional[int] = 150
    epochs: Optional[int] = None
    precision: str = "auto"
    gradient_checkpointing: bool = False
    max_seq_len: int = 512
    overlong: str = "drop"
    loss_on_prompt: bool = False
    throughput_warmup_steps: int = 3
    checkpoint_every: Optional[int] = None
    keep_checkpoints: int = 2
    resume: bool = True
    fast_path: str = "none"  # none | chunked_ce (bench/loss.py)
    compile: bool = False    # torch.compile of each decoder layer


@dataclass
class EvalConfig:
    max_new_tokens: int = 6
    batch_size: int = 256
    limit: Optional[int] = None
    sample: str = "first"
    sample_seed: int = 0
    engine: str = "hf"        # issue 8: hf | static (bench/eval/static_engine.py)
    cuda_graphs: bool = True  # issue 8: static engine's decode step as a CUDA graph


@dataclass
class WandbConfig:
    mode: str = "offline"
    project: str = "slmbench"
    entity: Optional[str] = None
    group: Optional[str] = None


@dataclass
class BasePretrainingConfig(OptimConfig):
    operators: list[str] = field(default_factory=lambda: ["+", "-", ">", "<"])
    operand_max: int = 30
    seed: int = 1234
    steps: int = 800
    batch_size: int = 64
    lr: float = 3.0e-3
    schedule: str = "linear"
    warmup_steps: int = 20
    min_lr_ratio: float = 0.05


@dataclass
class SweepConfig:
    rerun: bool = False  # true: run again even when a finished record with the same config exists


@dataclass
class SlmbenchConfig:
    model: Any = None
    task: Any = None
    method: Any = None
    seed: int = 0
    device: str = "auto"
    cache_dir: str = "outputs/cache"
    store_dir: str = "outputs/store"
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    base_pretraining: BasePretrainingConfig = field(default_factory=BasePretrainingConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    # Experiments that tune the learning rate per method set `train.lr: ${lr_by_method.${hydra:runtime.choices.method}}`.
    lr_by_method: dict[str, float] = field(default_factory=dict)


def register() -> None:
    ConfigStore.instance().store(name="slmbench_schema", node=SlmbenchConfig)


register()
