"""What `bench.perf.lab` measures on: real shapes (random init), real tokenizers, real GSM8K rows.

Shapes are the real models' `config.json` from `../shared/data/models` with random weights (no
checkpoint is needed to measure time and memory). Training batches are GSM8K train rows in the
harness's own format (prompt masked out of the loss), packed end to end and cut into fixed
(batch, seq_len) windows, so every step of every loop sees the same shapes and the same tokens.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from bench.data.batching import build_prompt, tokenize_examples
from bench.tasks.base import Example

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATA_DIR = REPO.parent / "shared" / "data"
GSM8K_PROMPT = "Question: {question}\nAnswer:"  # lm-eval's gsm8k doc_to_text (reference/anchors.md 1.4)


@dataclass(frozen=True)
class Shape:
    name: str
    model_dir: str  # folder under <data>/models
    batch_size: int
    gradient_checkpointing: bool
    dims: dict = field(default_factory=dict)  # config overrides (the tiny CPU shapes)


# Batch sizes and checkpointing as in issue 8's reference figures.
SHAPES = {s.name: s for s in [
    Shape("qwen2.5-0.5b", "Qwen__Qwen2.5-0.5B", 8, False),
    Shape("llama3.2-1b", "meta-llama__Llama-3.2-1B", 8, False),
    Shape("phi4-mini", "microsoft__Phi-4-mini-instruct", 4, True),
    # CPU-sized: the real config and tokenizer, shrunk decoder (the CPU test uses these).
    *[Shape(f"tiny-{arch}", d, 2, False, {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4,
                                          "num_attention_heads": 4, "num_key_value_heads": 2})
      for arch, d in [("qwen2", "Qwen__Qwen2.5-0.5B"), ("llama", "meta-llama__Llama-3.2-1B"),
                      ("phi3", "microsoft__Phi-4-mini-instruct")]],
]}


def get_shape(name: str) -> Shape:
    if name not in SHAPES:
        raise ValueError(f"--shapes: unknown shape {name!r}; allowed: {', '.join(SHAPES)}")
    return SHAPES[name]


def load_tokenizer(data_dir: Path, shape: Shape):
    tokenizer = AutoTokenizer.from_pretrained(data_dir / "models" / shape.model_dir)
    if tokenizer.pad_token_id is None:  # Llama-3.2: as bench/models.load_tokenizer does
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def build_model(data_dir: Path, shape: Shape, device: torch.device, seed: int) -> torch.nn.Module:
    """Random-init fp32 model of the real shape, built directly on `device` (fast init on GPU)."""
    config = AutoConfig.from_pretrained(data_dir / "models" / shape.model_dir)
    for key, value in shape.dims.items():
        setattr(config, key, value)
    if getattr(config, "head_dim", None) and "hidden_size" in shape.dims:
        config.head_dim = config.hidden_size // config.num_attention_heads
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa", dtype=torch.float32)
    return model


def read_jsonl(path: Path) -> list[dict]:
    rows = []
    with open(path) as handle:
        for line_no, line in enumerate(handle, 1):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{line_no}: not JSON ({err})") from err
    return rows


def gsm8k_examples(data_dir: Path, split: str) -> list[Example]:
    rows = read_jsonl(data_dir / "gsm8k" / f"{split}.jsonl")
    return [Example(id=f"gsm8k-{split}-{i}", prompt=GSM8K_PROMPT.format(question=r["question"]),
                    target=" " + r["answer"], gold=r["answer"].rsplit("####", 1)[-1].strip())
            for i, r in enumerate(rows)]


def packed_batches(tokenizer, data_dir: Path, batch_size: int, seq_len: int, n_batches: int) -> list[dict]:
    """`n_batches` (batch_size, seq_len) batches of GSM8K train rows packed end to end; labels
    mask the prompts as the harness does; no padding, so every position is real."""
    need = batch_size * seq_len * n_batches
    ids: list[int] = []
    labels: list[int] = []
    examples = gsm8k_examples(data_dir, "train")
    for start in range(0, len(examples), 256):
        for ex in tokenize_examples(tokenizer, examples[start:start + 256], max_seq_len=10**9,
                                    use_chat_template=False):
            ids += ex.input_ids
            labels += ex.labels
        if len(ids) >= need:
            break
    if len(ids) < need:
        raise ValueError(f"GSM8K train has {len(ids)} tokens, fewer than {need} needed")
    input_ids = torch.tensor(ids[:need]).view(n_batches, batch_size, seq_len)
    label_ids = torch.tensor(labels[:need]).view(n_batches, batch_size, seq_len)
    return [{"input_ids": input_ids[i].clone(), "attention_mask": torch.ones_like(input_ids[i]),
             "labels": label_ids[i].clone()} for i in range(n_batches)]


def eval_prompts(tokenizer, data_dir: Path, limit: int | None) -> list[str]:
    """GSM8K test questions in the harness's prompt format (the model's chat template when it has one)."""
    examples = gsm8k_examples(data_dir, "test")
    examples = examples if limit is None else examples[:limit]
    return [build_prompt(tokenizer, ex.prompt, "auto") for ex in examples]
