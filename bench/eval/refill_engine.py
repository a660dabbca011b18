"""Greedy generation with refilled slots: continuous batching on a static KV cache.

The plain static engine (bench/eval/static_engine.py) decodes a batch until its longest row ends,
so a row that stops early decodes padding for the rest of the batch. Here a row that stops (a stop
token, its token budget, or a task stop string) hands its slot to the next waiting prompt: the
slot's cache rows are cleared, the new prompt is prefilled into that slot alone (the other slots
keep their cache), and decoding goes on. The approach is vLLM's and TGI's continuous batching
(Yu et al., "Orca", OSDI 2022: iteration-level scheduling); the paging is not needed here because
every slot owns `cache_len` columns of one static cache.

Shapes stay static, so the decode step (forward, argmax, bookkeeping) is captured once as a CUDA
graph and replayed: every slot writes its key/value at its own column (`cursor`), reads through
its own key mask, and counts its own tokens on the device. The host looks every `check_every`
steps, through a non-blocking copy into pinned memory that it reads one check later (the GPU keeps
decoding the steps already queued meanwhile), so neither stop strings nor refills stall the loop.
A slot that ended waits at most two checks for its refill; its steps then are the only waste.

Per row, the tokens are those of the plain engine: the same prompt positions (`cumsum(mask) - 1`),
the same greedy argmax, the stop token kept, padding after it. Rows ended by a stop string are cut
a little later than the string (evaluate's `cut_at_stop_strings` cuts them where the plain engine's
would be cut).
"""
from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm
from transformers.cache_utils import Cache, StaticLayer

from bench.eval.graph_step import capture_cuda_graph, graph_autocast
from bench.models.loading import causal_lm

log = logging.getLogger(__name__)


@dataclass
class SlotWrites:
    """Where the next forward writes its keys and values: rows (k, 1, 1) of the cache, columns
    (k or 1, 1, L); `decode`: attention reads every column of every row (else only the new states)."""
    rows: torch.Tensor
    columns: torch.Tensor
    decode: bool


class SlotLayer(StaticLayer):
    """HF's StaticLayer written per row at per-row columns, in one storage dtype (bf16 under bf16
    autocast, as `UniformDtypeStaticCache` explains)."""

    def __init__(self, cache: "SlotCache", max_cache_len: int):
        super().__init__(max_cache_len=max_cache_len)
        self.slot_cache = cache

    def update(self, key_states, value_states, *args, **kwargs):
        cache = self.slot_cache
        dtype = cache.storage_dtype or key_states.dtype
        key_states, value_states = key_states.to(dtype), value_states.to(dtype)
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        writes = cache.writes
        heads = torch.arange(key_states.shape[1], device=key_states.device).view(1, -1, 1)
        self.keys.index_put_((writes.rows, heads, writes.columns), key_states)
        self.values.index_put_((writes.rows, heads, writes.columns), value_states)
        return (self.keys, self.values) if writes.decode else (key_states, value_states)

    def lazy_initialization(self, key_states, value_states):
        """Buffers for every row of the cache (the prefill that comes first may cover fewer rows)."""
        rows, self.device = self.slot_cache.rows, key_states.device
        self.keys = key_states.new_zeros((rows, key_states.shape[1], self.max_cache_len, key_states.shape[-1]))
        self.values = value_states.new_zeros((rows, value_states.shape[1], self.max_cache_len,
                                              value_states.shape[-1]))
        self.is_initialized = True


class SlotCache(Cache):
    def __init__(self, num_layers: int, rows: int, max_cache_len: int, storage_dtype: torch.dtype | None):
        self.rows, self.storage_dtype = rows, storage_dtype
        self.writes: SlotWrites | None = None
        super().__init__(layers=[SlotLayer(self, max_cache_len) for _ in range(num_layers)])

    def clear_rows(self, rows: torch.Tensor) -> None:
        """A refilled slot starts from zeros (masked columns hold finite values, never a stale NaN)."""
        for layer in self.layers:
            if layer.is_initialized:
                layer.keys[rows] = 0
                layer.values[rows] = 0


class RefillGenerator:
    """Device state of `rows` decoding slots; `prefill` puts prompts into slots, `step` decodes one
    token in every slot (a CUDA graph on CUDA), `snapshot` copies what the host needs."""

    def __init__(self, model, rows: int, cache_len: int, max_new_tokens: int, pad_id: int, stop_ids: list[int],
                 device: torch.device, precision: str, cuda_graphs: bool):
        self.model, self.rows, self.cache_len = causal_lm(model), rows, cache_len
        self.max_new_tokens, self.pad_id, self.device, self.precision = max_new_tokens, pad_id, device, precision
        self.cuda_graphs = cuda_graphs and device.type == "cuda"
        self.cache = SlotCache(self.model.config.num_hidden_layers, rows, cache_len,
                               torch.bfloat16 if precision == "bf16" else None)
        self.stop_ids = torch.tensor(list(stop_ids), dtype=torch.long, device=device)
        self.pad = torch.tensor(pad_id, dtype=torch.long, device=device)

        def zeros(*shape, dtype=torch.long):
            return torch.zeros(shape, dtype=dtype, device=device)
        # Everything the decode step reads or writes, at fixed addresses (the graph replays on them).
        self.token, self.position, self.cursor = zeros(rows, 1), zeros(rows, 1), zeros(rows, 1)
        self.key_mask = zeros(rows, 1, 1, cache_len, dtype=torch.bool)
        self.done = torch.ones(rows, dtype=torch.bool, device=device)  # empty slots count as done
        self.count = zeros(rows)
        self.history = torch.full((rows, max_new_tokens), pad_id, dtype=torch.long, device=device)
        self.decode_writes = SlotWrites(torch.arange(rows, device=device).view(rows, 1, 1),
                                        self.cursor.view(rows, 1, 1), decode=True)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.host = None  # pinned snapshot buffers, made at the first snapshot

    def _is_stop(self, tokens: torch.Tensor) -> torch.Tensor:
        return (tokens[:, None] == self.stop_ids).any(-1)  # a compare, not isin: nothing data-dependent

    def _step(self) -> None:
        """One token for every slot; a done slot is fed padding and changes no count or position."""
        self.key_mask.view(self.rows, self.cache_len).scatter_(1, self.cursor, True)
        self.cache.writes = self.decode_writes
        with graph_autocast(self.device, self.precision, self.cuda_graphs):
            out = self.model(input_ids=self.token, attention_mask=self.key_mask, position_ids=self.position,
                             past_key_values=self.cache, use_cache=True)
        active = ~self.done
        token = torch.where(active, out.logits[:, -1, :].argmax(dim=-1), self.pad)
        self.token.copy_(token[:, None])
        column = self.count.clamp(max=self.max_new_tokens - 1)[:, None]
        kept = torch.where(active[:, None], token[:, None], self.history.gather(1, column))
        self.history.scatter_(1, column, kept)
        self.count.add_(active)
        self.done.logical_or_(self._is_stop(token) | (self.count >= self.max_new_tokens))
        self.cursor.add_(active[:, None])
        self.position.add_(active[:, None])

    def step(self) -> None:
        if not self.cuda_graphs:
            self._step()
            return
        if self.graph is None:
            state = [self.token, self.position, self.cursor, self.key_mask, self.done, self.count, self.history]
            saved = [t.clone() for t in state]

            def restore():  # the warm-up steps write only these (and the cache at `cursor`, rewritten later)
                for t, s in zip(state, saved):
                    t.copy_(s)
            self.graph = capture_cuda_graph(self._step, restore, self.device)
        self.graph.replay()

    @torch.no_grad()
    def prefill(self, slots: list[int], prompts: list[list[int]]) -> None:
        """Put `prompts` (token ids) into `slots`: their cache rows cleared, left-padded to the longest."""
        k, width = len(slots), max(len(ids) for ids in prompts)
        if width + self.max_new_tokens > self.cache_len:
            raise ValueError(f"a prompt of {width} tokens + {self.max_new_tokens} new ones does not fit the "
                             f"cache ({self.cache_len})")
        input_ids = torch.full((k, width), self.pad_id, dtype=torch.long)
        valid = torch.zeros((k, width), dtype=torch.bool)
        for row, ids in enumerate(prompts):
            input_ids[row, width - len(ids):] = torch.tensor(ids)
            valid[row, width - len(ids):] = True
        # From pinned memory without waiting: a plain copy to the GPU would wait for the queued steps.
        input_ids, valid, index = (self._to_device(t) for t in (input_ids, valid, torch.tensor(slots)))
        # Causal over the prompt, padding keys hidden; a pad query sees itself (no fully masked row).
        mask = torch.ones(width, width, dtype=torch.bool, device=self.device).tril() & valid[:, None, :]
        mask |= torch.eye(width, dtype=torch.bool, device=self.device)
        positions = (valid.long().cumsum(-1) - 1).masked_fill(~valid, 1)  # HF's positions for left padding
        self.cache.clear_rows(index)
        self.cache.writes = SlotWrites(index.view(k, 1, 1), torch.arange(width, device=self.device).view(1, 1, -1),
                                       decode=False)
        with graph_autocast(self.device, self.precision, self.cuda_graphs):
            out = self.model(input_ids=input_ids, attention_mask=mask[:, None], position_ids=positions,
                             past_key_values=self.cache, use_cache=True, logits_to_keep=1)
        first = out.logits[:, -1, :].argmax(dim=-1)
        self.key_mask[index] = False
        self.key_mask[index, 0, 0, :width] = valid
        self.cursor[index] = width
        self.position[index] = positions[:, -1:] + 1
        self.token[index] = first[:, None]
        self.history[index] = self.pad_id
        self.history[index, 0] = first
        self.count[index] = 1
        self.done[index] = self._is_stop(first) | (self.max_new_tokens <= 1)

    def _to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.device.type != "cuda":
            return tensor.to(self.device)
        return tensor.pin_memory().to(self.device, non_blocking=True)

    def snapshot(self) -> "Snapshot":
        """Start copying (done, count, history) to the host without waiting; two pinned buffers
        alternate, so a copy never overwrites the one the host is reading."""
        pinned = self.device.type == "cuda"
        if self.host is None:
            self.host = [[torch.empty(t.shape, dtype=t.dtype, pin_memory=pinned)
                          for t in (self.done, self.count, self.history)] for _ in range(2)]
            self.next_buffer = 0
        buffers, self.next_buffer = self.host[self.next_buffer], 1 - self.next_buffer
        for host, device in zip(buffers, (self.done, self.count, self.history)):
            host.copy_(device, non_blocking=pinned)
        event = None
        if pinned:
            event = torch.cuda.Event()
            event.record()
        return Snapshot(*buffers, event=event)


@dataclass
class Snapshot:
    done: torch.Tensor
    count: torch.Tensor
    history: torch.Tensor
    event: torch.cuda.Event | None
    occupants: list[int | None] | None = None  # the prompt in each slot when the copy was queued

    def wait(self) -> None:
        if self.event is not None:
            self.event.synchronize()


class StopStringWatch:
    """Finds the rows whose text holds a task stop string for good: the earliest one found starts at
    `cut`, and no stop string that the next tokens complete can start before it (the text is
    already `longest - 1` characters past `cut`), so `cut_at_stop_strings` cuts this text where it
    would cut the whole generation. Only rows with a new token that could end a stop string (its
    text holds a stop string's last character, or a partial UTF-8 character) are decoded."""

    def __init__(self, tokenizer, stop_strings):
        self.tokenizer, self.stop_strings = tokenizer, tuple(s for s in stop_strings if s)
        self.longest = max((len(s) for s in self.stop_strings), default=0)
        self.last_chars = {s[-1] for s in self.stop_strings}
        self.could_end_cache: dict[int, bool] = {}
        self.seen: dict[int, int] = {}  # prompt -> tokens already looked at
        self.unsettled: set[int] = set()  # prompts with a stop string found but not yet settled

    def _could_end(self, token: int) -> bool:
        if token not in self.could_end_cache:
            text = self.tokenizer.decode([token])
            self.could_end_cache[token] = "\ufffd" in text or any(c in text for c in self.last_chars)
        return self.could_end_cache[token]

    def settled(self, prompt: int, tokens: list[int]) -> bool:
        if not self.stop_strings:
            return False
        new, self.seen[prompt] = tokens[self.seen.get(prompt, 0):], len(tokens)
        if prompt not in self.unsettled and not any(self._could_end(t) for t in new):
            return False
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        found = [i for i in (text.find(s) for s in self.stop_strings) if i != -1]
        if not found:
            return False
        self.unsettled.add(prompt)
        return len(text) - self.longest + 1 >= min(found)


class RefillScheduler:
    """Host side: which prompt each slot holds, which wait, which are done (their tokens)."""

    def __init__(self, engine: RefillGenerator, encoded: list[list[int]], watch: StopStringWatch):
        self.engine, self.encoded, self.watch = engine, encoded, watch
        self.waiting = deque(sorted(range(len(encoded)), key=lambda i: len(encoded[i]), reverse=True))
        self.occupants: list[int | None] = [None] * engine.rows
        self.results: dict[int, list[int]] = {}

    def fill(self, slots: list[int]) -> None:
        """The next waiting prompts into `slots` (longest first; one prefill for all of them)."""
        slots = slots[:len(self.waiting)]
        if not slots:
            return
        prompts = [self.waiting.popleft() for _ in slots]
        for slot, prompt in zip(slots, prompts):
            self.occupants[slot] = prompt
        self.engine.prefill(slots, [self.encoded[i] for i in prompts])

    def collect(self, snapshot: Snapshot) -> list[int]:
        """Finish the prompts that `snapshot` shows done (stop token or budget) or stopped by a stop
        string; returns the slots they free."""
        freed = []
        for slot, prompt in enumerate(snapshot.occupants):
            if prompt is None or prompt in self.results:
                continue  # an empty slot, or one already finished and refilled after this copy
            tokens = snapshot.history[slot, :int(snapshot.count[slot])].tolist()
            if bool(snapshot.done[slot]) or self.watch.settled(prompt, tokens):
                self.results[prompt] = tokens
                self.occupants[slot] = None
                freed.append(slot)
        return freed


@torch.no_grad()
def generate_refill(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int,
                    device: torch.device, precision: str, stop_ids: list[int], stop_strings=(),
                    cuda_graphs: bool = True, check_every: int = 16, desc: str = "eval") -> list[str]:
    """Greedy completions in the order of `prompts`, each ended by a stop token, its budget or
    (a little after) a stop string; a finished slot takes the next waiting prompt."""
    model.eval()
    encoded = tokenizer(prompts, add_special_tokens=True)["input_ids"]
    rows = min(batch_size, len(prompts))
    engine = RefillGenerator(model, rows, max(len(ids) for ids in encoded) + max_new_tokens, max_new_tokens,
                             tokenizer.pad_token_id, stop_ids, device, precision, cuda_graphs)
    scheduler = RefillScheduler(engine, encoded, StopStringWatch(tokenizer, stop_strings))
    scheduler.fill(list(range(rows)))
    # On CUDA the host reads each copy one check late, while the GPU decodes the steps queued since.
    lag, pending = (1 if device.type == "cuda" else 0), deque()
    with tqdm(total=len(prompts), desc=desc, dynamic_ncols=True, mininterval=1.0) as bar:
        while len(scheduler.results) < len(prompts):
            for _ in range(check_every):
                engine.step()
            pending.append(engine.snapshot())
            pending[-1].occupants = list(scheduler.occupants)
            while len(pending) > lag:
                snapshot = pending.popleft()
                snapshot.wait()
                freed = scheduler.collect(snapshot)
                bar.update(len(freed))
                scheduler.fill(freed)
    model.train()
    # Padding after the stop token, as HF `generate` and the plain engine return it.
    padded = [scheduler.results[i] + [tokenizer.pad_token_id] * (max_new_tokens - len(scheduler.results[i]))
              for i in range(len(prompts))]
    return tokenizer.batch_decode(padded, skip_special_tokens=True)
