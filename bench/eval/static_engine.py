"""Fast batched greedy generation: a static KV cache, length-sorted batches, a CUDA-graphed decode step.

HF `generate` spends most of a decode step on per-step Python and launch overhead, while the
arithmetic of one step over a batch of a few hundred rows is small (docs/performance-analysis.md,
"Measurements behind choices in the code"). This engine keeps every tensor that a decode step touches
at a fixed address (HF's `StaticCache`, a preallocated 4-D attention mask, the input token and
position buffers) so that on CUDA the whole forward + argmax of one step is captured once as a
CUDA graph and replayed; on CPU the same step runs eagerly (that is what the identity tests use).

Greedy outputs are the same tokens as HF `generate(do_sample=False)` with left padding: the same
positions (`cumsum(mask) - 1`), the same rows finished at eos and then fed the pad token, the
same first-index argmax. The only differences are where floating-point sums may be ordered
differently (attention over the static cache length instead of the grown one; a different batch
size picks different GEMM kernels), which on bf16 GPU runs can flip near-ties; the lab
(`python -m lab shapes`, `python -m lab real_workload`) reports the agreement with HF on the device.

`generate_static(refill=True)` (the default, `eval.refill`) runs the refilling engine of
bench/eval/refill_engine.py instead of batch after batch; `StaticBatchGenerator` below is the plain
one (`refill=False`), kept as the reference that the refilling engine is tested against.
"""
from __future__ import annotations

import logging

import torch
from tqdm.auto import tqdm
from transformers import StaticCache

from bench.eval.decode_attention import decode_attention
from bench.eval.graph_step import capture_cuda_graph, graph_autocast
from bench.eval.refill_engine import generate_refill
from bench.eval.stop_tokens import stop_token_ids
from bench.models.loading import causal_lm

log = logging.getLogger(__name__)


class UniformDtypeStaticCache(StaticCache):
    """HF's StaticCache with keys and values stored in one dtype.

    Under bf16 autocast with fp32 weights, HF's RoPE multiplies the bf16 keys by fp32 cos/sin, so
    keys arrive in fp32 while values stay bf16, and `StaticLayer` allocates both buffers in the
    keys' dtype (index_copy_ then refuses the bf16 values). Autocast casts sdpa's inputs to bf16
    anyway, so storing both in bf16 changes no result and halves the key cache.
    """

    def __init__(self, *args, dtype: torch.dtype | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.storage_dtype = dtype

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        if self.storage_dtype is not None:
            key_states, value_states = key_states.to(self.storage_dtype), value_states.to(self.storage_dtype)
        return super().update(key_states, value_states, layer_idx, *args, **kwargs)


class StaticBatchGenerator:
    """Greedy generation for one fixed (batch rows, cache length); reused batch after batch.

    Every buffer is allocated once in `__init__` or at the first prefill, so the captured CUDA
    graph (made at the first decode step) stays valid for all later batches.
    """

    def __init__(self, model, rows: int, cache_len: int, pad_id: int, stop_ids: list[int], device: torch.device,
                 precision: str, cuda_graphs: bool):
        # the causal LM itself (not a peft wrapper): its forward takes logits_to_keep
        self.model, self.rows, self.cache_len = causal_lm(model), rows, cache_len
        self.pad_id, self.device, self.precision = pad_id, device, precision
        self.stop_ids = torch.tensor(list(stop_ids), dtype=torch.long, device=device)
        self.cuda_graphs = cuda_graphs and device.type == "cuda"
        self.cache = UniformDtypeStaticCache(config=self.model.config, max_cache_len=cache_len,
                                             dtype=torch.bfloat16 if precision == "bf16" else None)
        # Decode-step inputs and output at fixed addresses (the graph reads and writes these).
        self.token = torch.full((rows, 1), pad_id, dtype=torch.long, device=device)
        self.position = torch.zeros((rows, 1), dtype=torch.long, device=device)
        self.key_mask = torch.zeros((rows, 1, 1, cache_len), dtype=torch.bool, device=device)
        self.next_token = torch.zeros((rows,), dtype=torch.long, device=device)
        self.graph: torch.cuda.CUDAGraph | None = None

    def _autocast(self):
        return graph_autocast(self.device, self.precision, self.cuda_graphs)

    def _step(self) -> None:
        """One decode step on the fixed buffers: forward one token per row, write the argmax."""
        with self._autocast():
            out = self.model(input_ids=self.token, attention_mask=self.key_mask, position_ids=self.position,
                             past_key_values=self.cache, use_cache=True)
        self.next_token.copy_(out.logits[:, -1, :].argmax(dim=-1))

    def _set_cache_length(self, length: int) -> None:
        for layer in self.cache.layers:
            layer.cumulative_length.fill_(length)

    def _capture(self, prompt_len: int) -> None:
        """Record `_step` as a graph; warm-up writes at `prompt_len`, which the first real step overwrites."""
        self.graph = capture_cuda_graph(self._step, lambda: self._set_cache_length(prompt_len), self.device)

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
        """input_ids/attention_mask: (rows, P) left-padded. Returns (rows, max_new_tokens) new tokens,
        with the pad token after a row's stop token (as HF `generate` pads finished rows)."""
        rows, prompt_len = input_ids.shape
        if rows != self.rows or prompt_len + max_new_tokens > self.cache_len:
            raise ValueError(f"batch ({rows} rows, {prompt_len}+{max_new_tokens} tokens) does not fit the "
                             f"engine ({self.rows} rows, cache {self.cache_len})")
        self.cache.reset()
        valid = attention_mask.bool()
        # Prefill mask (rows, 1, P, cache_len): causal over the prompt, padding keys hidden. A pad
        # query also sees itself, so no row is fully masked (that would give NaN keys in the cache).
        causal = torch.ones(prompt_len, prompt_len, dtype=torch.bool, device=self.device).tril()
        prefill_mask = torch.zeros((rows, 1, prompt_len, self.cache_len), dtype=torch.bool, device=self.device)
        prefill_mask[:, 0, :, :prompt_len] = causal & valid[:, None, :]
        prefill_mask[:, 0, :, :prompt_len] |= torch.eye(prompt_len, dtype=torch.bool, device=self.device)
        # HF's positions for left padding: cumsum of the mask - 1, pads at 1.
        positions = (valid.long().cumsum(-1) - 1).masked_fill(~valid, 1)
        with self._autocast():
            out = self.model(input_ids=input_ids, attention_mask=prefill_mask, position_ids=positions,
                             past_key_values=self.cache, use_cache=True, logits_to_keep=1)
        token = out.logits[:, -1, :].argmax(dim=-1)
        del out, prefill_mask

        self.key_mask.zero_()
        self.key_mask[:, 0, 0, :prompt_len] = valid
        self.position.copy_(positions[:, -1:])
        new_tokens = torch.empty((rows, max_new_tokens), dtype=torch.long, device=self.device)
        finished = torch.zeros(rows, dtype=torch.bool, device=self.device)
        for t in range(max_new_tokens):
            token = torch.where(finished, torch.full_like(token, self.pad_id), token)
            new_tokens[:, t] = token
            finished |= torch.isin(token, self.stop_ids)
            if t == max_new_tokens - 1:
                break
            # Every check of `finished` on the host would sync; check every 32 steps only.
            if t % 32 == 31 and bool(finished.all()):
                new_tokens[:, t + 1:] = self.pad_id
                break
            self.token.copy_(token[:, None])
            self.position.add_(1)
            self.key_mask[:, 0, 0, prompt_len + t] = True  # HF's mask grows by one 1 for every row
            if self.cuda_graphs:
                if self.graph is None:
                    self._capture(prompt_len + t)
                self.graph.replay()
            else:
                self._step()
            token = self.next_token.clone()
        return new_tokens


@torch.no_grad()
def generate_static(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int,
                    device: torch.device, precision: str, cuda_graphs: bool = True,
                    desc: str = "eval", stop_ids: list[int] | None = None, stop_strings=(),
                    refill: bool = True, check_every: int = 16) -> list[str]:
    """Greedy completions in the order of `prompts` (same contract as `bench.eval.evaluate.generate_hf`),
    each ended by any of `stop_ids` (default: `stop_token_ids(model, tokenizer)`).

    `refill` (the default): a row that ends hands its slot to the next prompt (bench/eval/refill_engine.py;
    rows also end a little after a stop string, which the caller cuts; the host looks every
    `check_every` steps). Without: prompts are sorted by token length (longest first) and cut into
    batches of `batch_size`, each decoded until all its rows end; the last batch is filled up with
    copies of its last prompt so every batch has the same shape.
    """
    stop_ids = stop_token_ids(model, tokenizer) if stop_ids is None else list(stop_ids)
    # Decode steps attend to the cache without repeating its key/value heads (bench/eval/decode_attention.py).
    with decode_attention(model):
        if refill:
            return generate_refill(model, tokenizer, prompts, max_new_tokens, batch_size, device, precision, stop_ids,
                                   stop_strings, cuda_graphs=cuda_graphs, check_every=check_every, desc=desc)
        return _generate_batches(model, tokenizer, prompts, max_new_tokens, batch_size, device, precision,
                                 cuda_graphs, desc, stop_ids)


def _generate_batches(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int,
                      device: torch.device, precision: str, cuda_graphs: bool, desc: str,
                      stop_ids: list[int]) -> list[str]:
    """`refill=False`: sorted, fixed-shape batches, each decoded until all its rows end."""
    model.eval()
    encoded = tokenizer(prompts, add_special_tokens=True)["input_ids"]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]), reverse=True)
    rows = min(batch_size, len(prompts))
    cache_len = max(len(ids) for ids in encoded) + max_new_tokens
    engine = StaticBatchGenerator(model, rows, cache_len, tokenizer.pad_token_id, stop_ids,
                                  device, precision, cuda_graphs)
    completions: list[str] = [""] * len(prompts)
    for start in tqdm(range(0, len(order), rows), desc=desc, dynamic_ncols=True, mininterval=1.0):
        index = order[start:start + rows]
        filled = index + [index[-1]] * (rows - len(index))
        width = len(encoded[filled[0]])  # longest first
        input_ids = torch.full((rows, width), tokenizer.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((rows, width), dtype=torch.long)
        for row, i in enumerate(filled):
            ids = encoded[i]
            input_ids[row, width - len(ids):] = torch.tensor(ids)
            attention_mask[row, width - len(ids):] = 1
        new_tokens = engine.generate(input_ids.to(device), attention_mask.to(device), max_new_tokens)
        texts = tokenizer.batch_decode(new_tokens[:len(index)].cpu(), skip_special_tokens=True)
        for i, text in zip(index, texts):
            completions[i] = text
    model.train()
    return completions
