"""methods/blocks.py: block discovery, gradient-norm hooks, activation, state policies, backward stop."""
from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model

from bench.models.loading import build_tiny, load_tokenizer, remove_embedding_grad_hooks
from block_harness import CPU, clone_state, states_equal
from conftest import compose_config
from methods.blocks import BlockActivation, GradNormMeter, blocks_for_percent, discover_blocks


def tiny_model(arch: str = "llama", layers: int = 4, seed: int = 0) -> torch.nn.Module:
    cfg = compose_config(f"model=tiny-{arch}", f"model.dims.num_hidden_layers={layers}")
    torch.manual_seed(seed)
    return build_tiny(cfg.model, load_tokenizer(cfg.model))


def batch(seed: int = 0, n: int = 4, length: int = 12) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, 20, (n, length), generator=gen)
    return {"input_ids": ids, "labels": ids.clone()}


@pytest.mark.parametrize("arch", ["llama", "qwen2", "phi3"])
def test_discovers_one_block_per_decoder_layer(arch):
    model = tiny_model(arch)
    layout = discover_blocks(model, {"norm": "always"})
    assert layout.n_layers == len(layout.blocks) == 4
    for i, block in enumerate(layout.blocks):
        assert block.name == f"layers.{i}"
        assert [id(p) for p in block.params] == [id(p) for p in model.model.layers[i].parameters()]
    assert [id(p) for p in layout.always] == [id(model.model.norm.weight)]


def test_non_layer_modules_can_be_blocks_and_tied_weights_need_one_role():
    model = tiny_model()
    layout = discover_blocks(model, {"embed_tokens": "block", "lm_head": "block", "norm": "block"})
    assert [b.name for b in layout.blocks[4:]] == ["embed_tokens", "norm"]  # lm_head is the tied embedding
    assert layout.blocks[4].params[0] is model.lm_head.weight
    with pytest.raises(ValueError, match="share one weight.*'always'.*'frozen'"):
        discover_blocks(model, {"embed_tokens": "always", "lm_head": "frozen"})
    with pytest.raises(ValueError, match=r"method.non_layer.norm='sometimes'; allowed: frozen, always, block"):
        discover_blocks(model, {"norm": "sometimes"})


@pytest.mark.parametrize("arch", ["llama", "phi3"])
def test_peft_wrapped_blocks_hold_only_the_adapters(arch):
    model = get_peft_model(tiny_model(arch), LoraConfig(r=4, target_modules=["q_proj", "v_proj", "qkv_proj"]))
    layout = discover_blocks(model, {})
    assert len(layout.blocks) == 4 and layout.always == []
    for i, block in enumerate(layout.blocks):
        names = {n for n, p in model.base_model.model.model.layers[i].named_parameters() if p.requires_grad}
        assert names and all("lora_" in n for n in names)
        assert len(block.params) == len(names)


def test_unsupported_architecture_is_named():
    with pytest.raises(ValueError, match="supports LlamaForCausalLM, Qwen2ForCausalLM, Phi3ForCausalLM; got Linear"):
        discover_blocks(torch.nn.Linear(2, 2))


def test_blocks_for_percent_rounds_half_up_with_at_least_one():
    assert [blocks_for_percent(k, 4) for k in (1, 10, 25, 37.5, 50, 100)] == [1, 1, 1, 2, 2, 4]
    assert [blocks_for_percent(10, n) for n in (16, 24, 32)] == [2, 2, 3]
    with pytest.raises(ValueError, match=r"method.k_percent must be in \(0, 100\], got 0"):
        blocks_for_percent(0, 4)


def test_grad_norm_meter_matches_the_norms_of_the_accumulated_gradients():
    model = tiny_model()
    layout = discover_blocks(model, {})
    meter = GradNormMeter(layout.blocks)
    meter.start()
    for seed in (0, 1):  # two micro-batches: the norm is of the accumulated gradient
        model(**batch(seed)).loss.backward()
    norms = meter.stop()
    expected = torch.stack([torch.sqrt(sum(p.grad.pow(2).sum() for p in b.params)) for b in layout.blocks])
    torch.testing.assert_close(norms, expected, rtol=1e-5, atol=0)
    model.zero_grad(set_to_none=True)
    model(**batch(2)).loss.backward()  # not measuring: the numbers stay as they were
    meter.start()
    assert torch.equal(meter.stop(), torch.zeros(4))


CUDA_ONLY = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA_ONLY)])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_streaming_meter_keeps_only_the_top_k_gradients_and_never_holds_more_than_k_plus_one(k, device):
    model = tiny_model(layers=6).to(device)
    layout = discover_blocks(model, {})
    reference = {id(p): None for b in layout.blocks for p in b.params}
    model(**{key: v.to(device) for key, v in batch(3).items()}).loss.backward()
    for b in layout.blocks:
        for p in b.params:
            reference[id(p)] = p.grad.clone()
    expected_norms = torch.stack([torch.sqrt(sum(p.grad.pow(2).sum() for p in b.params)) for b in layout.blocks])
    model.zero_grad(set_to_none=True)

    meter = GradNormMeter(layout.blocks)
    holding = []  # after every gradient lands: how many blocks hold any gradient

    def count(_):
        holding.append(sum(any(p.grad is not None for p in b.params) for b in layout.blocks))
    for b in layout.blocks:  # registered after the meter's hooks, so they run after them
        for p in b.params:
            p.register_post_accumulate_grad_hook(count)
    meter.start(keep_top=k)
    model(**{key: v.to(device) for key, v in batch(3).items()}).loss.backward()
    norms = meter.stop()
    torch.testing.assert_close(norms, expected_norms.cpu(), rtol=1e-5, atol=0)
    top = torch.argsort(norms, descending=True, stable=True)[:k].tolist()
    assert sorted(meter.kept) == sorted(top)
    assert max(holding) <= k + 1 and holding[-1] == k
    for i, b in enumerate(layout.blocks):
        for p in b.params:
            if i in top:
                assert torch.equal(p.grad, reference[id(p)])  # kept gradients are untouched
            else:
                assert p.grad is None


def make_activation(policy: str):
    model = tiny_model()
    layout = discover_blocks(model, {})
    activation = BlockActivation(layout, policy, CPU)
    optimizer = torch.optim.AdamW(layout.candidate_parameters(), lr=1e-2)
    activation.optimizer = optimizer
    return model, layout, activation, optimizer


def step(model, optimizer, seed=0):
    model(**batch(seed)).loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


@pytest.mark.parametrize("policy", ["keep", "drop", "offload"])
def test_activation_flips_grads_and_applies_the_state_policy(policy):
    model, layout, activation, optimizer = make_activation(policy)
    assert not any(p.requires_grad for b in layout.blocks for p in b.params)
    activation.activate([0, 2])
    step(model, optimizer)
    left = {p: clone_state(optimizer.state[p]) for p in layout.blocks[0].params}
    activation.activate([1, 2])
    assert all(p.requires_grad for i in (1, 2) for p in layout.blocks[i].params)
    assert not any(p.requires_grad or p.grad is not None for i in (0, 3) for p in layout.blocks[i].params)
    for p in layout.blocks[0].params:
        resident = p in optimizer.state
        assert resident == (policy == "keep")
        assert (p in activation.residency.offloaded) == (policy == "offload")
        if policy == "offload":
            assert states_equal(activation.residency.offloaded[p], left[p])
    activation.activate([0])
    for p in layout.blocks[0].params:
        if policy == "drop":
            assert p not in optimizer.state
        else:  # keep: never left; offload: the round trip is bit-identical
            assert states_equal(optimizer.state[p], left[p])
    assert activation.residency.offloaded.keys() == ({p for p in layout.blocks[2].params} if policy == "offload" else set())


def test_activation_state_dict_round_trip_keeps_offloaded_states():
    model, layout, activation, optimizer = make_activation("offload")
    activation.activate([1])
    step(model, optimizer)
    activation.activate([3])
    saved = activation.state_dict()
    model2, layout2, activation2, optimizer2 = make_activation("offload")
    activation2.load_state_dict(saved)
    assert activation2.active == frozenset({3})
    assert [p.requires_grad for p in layout2.blocks[3].params] == [True] * len(layout2.blocks[3].params)
    for p, p2 in zip(layout.blocks[1].params, layout2.blocks[1].params):
        assert states_equal(activation2.residency.offloaded[p2], activation.residency.offloaded[p])


def test_bad_policy_is_named():
    with pytest.raises(ValueError, match="method.policy='cpu'; allowed: keep, drop, offload"):
        BlockActivation(discover_blocks(tiny_model(), {}), "cpu", CPU)


def test_backward_stops_at_the_lowest_active_block_under_gradient_checkpointing():
    model = tiny_model()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    seen = {}
    model.model.embed_tokens.register_forward_hook(lambda m, i, o: seen.__setitem__("embed", o.requires_grad))
    for i, layer in enumerate(model.model.layers):
        layer.register_forward_hook(lambda m, i_, o, i=i: seen.__setitem__(i, (o[0] if isinstance(o, tuple) else o).requires_grad))
    layout = discover_blocks(model, {})
    model.requires_grad_(False)  # embeddings, norm and head frozen (BlockSelectionMethod.prepare does this)
    activation = BlockActivation(layout, "keep", CPU)
    activation.activate([2])
    model(**batch()).loss.backward()
    assert seen["embed"] is True  # transformers forces it: the test below can fail
    remove_embedding_grad_hooks(model)
    model.zero_grad(set_to_none=True)
    model(**batch()).loss.backward()
    assert seen == {"embed": False, 0: False, 1: False, 2: True, 3: True}
    assert all(p.grad is not None for p in layout.blocks[2].params)
    assert all(p.grad is None for i in (0, 1, 3) for p in layout.blocks[i].params)


def test_grad_norm_meter_does_not_keep_the_model_alive():
    """Hooks live on the parameters in C++, out of the garbage collector's sight: the meter they
    call must not be kept alive by them, or a dropped model's weights never free."""
    import gc
    import weakref

    model = tiny_model()
    meter = GradNormMeter(discover_blocks(model, {}).blocks)
    meter.start(keep_top=1)
    model(**batch(0)).loss.backward()
    meter.stop()
    weight = weakref.ref(model.model.layers[0].mlp.up_proj.weight)
    del model, meter
    gc.collect()
    assert weight() is None


@CUDA_ONLY
def test_offload_on_cuda_trains_exactly_like_keep():
    """The pinned-memory, side-stream round trip of optimizer state changes nothing: a run whose
    blocks change every step ends bit-identical to one that keeps every state on the GPU."""
    cuda = torch.device("cuda")
    trained = {}
    for policy in ("keep", "offload"):
        model = tiny_model().to(cuda)
        layout = discover_blocks(model, {})
        activation = BlockActivation(layout, policy, cuda)
        optimizer = torch.optim.AdamW(layout.candidate_parameters(), lr=1e-2, fused=True)
        activation.attach(optimizer)  # offload: every block's moments get pinned buffers here
        reserved = {id(p): {k: b.data_ptr() for k, b in bufs.items()} for p, bufs in activation.residency._pinned.items()}
        assert (len(reserved) == sum(len(b.params) for b in layout.blocks)) == (policy == "offload")
        for i, chosen in enumerate([[0, 1], [2, 3], [1, 2], [0, 3], [0, 1], [3]]):
            activation.activate(chosen)
            model(**{k: v.to(cuda) for k, v in batch(i).items()}).loss.backward()
            activation.residency.wait()  # as BlockSelectionMethod.after_backward does
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        if policy == "offload":
            stored = [v for s in activation.residency.host_state().values() for v in s.values() if torch.is_tensor(v)]
            assert stored and all(v.device.type == "cpu" for v in stored)
            # the releases wrote the moments into the buffers pinned at attach, none pinned later
            offloaded = activation.residency.offloaded
            assert all(s[k].data_ptr() == reserved[id(p)][k] for p, s in offloaded.items() for k in ("exp_avg", "exp_avg_sq"))
        trained[policy] = [p.detach().clone() for p in model.parameters()]
    for a, b in zip(*trained.values()):
        assert torch.equal(a, b)
