"""Tests for probes.training.myopic on tiny random GPT-2, GPT-NeoX and Llama (grouped-query) models."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    GPT2Model,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
)

from probes.errors import UsageError
from probes.training.myopic import MODES, UnsupportedModelError, bigram, gradient_mode, myopic

VOCAB = 50
BATCH = 2
SEQ = 8
ARCHS = ("gpt2", "neox", "llama")

# Per architecture: the attention class name and the attention projections whose outputs hold q/k/v.
ATTENTION = {"gpt2": "GPT2Attention", "neox": "GPTNeoXAttention", "llama": "LlamaAttention"}
PROJECTIONS = {"gpt2": ("c_attn",), "neox": ("query_key_value",), "llama": ("q_proj", "k_proj", "v_proj")}


def make_model(
    arch: str, dtype: torch.dtype = torch.float64, attn: str = "eager", dropout: float = 0.0, seed: int = 0
) -> nn.Module:
    torch.manual_seed(seed)
    model: nn.Module
    if arch == "gpt2":
        config = GPT2Config(
            vocab_size=VOCAB,
            n_positions=32,
            n_embd=32,
            n_layer=2,
            n_head=4,
            resid_pdrop=dropout,
            embd_pdrop=dropout,
            attn_pdrop=dropout,
            attn_implementation=attn,
        )
        model = GPT2LMHeadModel(config)
    elif arch == "neox":
        config = GPTNeoXConfig(
            vocab_size=VOCAB,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=32,
            hidden_dropout=dropout,
            attention_dropout=dropout,
            attn_implementation=attn,
        )
        model = GPTNeoXForCausalLM(config)
    else:
        config = LlamaConfig(
            vocab_size=VOCAB,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=32,
            attention_dropout=dropout,
            attn_implementation=attn,
        )
        model = LlamaForCausalLM(config)
    return model.to(dtype)


def make_batch(padded: bool = True, left: bool = False, seed: int = 1) -> tuple[Tensor, Tensor, Tensor]:
    """Token ids, a 2D attention mask (row 1 padded by 2 if ``padded``) and random targets.

    Left padding leaves query rows with every key masked; the float64 models (softmax in float32) turn those
    rows into NaN in vanilla transformers too, so the float64 gradient tests pad on the right.
    """
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (BATCH, SEQ), generator=gen)
    targets = torch.randint(0, VOCAB, (BATCH, SEQ), generator=gen)
    mask = torch.ones(BATCH, SEQ, dtype=torch.long)
    if padded:
        mask[1, slice(0, 2) if left else slice(-2, None)] = 0
    return ids, mask, targets


def position_losses(logits: Tensor, targets: Tensor, mask: Tensor) -> Tensor:
    """(batch, seq) cross-entropy, zero at padded positions."""
    losses = F.cross_entropy(logits.flatten(0, 1).float().to(logits.dtype), targets.flatten(), reduction="none")
    return losses.view_as(targets) * mask.to(logits.dtype)


def grads(model: nn.Module) -> dict[str, Tensor]:
    return {
        name: (p.grad.clone() if p.grad is not None else torch.zeros_like(p)) for name, p in model.named_parameters()
    }


def one_pass_grads(model: nn.Module, mode: str, ids: Tensor, mask: Tensor, targets: Tensor) -> dict[str, Tensor]:
    model.zero_grad(set_to_none=True)
    with gradient_mode(model, mode):
        logits = model(input_ids=ids, attention_mask=mask).logits
        position_losses(logits, targets, mask).sum().backward()
    return grads(model)


def modules_named(model: nn.Module, class_name: str) -> list[nn.Module]:
    return [m for m in model.modules() if type(m).__name__ == class_name]


def mixed(x: Tensor, t: int) -> Tensor:
    """Positions < t detached, positions ≥ t live (same values)."""
    return torch.cat([x[:, :t].detach(), x[:, t:]], dim=1)


@contextmanager
def past_detached(model: nn.Module, arch: str, variant: str, t: int) -> Iterator[None]:
    """Detach, in the vanilla model, what the myopic variant detaches for the loss at position t.

    "paper": every attention layer's input is detached at positions < t, so past keys/values are the projection
    of a detached input with live weights (and the query/key/value at t stay live).
    "strict": every q/k/v projection output is detached at positions < t, so past keys/values carry no gradient
    at all. (Past queries are detached too; they do not influence position t.)
    """
    handles = []
    if variant == "paper":

        def pre_hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            if args:
                return (mixed(args[0], t), *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": mixed(kwargs["hidden_states"], t)}

        for attention in modules_named(model, ATTENTION[arch]):
            handles.append(attention.register_forward_pre_hook(pre_hook, with_kwargs=True))
    else:

        def hook(module: nn.Module, args: tuple[Any, ...], output: Tensor) -> Tensor:
            return mixed(output, t)

        for attention in modules_named(model, ATTENTION[arch]):
            for name in PROJECTIONS[arch]:
                handles.append(getattr(attention, name).register_forward_hook(hook))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def brute_force_grads(
    model: nn.Module, arch: str, variant: str, loss_fn: Callable[[], Tensor], seq_len: int
) -> dict[str, Tensor]:
    """Σ_t ∂L_t/∂θ with one vanilla forward/backward per position t and the past cut off by hooks."""
    total = {name: torch.zeros_like(p) for name, p in model.named_parameters()}
    for t in range(seq_len):
        model.zero_grad(set_to_none=True)
        with past_detached(model, arch, variant, t):
            loss_fn()[:, t].sum().backward()
        for name, g in grads(model).items():
            total[name] += g
    return total


def assert_grads_close(actual: dict[str, Tensor], expected: dict[str, Tensor], rtol: float = 1e-4) -> None:
    assert actual.keys() == expected.keys()
    for name in actual:
        scale = expected[name].abs().max().item()
        torch.testing.assert_close(actual[name], expected[name], rtol=rtol, atol=rtol * scale + 1e-12, msg=name)


def max_relative_difference(a: dict[str, Tensor], b: dict[str, Tensor]) -> float:
    num = sum(float((a[n] - b[n]).norm() ** 2) for n in a) ** 0.5
    den = sum(float(b[n].norm() ** 2) for n in b) ** 0.5
    return num / den


# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("variant", ["paper", "strict"])
@pytest.mark.parametrize("arch", ARCHS)
def test_one_pass_gradient_equals_brute_force(arch: str, variant: str, attn: str) -> None:
    model = make_model(arch, attn=attn)
    ids, mask, targets = make_batch(padded=True)

    def loss_fn() -> Tensor:
        return position_losses(model(input_ids=ids, attention_mask=mask).logits, targets, mask)

    expected = brute_force_grads(model, arch, variant, loss_fn, SEQ)
    actual = one_pass_grads(model, "myopic" if variant == "paper" else "strict-myopic", ids, mask, targets)
    assert_grads_close(actual, expected)


@pytest.mark.parametrize("padded", [False, True])
def test_gpt2_fused_kernel_and_eager_path_both_equal_brute_force(monkeypatch: pytest.MonkeyPatch, padded: bool) -> None:
    """GPT-2's myopic attention runs through the fused kernel (causal-only masks take the kernel's causal mode,
    padded ones pass the mask); the eager path it replaced still serves dropout and is checked the same way."""
    module = sys.modules["probes.training.myopic"]
    fused_calls: list[int] = []
    original = module._gpt2_myopic_fused
    monkeypatch.setattr(module, "_gpt2_myopic_fused", lambda *args: fused_calls.append(1) or original(*args))
    model = make_model("gpt2")
    ids, mask, targets = make_batch(padded=padded)

    def loss_fn() -> Tensor:
        return position_losses(model(input_ids=ids, attention_mask=mask).logits, targets, mask)

    expected = brute_force_grads(model, "gpt2", "paper", loss_fn, SEQ)
    assert_grads_close(one_pass_grads(model, "myopic", ids, mask, targets), expected)
    assert len(fused_calls) == 2  # one per layer
    monkeypatch.setattr(module, "_fusable", lambda *args: False)
    assert_grads_close(one_pass_grads(model, "myopic", ids, mask, targets), expected)
    assert len(fused_calls) == 2


def test_attention_with_log_sum_exp_matches_the_cpu_kernel() -> None:
    """The fused path's fallback off the CPU (plain softmax attention and its log-sum-exp) equals the kernel."""
    module = sys.modules["probes.training.myopic"]
    gen = torch.Generator().manual_seed(0)
    query, key, value = (torch.randn(2, 4, SEQ, 8, generator=gen, dtype=torch.float64) for _ in range(3))
    causal = module._model_mask(None, SEQ, torch.float64, torch.device("cpu"), "paper")
    padded = causal.clone()
    padded[2:, -2:] = torch.finfo(torch.float64).min  # the last two keys masked for the queries that see them
    for mask in (causal, padded):
        expected = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            query, key, value, 0.0, False, attn_mask=mask, scale=0.3
        )
        for actual, wanted in zip(
            module._attention_with_log_sum_exp(query, key, value, mask, 0.3), expected, strict=True
        ):
            torch.testing.assert_close(actual, wanted, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("variant", ["paper", "strict"])
def test_bare_base_model_through_inputs_embeds(variant: str) -> None:
    """A synthetic-task model: continuous inputs → GPT2Model (inputs_embeds) → linear readout."""
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=VOCAB, n_positions=32, n_embd=32, n_layer=2, n_head=4)
    config.resid_pdrop = config.embd_pdrop = config.attn_pdrop = 0.0
    body = GPT2Model(config).double()
    model = nn.ModuleDict({"inp": nn.Linear(3, 32), "body": body, "out": nn.Linear(32, 1)}).double()
    x = torch.randn(BATCH, SEQ, 3, dtype=torch.float64)
    y = torch.randn(BATCH, SEQ, 1, dtype=torch.float64)

    def loss_fn() -> Tensor:
        hidden = model["body"](inputs_embeds=model["inp"](x)).last_hidden_state
        return ((model["out"](hidden) - y) ** 2).squeeze(-1)

    expected = brute_force_grads(model, "gpt2", variant, loss_fn, SEQ)
    model.zero_grad(set_to_none=True)
    with myopic(model, strict=variant == "strict"):
        loss_fn().sum().backward()
    assert_grads_close(grads(model), expected)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("arch", ARCHS)
def test_forward_values_unchanged(arch: str, attn: str) -> None:
    model = make_model(arch, dtype=torch.float32, attn=attn)
    for padded, left in ((False, False), (True, False), (True, True)):
        ids, mask, _ = make_batch(padded=padded, left=left)
        with torch.no_grad():
            vanilla = model(input_ids=ids, attention_mask=mask).logits
        # Left-padded query rows attend to nothing; their outputs differ between eager and sdpa even in vanilla.
        real = mask.bool()
        for strict in (False, True):
            with myopic(model, strict=strict):
                out = model(input_ids=ids, attention_mask=mask).logits  # with autograd on: the myopic path
            torch.testing.assert_close(out[real], vanilla[real], rtol=0, atol=1e-5)
            with myopic(model, strict=strict), torch.no_grad():
                out = model(input_ids=ids, attention_mask=mask).logits
            torch.testing.assert_close(out[real], vanilla[real], rtol=0, atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_exit_restores_vanilla(arch: str) -> None:
    model = make_model(arch, attn="sdpa")
    ids, mask, targets = make_batch()
    vanilla = one_pass_grads(model, "vanilla", ids, mask, targets)
    attention = modules_named(model, ATTENTION[arch])
    for mode in MODES:
        one_pass_grads(model, mode, ids, mask, targets)
        assert all("forward" not in m.__dict__ for m in attention)
        assert model.config._attn_implementation == "sdpa"
        assert_grads_close(one_pass_grads(model, "vanilla", ids, mask, targets), vanilla, rtol=1e-10)

    with pytest.raises(RuntimeError, match="boom"), myopic(model):
        raise RuntimeError("boom")
    assert all("forward" not in m.__dict__ for m in attention)
    assert model.config._attn_implementation == "sdpa"


@pytest.mark.parametrize("arch", ARCHS)
def test_variants_differ(arch: str) -> None:
    model = make_model(arch)
    ids, mask, targets = make_batch()
    vanilla = one_pass_grads(model, "vanilla", ids, mask, targets)
    paper = one_pass_grads(model, "myopic", ids, mask, targets)
    strict = one_pass_grads(model, "strict-myopic", ids, mask, targets)
    assert max_relative_difference(paper, vanilla) > 1e-3
    assert max_relative_difference(strict, vanilla) > 1e-3
    assert max_relative_difference(strict, paper) > 1e-3


def first_layer(model: nn.Module, arch: str) -> nn.Module:
    base = {"gpt2": "transformer", "neox": "gpt_neox", "llama": "model"}[arch]
    layers = getattr(getattr(model, base), "h" if arch == "gpt2" else "layers")
    return layers[0]


@pytest.mark.parametrize("mode", ["myopic", "strict-myopic", "bigram"])
@pytest.mark.parametrize("arch", ARCHS)
def test_no_gradient_to_past_hidden_states(arch: str, mode: str) -> None:
    model = make_model(arch)
    ids, mask, targets = make_batch(padded=False)
    t = SEQ - 2
    captured: list[Tensor] = []
    handle = first_layer(model, arch).register_forward_hook(
        lambda module, args, output: captured.append(output[0] if isinstance(output, tuple) else output)
    )
    embeds = model.get_input_embeddings()(ids).detach().requires_grad_(True)
    try:
        for current in ("vanilla", mode):
            captured.clear()
            with gradient_mode(model, current):
                logits = model(inputs_embeds=embeds, attention_mask=mask).logits
            loss_t = position_losses(logits, targets, mask)[:, t].sum()
            g_embeds, g_hidden = torch.autograd.grad(loss_t, [embeds, captured[0]])
            for g in (g_embeds, g_hidden):
                past = g[:, :t].abs().max().item()
                assert g[:, t].abs().max().item() > 0
                if current == "vanilla":
                    assert past > 0
                else:
                    assert past == 0
    finally:
        handle.remove()


@pytest.mark.parametrize("arch", ARCHS)
def test_dropout_forward_matches_vanilla(arch: str) -> None:
    model = make_model(arch, dtype=torch.float32, dropout=0.2).train()
    ids, mask, _ = make_batch(padded=True, left=True)
    torch.manual_seed(123)
    vanilla = model(input_ids=ids, attention_mask=mask).logits
    torch.manual_seed(124)
    other_seed = model(input_ids=ids, attention_mask=mask).logits
    assert (other_seed - vanilla).abs().max() > 1e-3  # dropout is active
    for strict in (False, True):
        torch.manual_seed(123)
        with myopic(model, strict=strict):
            out = model(input_ids=ids, attention_mask=mask).logits
        torch.testing.assert_close(out, vanilla, rtol=0, atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_bigram_ignores_past_tokens(arch: str) -> None:
    model = make_model(arch).eval()
    ids, mask, _ = make_batch(padded=False)
    t = SEQ - 1
    changed = ids.clone()
    changed[:, :t] = (ids[:, :t] + 1 + torch.arange(t)) % VOCAB
    with torch.no_grad():
        vanilla = model(input_ids=ids).logits
        vanilla_changed = model(input_ids=changed).logits
        with bigram(model):
            out = model(input_ids=ids).logits
            out_changed = model(input_ids=changed).logits
            own_changed = ids.clone()
            own_changed[:, t] = (ids[:, t] + 1) % VOCAB
            out_own_changed = model(input_ids=own_changed).logits
    assert (vanilla[:, t] - vanilla_changed[:, t]).abs().max() > 1e-6
    torch.testing.assert_close(out[:, t], out_changed[:, t], rtol=0, atol=1e-12)
    assert (out_own_changed[:, t] - out[:, t]).abs().max() > 1e-6
    assert (out[:, t] - vanilla[:, t]).abs().max() > 1e-6
    # Position 0 has no past: bigram and vanilla agree there.
    torch.testing.assert_close(out[:, 0], vanilla[:, 0], rtol=0, atol=1e-10)


@pytest.mark.parametrize("arch", ARCHS)
def test_bigram_without_the_count_is_each_token_alone_at_its_position(arch: str) -> None:
    """count_past=False: position t sees its own token only, not even how many positions precede it (brute force:
    the model run on that one token, placed at position t). The counting bigram differs from that later on."""
    model = make_model(arch).eval()
    ids, _, _ = make_batch(padded=False)
    with torch.no_grad():
        with bigram(model, count_past=False):
            alone = model(input_ids=ids).logits
        with bigram(model):
            counting = model(input_ids=ids).logits
        for t in (0, 3, SEQ - 1):
            single = model(input_ids=ids[:, t : t + 1], position_ids=torch.full((len(ids), 1), t)).logits[:, 0]
            torch.testing.assert_close(alone[:, t], single, rtol=0, atol=1e-5)
    torch.testing.assert_close(alone[:, 0], counting[:, 0], rtol=0, atol=1e-6)  # nothing precedes position 0
    assert (alone[:, SEQ - 1] - counting[:, SEQ - 1]).abs().max() > 1e-4


def test_unsupported_models_raise() -> None:
    config = MistralConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    mistral = MistralForCausalLM(config)
    for context in (myopic(mistral), myopic(mistral, strict=True), bigram(mistral)):
        with pytest.raises(UnsupportedModelError, match="MistralAttention"), context:
            pass
    assert "forward" not in mistral.model.layers[0].self_attn.__dict__

    with pytest.raises(UsageError, match="no supported attention"), myopic(nn.Linear(3, 3)):
        pass
    mixed_model = nn.ModuleDict({"gpt2": make_model("gpt2"), "extra": nn.MultiheadAttention(32, 4)})
    with pytest.raises(UsageError, match="MultiheadAttention"), myopic(mixed_model):
        pass
    assert all("forward" not in m.__dict__ for m in mixed_model.modules())

    with pytest.raises(UsageError, match="unknown gradient mode"):
        gradient_mode(mixed_model, "sideways")
