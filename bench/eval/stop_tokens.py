"""The token ids that end a generation: the model's own `generation_config.eos_token_id` (an int or a
list; Phi-4-mini-instruct's lists `<|end|>` 200020 and `<|endoftext|>` 199999, its hub
generation_config.json) plus the tokenizer's eos. HF `generate` reads the same field
(transformers GenerationConfig.eos_token_id: "optionally, use a list to set multiple end-of-sequence
tokens"), so both eval engines stop where the model's authors say a turn ends."""
from __future__ import annotations

from bench.models.loading import causal_lm


def stop_token_ids(model, tokenizer) -> list[int]:
    """The generation_config's eos ids first (in its order), then the tokenizer's eos; no duplicates."""
    generation_config = getattr(causal_lm(model), "generation_config", None)
    configured = getattr(generation_config, "eos_token_id", None)
    if configured is None:
        configured = []
    elif isinstance(configured, int):
        configured = [configured]
    ids: list[int] = []
    for token_id in [*configured, tokenizer.eos_token_id]:
        if token_id is not None and int(token_id) not in ids:
            ids.append(int(token_id))
    if not ids:
        raise ValueError(f"no stop token: neither the model's generation_config nor the tokenizer "
                         f"({type(tokenizer).__name__}) names an eos token")
    return ids
