"""Shared machinery of the block-selection methods (topk, adagradselect, ist, lisa, badam).

Written once, used by every method that trains a changing subset of blocks:
- `discover_blocks`: the decoder layers of Qwen2 / Llama / Phi3 causal LMs (plain or peft-wrapped)
  as blocks; embeddings, final norm and lm_head are frozen, always trainable or blocks (a knob).
- `GradNormMeter`: per-block gradient norms from post-accumulate-grad hooks (no second pass over
  the parameters, no copy of the gradients).
- `StateResidency`: the optimizer-state policy for inactive blocks, keep | drop | offload.
- `BlockActivation`: flips `requires_grad`, clears `.grad` of inactive blocks, applies the policy.
- `BlockSelectionMethod`: the Method that wires the above; a method only says which blocks train.

Why the optimizer holds every candidate parameter: freezing before the optimizer exists drops
those blocks for good (LMFlow #726, ../shared/reference/methods.md §3.1). AdamW skips parameters
whose `.grad` is None, so an inactive block is neither updated nor decayed.
"""
from __future__ import annotations

import functools
import logging
import math
import time
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.utils.checkpoint

from bench.models.loading import causal_lm, remove_embedding_grad_hooks
from bench.errors import ConfigError
from methods.base import Method, MethodContext

log = logging.getLogger(__name__)

# The causal-LM classes whose decoder layers sit at `.model.layers` (IST's class_to_layers_map,
# ist.py:17-24, plus Phi3, which the official map lacks).
SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM", "Qwen2ForCausalLM", "Phi3ForCausalLM")
NON_LAYER_MODULES = ("embed_tokens", "norm", "lm_head")
NON_LAYER_ROLES = ("frozen", "always", "block")
POLICIES = ("keep", "drop", "offload")
ADAMW_MOMENTS = ("exp_avg", "exp_avg_sq")  # torch.optim.AdamW's per-parameter state tensors besides `step`


def blocks_for_percent(percent: float, n_blocks: int, key: str = "method.k_percent") -> int:
    """k% of n blocks, rounded half up, and never fewer than one block.

    Rounded rather than floored so that 10% of 16 layers is 2 (the paper's preliminary "10%"),
    and at least one so that small percentages on the 4-layer tiny models still train something
    (25% of 4 = 1, 10% of 4 = 1, 50% of 4 = 2).
    """
    if not 0 < percent <= 100:
        raise ConfigError(f"{key} must be in (0, 100], got {percent}")
    return min(n_blocks, max(1, math.floor(percent * n_blocks / 100 + 0.5)))


@dataclass
class Block:
    name: str
    params: list[torch.nn.Parameter]

    def numel(self) -> int:
        return sum(p.numel() for p in self.params)


@dataclass
class BlockLayout:
    """What may train: selectable `blocks` (decoder layers first, in order, then non-layer blocks)
    and `always` (trainable on every step). Everything else stays frozen."""

    blocks: list[Block]
    always: list[torch.nn.Parameter]
    n_layers: int  # the first n_layers blocks are the decoder layers, in depth order
    layers: list[torch.nn.Module] = field(repr=False, default_factory=list)

    def candidate_parameters(self) -> list[torch.nn.Parameter]:
        return [p for b in self.blocks for p in b.params] + list(self.always)


def supported_causal_lm(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers causal LM inside `model`, if block selection knows its layout."""
    inner = causal_lm(model)
    name = type(inner).__name__
    if name not in SUPPORTED_ARCHITECTURES:
        raise ValueError(f"block selection supports {', '.join(SUPPORTED_ARCHITECTURES)}; got {name}")
    return inner


def check_non_layer(non_layer: dict[str, str]) -> None:
    """`method.non_layer`: module names and roles (checked when the method is built)."""
    for name, role in non_layer.items():
        if name not in NON_LAYER_MODULES:
            raise ConfigError(f"method.non_layer.{name}: unknown module; allowed: {', '.join(NON_LAYER_MODULES)}")
        if role not in NON_LAYER_ROLES:
            raise ConfigError(f"method.non_layer.{name}={role!r}; allowed: {', '.join(NON_LAYER_ROLES)}")


def discover_blocks(model: torch.nn.Module, non_layer: dict[str, str] | None = None) -> BlockLayout:
    """One block per decoder layer, holding the layer's parameters that require grad now.

    Taking only `requires_grad` parameters makes the same code serve plain models (every weight)
    and peft-wrapped ones (only the adapters: peft has frozen the base weights). `non_layer` maps
    embed_tokens / norm / lm_head to frozen | always | block; missing names are frozen.
    """
    non_layer = dict(non_layer or {})
    check_non_layer(non_layer)
    lm = supported_causal_lm(model)
    layers = list(lm.model.layers)
    blocks = [Block(f"layers.{i}", [p for p in layer.parameters() if p.requires_grad])
              for i, layer in enumerate(layers)]
    modules = {"embed_tokens": lm.model.embed_tokens, "norm": lm.model.norm, "lm_head": lm.lm_head}
    # Tied embeddings (all three target models tie them): one tensor, so one role.
    role_of: dict[int, tuple[str, str]] = {}
    for name in NON_LAYER_MODULES:
        role = non_layer.get(name, "frozen")
        for p in modules[name].parameters():
            if id(p) in role_of and role_of[id(p)][1] != role:
                other, other_role = role_of[id(p)]
                raise ConfigError(f"{other} and {name} share one weight (tied embeddings) but method.non_layer "
                                 f"gives them {other_role!r} and {role!r}; give them the same role")
            role_of.setdefault(id(p), (name, role))
    always: list[torch.nn.Parameter] = []
    for name in NON_LAYER_MODULES:
        params = [p for p in modules[name].parameters() if p.requires_grad and role_of[id(p)][0] == name]
        role = non_layer.get(name, "frozen")
        if role == "always":
            always += params
        elif role == "block" and params:
            blocks.append(Block(name, params))
    if not any(b.params for b in blocks[:len(layers)]):
        raise ValueError(f"{type(lm).__name__}: no decoder layer has a trainable parameter")
    return BlockLayout(blocks=blocks, always=always, n_layers=len(layers), layers=layers)


class GradNormMeter:
    """Per-block gradient L2 norms, written by post-accumulate-grad hooks while `measuring`.

    Each hook overwrites its parameter's slot with ||grad||^2 (the accumulated gradient, so
    gradient accumulation is handled: the last micro-batch's write wins); the block norm is
    sqrt(sum of its slots). No gradient is copied; the numbers stay on the device until read.

    `start(keep_top=k)` streams instead, over one backward pass (under gradient accumulation the
    caller stops the meter after the first micro-batch): as each block's last gradient lands, its
    norm is read and only the k largest-norm blocks so far keep their gradients; the block that
    falls out has its gradients freed at once. A measuring backward then never holds more than
    k + 1 blocks' gradients (instead of every block's: 3.6 GiB of fp32 gradients on Llama-3.2-1B)
    at the cost of one host read per block. The kept set is exactly the top k of the returned
    norms under `torch.argsort(descending=True, stable=True)`.
    """

    def __init__(self, blocks: list[Block]):
        self.measuring = False
        self._blocks = blocks
        self._slot_block = torch.tensor([i for i, b in enumerate(blocks) for _ in b.params], dtype=torch.long)
        self._first_slot = np.cumsum([0] + [len(b.params) for b in blocks]).tolist()
        self._n_blocks = len(blocks)
        self._squares: torch.Tensor | None = None
        self._handles = []
        self.keep_top: int | None = None
        self.kept: list[int] = []
        self.saw_gradient = False  # a gradient landed since `start`
        slot = 0
        for index, block in enumerate(blocks):
            for p in block.params:
                self._handles.append(p.register_post_accumulate_grad_hook(self._hook(slot, index)))
                slot += 1

    def _hook(self, slot: int, block: int):
        # A weak reference: the hook lives on the parameter, in C++ where Python's garbage collector
        # cannot see it, so a strong one (parameter -> hook -> meter -> parameters) is a cycle that is
        # never collected and keeps every block's weights alive after the run (3.6 GiB per
        # Llama-3.2-1B job of an in-process sweep, measured).
        meter = weakref.ref(self)

        def record(p: torch.Tensor) -> None:
            self = meter()
            if self is None or not self.measuring or p.grad is None:
                return
            if self._squares is None or self._squares.device != p.grad.device:
                self._squares = torch.zeros(len(self._slot_block), device=p.grad.device)
            self._squares[slot] = torch.linalg.vector_norm(p.grad, dtype=torch.float32).square()
            self.saw_gradient = True
            if self.keep_top is not None:
                self._seen[block] += 1
                if self._seen[block] == len(self._blocks[block].params):
                    self._complete(block)
        return record

    def start(self, keep_top: int | None = None) -> None:
        self.measuring = True
        self.keep_top, self.kept, self.saw_gradient = keep_top, [], False
        self._seen = [0] * self._n_blocks
        self._norms: dict[int, float] = {}
        if self._squares is not None:
            self._squares.zero_()

    def _block_norm(self, block: int) -> float:
        if self._squares is None:
            return 0.0
        first, last = self._first_slot[block], self._first_slot[block + 1]
        return float(self._squares[first:last].sum().sqrt())  # a host read: the streaming cost

    def _complete(self, block: int) -> None:
        """Keep `block`'s gradients if it is among the top `keep_top` so far; free the loser's."""
        self._norms[block] = self._block_norm(block)
        if len(self.kept) < self.keep_top:
            self.kept.append(block)
            return
        rank = lambda b: (-self._norms[b], b)  # noqa: E731 - argsort's order: larger norm, then shallower
        worst = max(self.kept, key=rank)
        loser = worst if rank(block) < rank(worst) else block
        if loser == worst:
            self.kept[self.kept.index(worst)] = block
        for p in self._blocks[loser].params:
            p.grad = None

    def stop(self) -> torch.Tensor:
        """The block norms of the backward passes since `start` (CPU float tensor, one sync)."""
        self.measuring = False
        if self.keep_top is not None:
            for block in range(self._n_blocks):  # blocks some of whose parameters got no gradient
                if block not in self._norms:
                    self._complete(block)
            return torch.tensor([self._norms[b] for b in range(self._n_blocks)], dtype=torch.float32)
        if self._squares is None:
            return torch.zeros(self._n_blocks)
        per_block = torch.zeros(self._n_blocks, device=self._squares.device)
        per_block.index_add_(0, self._slot_block.to(self._squares.device), self._squares)
        return per_block.sqrt().cpu()

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


class StateResidency:
    """Where the optimizer state of an inactive block lives: keep | drop | offload.

    `offload` moves the state out of `optimizer.state` into `self.offloaded`. On CUDA the copies go
    to pinned host buffers on a side stream and come back the same way, so they overlap compute.
    Stream rules, each guarding one hazard:
    - the side stream waits on the main stream before any copy: the state was last written by the
      optimizer step, and fresh device buffers may reuse memory of pending main-stream kernels;
    - device tensors read or written by the side stream are `record_stream`-ed on it, so the
      caching allocator does not hand their memory out while the copy is in flight;
    - one side stream carries every copy, so a pinned buffer that is the source of an in-flight
      prefetch is only overwritten by a later eviction queued behind it (FIFO);
    - `wait()` makes the main stream wait for the prefetches; call it before `optimizer.step()`;
    - the host reads pinned buffers (`state_dict`) only after synchronizing the side stream.
    On CPU the state is moved (not copied) into the store, so tests can check where it is.
    """

    def __init__(self, policy: str, device: torch.device):
        if policy not in POLICIES:
            raise ConfigError(f"method.policy={policy!r}; allowed: {', '.join(POLICIES)}")
        self.policy, self.device = policy, device
        self.cuda = device.type == "cuda" and policy == "offload"
        self.stream = torch.cuda.Stream(device) if self.cuda else None
        self.offloaded: dict[torch.nn.Parameter, dict[str, Any]] = {}
        self._pinned: dict[torch.nn.Parameter, dict[str, torch.Tensor]] = {}  # reused host buffers

    def reserve(self, params: Iterable[torch.nn.Parameter]) -> int:
        """`offload` on CUDA: pin the host buffers of every parameter's AdamW moments now, at setup.
        Pinning is slow (each page is locked, by the driver) and, left to each block's first
        release, lands inside training steps: with a set that changes every step (AdaGradSelect's
        epoch 1) most early steps would pin new buffers, about 0.8 GB per Phi-4-mini block. Moments
        are shaped and typed like their parameter (torch's AdamW, bench/run/optim.py); a state
        of another shape or dtype still gets its buffer at its first release. Returns the bytes
        pinned in all (0 off CUDA or under another policy)."""
        if not self.cuda:
            return 0
        for p in params:
            for key in ADAMW_MOMENTS:
                self._pinned_buffer(p, key, p.shape, p.dtype)
        return sum(b.numel() * b.element_size() for s in self._pinned.values() for b in s.values())

    def release(self, optimizer: torch.optim.Optimizer, params: Iterable[torch.nn.Parameter]) -> None:
        """The blocks of `params` went inactive."""
        if self.policy == "keep":
            return
        if self.policy == "drop":
            for p in params:
                optimizer.state.pop(p, None)
            return
        if self.cuda:
            self.stream.wait_stream(torch.cuda.current_stream(self.device))
        for p in params:
            state = optimizer.state.pop(p, None)
            if state:
                self.offloaded[p] = {k: self._to_host(p, k, v) for k, v in state.items()}

    def restore(self, optimizer: torch.optim.Optimizer, params: Iterable[torch.nn.Parameter]) -> None:
        """The blocks of `params` became active: start bringing their state back."""
        if self.policy != "offload":
            return
        if self.cuda:
            self.stream.wait_stream(torch.cuda.current_stream(self.device))
        for p in params:
            state = self.offloaded.pop(p, None)
            if state is not None:
                optimizer.state[p] = {k: self._to_device(v) for k, v in state.items()}

    def wait(self) -> None:
        """Make the main stream wait for the prefetches (before the optimizer step uses them)."""
        if self.cuda:
            torch.cuda.current_stream(self.device).wait_stream(self.stream)

    def _to_host(self, p: torch.nn.Parameter, key: str, value: Any) -> Any:
        if not (torch.is_tensor(value) and value.device.type == "cuda"):
            return value  # CPU tensors (incl. non-fused `step`) and python numbers stay as they are
        buf = self._pinned_buffer(p, key, value.shape, value.dtype)
        with torch.cuda.stream(self.stream):
            buf.copy_(value, non_blocking=True)
        value.record_stream(self.stream)
        return buf

    def _pinned_buffer(self, p: torch.nn.Parameter, key: str, shape: torch.Size, dtype: torch.dtype) -> torch.Tensor:
        """The pinned host buffer kept for state `key` of `p`, made anew when missing or of another shape or dtype."""
        buffers = self._pinned.setdefault(p, {})
        buf = buffers.get(key)
        if buf is None or buf.shape != shape or buf.dtype != dtype:
            buf = buffers[key] = torch.empty(shape, dtype=dtype, pin_memory=True)
        return buf

    def _to_device(self, value: Any) -> Any:
        if not (torch.is_tensor(value) and value.is_pinned()):
            return value
        out = torch.empty(value.shape, dtype=value.dtype, device=self.device)  # main stream's pool
        with torch.cuda.stream(self.stream):
            out.copy_(value, non_blocking=True)
        out.record_stream(self.stream)
        return out

    def host_state(self) -> dict[torch.nn.Parameter, dict[str, Any]]:
        """The offloaded states, safe to read on the host (CPU copies)."""
        if self.cuda:
            self.stream.synchronize()
        return {p: {k: v.clone() if torch.is_tensor(v) else v for k, v in s.items()}
                for p, s in self.offloaded.items()}


class BlockActivation:
    """Which blocks train now, and the consequences: requires_grad, .grad, optimizer state."""

    def __init__(self, layout: BlockLayout, policy: str, device: torch.device):
        self.layout = layout
        self.residency = StateResidency(policy, device)
        self.optimizer: torch.optim.Optimizer | None = None
        self.active: frozenset[int] = frozenset()  # blocks whose optimizer state is resident
        for p in layout.always:
            p.requires_grad_(True)
        self.enable_grads(())

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        """The optimizer whose state the policy moves; `offload` on CUDA pins its host buffers now."""
        self.optimizer = optimizer
        start = time.perf_counter()
        pinned = self.residency.reserve([p for block in self.layout.blocks for p in block.params])
        if pinned:
            log.info("offload: pinned %.1f GiB of host memory for optimizer state in %.1f s",
                     pinned / 2**30, time.perf_counter() - start)

    def enable_grads(self, indices: Iterable[int]) -> None:
        """requires_grad on exactly the blocks `indices` (e.g. all, for a measuring backward)."""
        chosen = set(indices)
        for i, block in enumerate(self.layout.blocks):
            for p in block.params:
                p.requires_grad_(i in chosen)
                if i not in chosen:
                    p.grad = None

    def activate(self, indices: Iterable[int]) -> None:
        """Make exactly `indices` the trained blocks of this step (grads of others dropped)."""
        chosen = frozenset(indices)
        if not all(0 <= i < len(self.layout.blocks) for i in chosen):
            raise IndexError(f"block index out of range 0..{len(self.layout.blocks) - 1}: {sorted(chosen)}")
        self.enable_grads(chosen)
        if self.optimizer is not None:
            blocks = self.layout.blocks
            self.residency.release(self.optimizer, [p for i in self.active - chosen for p in blocks[i].params])
            self.residency.restore(self.optimizer, [p for i in chosen - self.active for p in blocks[i].params])
        self.active = chosen

    def reset_optimizer_state(self) -> None:
        """Forget every optimizer state (BAdam's switch, block_optim.py:435)."""
        self.optimizer.state.clear()
        self.residency.offloaded.clear()

    def state_dict(self) -> dict[str, Any]:
        index = {id(p): (b, j) for b, block in enumerate(self.layout.blocks) for j, p in enumerate(block.params)}
        return {"active": sorted(self.active),
                "offloaded": {index[id(p)]: s for p, s in self.residency.host_state().items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Call after `attach_optimizer` and after the optimizer's own state is loaded."""
        blocks = self.layout.blocks
        self.residency.offloaded = {blocks[b].params[j]: dict(s) for (b, j), s in state["offloaded"].items()}
        if self.residency.cuda:  # back to pinned buffers, as `_to_host` would have left them
            self.residency.offloaded = {p: {k: v.pin_memory() if torch.is_tensor(v) else v for k, v in s.items()}
                                        for p, s in self.residency.offloaded.items()}
        self.enable_grads(state["active"])
        self.active = frozenset(state["active"])


def checkpoint_layers(layers: list[torch.nn.Module], on: bool) -> None:
    """Switch non-reentrant activation checkpointing of transformers decoder layers on or off (the
    attribute pair `gradient_checkpointing_enable` sets, without its model-wide side effects)."""
    for layer in layers:
        if not hasattr(layer, "gradient_checkpointing"):
            raise TypeError(f"{type(layer).__name__} is not a transformers GradientCheckpointingLayer")
        layer.gradient_checkpointing = on
        layer._gradient_checkpointing_func = functools.partial(torch.utils.checkpoint.checkpoint, use_reentrant=False)


MEASURE = None  # `choose` returns this on a measuring step (only methods that declare GradNormTopK)


@dataclass(frozen=True)
class GradNormTopK:
    """The one declaration that switches measuring on: "on a step where `choose` returns MEASURE,
    measure every block's gradient norm with one backward and train the k% blocks with the
    largest norms" (ties go to the shallower block: `torch.argsort(descending=True, stable=True)`).

    The measuring backward streams (GradNormMeter.start(keep_top=k)): at most k + 1 blocks hold a
    gradient at any moment. Under gradient accumulation the blocks are ranked by the FIRST
    micro-batch's gradient norms (our choice): the choice is final when the second micro-batch's
    forward starts, so the remaining micro-batches backpropagate only into the k chosen blocks,
    which end the step with the gradient of the whole window, exactly as on an ordinary step.
    Ranking by the summed gradient instead would hold every block's gradient until the last
    micro-batch (a dropped block would have lost a micro-batch), the peak streaming avoids.
    `checkpointing`: the measuring backward recomputes the decoder layers' activations (the step
    backpropagates through every layer, so without it its activations would set the run's peak).
    """

    k_percent: float
    checkpointing: bool = True

    def __post_init__(self):
        blocks_for_percent(self.k_percent, 1)  # the knob's range, checked when the method is built


class BlockSelectionMethod(Method):
    """A Method that trains a chosen set of blocks each step. Subclasses implement `choose`; counts,
    scores and RNGs are theirs. A method that measures passes `measure=GradNormTopK(...)`.

    Per step: `choose(step)` at step start -> either the set (activated before forward, so the
    offloaded states prefetch during forward/backward) or MEASURE (every block gets grads, the
    hooks stream the norms, the top k are chosen once the first micro-batch's backward is done).
    """

    def __init__(self, policy: str, non_layer: dict[str, str] | None = None, measure: GradNormTopK | None = None):
        if policy not in POLICIES:
            raise ConfigError(f"method.policy={policy!r}; allowed: {', '.join(POLICIES)}")
        self.policy = policy
        self.measure = measure
        self.non_layer = dict(non_layer or {})
        check_non_layer(self.non_layer)
        self.meter: GradNormMeter | None = None
        self.last_norms: torch.Tensor | None = None  # the latest measurement's block norms
        self._measuring = False  # this step measured
        self._measure_pending = False  # measuring, and the choice is not made yet
        self._step = 0
        self._chosen: list[int] = []

    # --- what subclasses implement -------------------------------------------------------------
    def choose(self, step: int) -> list[int] | None:
        raise NotImplementedError

    def chosen(self, step: int, blocks: list[int]) -> None:
        """Called once the step's blocks are final (e.g. to count updates)."""

    # --- the Method interface ------------------------------------------------------------------
    def prepare(self, model: torch.nn.Module, ctx: MethodContext) -> torch.nn.Module:
        model = super().prepare(model, ctx)
        self.layout = discover_blocks(model, self.non_layer)
        candidates = {id(p) for p in self.layout.candidate_parameters()}
        for p in model.parameters():
            if id(p) not in candidates:
                p.requires_grad_(False)
        if self.measure is not None:  # hooks first: torch registers them only on grad-requiring tensors
            self._prepare_measurement(model)
        self.activation = BlockActivation(self.layout, self.policy, ctx.device)
        if ctx.gradient_checkpointing:
            remove_embedding_grad_hooks(model)  # backward stops at the lowest active block
        return model

    def _prepare_measurement(self, model: torch.nn.Module) -> None:
        """Check the declaration once, before any step, and install the meter and the hook that
        ends a measurement at the second micro-batch's forward."""
        if not isinstance(self.measure, GradNormTopK):
            raise TypeError(f"{type(self).__name__}: measure must be a methods.blocks.GradNormTopK, "
                            f"got {type(self.measure).__name__}")
        if type(self).choose_from_norms is not BlockSelectionMethod.choose_from_norms:
            raise TypeError(f"{type(self).__name__} overrides choose_from_norms: GradNormTopK streams the "
                            "top k by norm and keeps no other gradient, so the choice is fixed")
        self.k = blocks_for_percent(self.measure.k_percent, self.n_blocks)
        if self.measure.checkpointing and not self.ctx.gradient_checkpointing:
            checkpoint_layers(self.layout.layers, False)  # raises now if a layer cannot checkpoint
        self.meter = GradNormMeter(self.layout.blocks)
        method = weakref.ref(self)  # the model must not keep the method alive (see GradNormMeter._hook)

        def end_measurement_at_next_forward(module, args):
            self = method()
            if self is not None and self._measure_pending and self.meter.saw_gradient:
                self._finish_measurement(self._step)
        # On the decoder, not the causal LM: the chunked loss (train.fast_path=chunked_ce) runs the
        # decoder without the causal LM's forward (bench/loss.py chunked_lm_loss).
        supported_causal_lm(model).model.register_forward_pre_hook(end_measurement_at_next_forward)

    def choose_from_norms(self, step: int, norms: torch.Tensor) -> list[int]:
        """The top k blocks by norm (GradNormTopK's rule; the streaming meter kept exactly these)."""
        self.last_norms = norms
        return torch.argsort(norms, descending=True, stable=True)[: self.k].tolist()

    @property
    def n_blocks(self) -> int:
        return len(self.layout.blocks)

    def trainable_parameters(self, model: torch.nn.Module) -> list[torch.nn.Parameter]:
        return self.layout.candidate_parameters()

    def attach_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        super().attach_optimizer(optimizer)
        self.activation.attach(optimizer)

    def on_step_start(self, step: int, model: torch.nn.Module) -> None:
        self._step = step
        choice = self.choose(step)
        self._measuring = self._measure_pending = choice is MEASURE
        if not self._measuring:
            self._set(step, choice)
            return
        if self.meter is None:
            raise RuntimeError(f"{type(self).__name__}.choose returned MEASURE but the class declares no "
                               "measurement: pass measure=GradNormTopK(...) to BlockSelectionMethod.__init__")
        self.activation.enable_grads(range(self.n_blocks))
        self._checkpoint_measuring(True)
        self.meter.start(keep_top=self.k)

    def _checkpoint_measuring(self, on: bool) -> None:
        if self.measure.checkpointing and not self.ctx.gradient_checkpointing:
            checkpoint_layers(self.layout.layers, on)

    def _finish_measurement(self, step: int) -> None:
        self._measure_pending = False
        self._checkpoint_measuring(False)
        choice = self.choose_from_norms(step, self.meter.stop())
        if sorted(choice) != sorted(self.meter.kept):
            raise RuntimeError(f"{type(self).__name__}: chose blocks {sorted(choice)} but the streaming "
                               f"measurement kept the gradients of {sorted(self.meter.kept)}")
        self._set(step, choice)

    def after_backward(self, step: int, model: torch.nn.Module) -> None:
        if self._measure_pending:  # one micro-batch: no second forward ended the measurement
            self._finish_measurement(step)
        self.activation.residency.wait()

    def _set(self, step: int, blocks: list[int]) -> None:
        self._chosen = sorted(int(b) for b in blocks)
        self.activation.activate(self._chosen)
        self.chosen(step, self._chosen)

    def step_metrics(self) -> dict[str, Any]:
        # active_block_ids: the selection trace (block indices, layers first in depth order)
        return {"active_blocks": len(self._chosen), "active_block_ids": list(self._chosen),
                "measured": int(self._measuring)}

    def state_dict(self) -> dict[str, Any]:
        return {"activation": self.activation.state_dict(), "chosen": list(self._chosen)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.activation.load_state_dict(state["activation"])
        self._chosen = list(state["chosen"])


def numpy_rng(seed: int, salt: int) -> np.random.Generator:
    """A method's own generator: its draws never shift the data order or another method's."""
    return np.random.default_rng([seed, salt])
