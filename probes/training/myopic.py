"""Myopic gradients and the "transformer bigram" forward for Hugging Face causal language models.

The ordinary gradient of a sequence loss sums dL_t/dθ_i over all positions i ≤ t: the loss at t also trains the
computation at earlier positions i, which is what lets a model learn to pre-cache information for future tokens.
The myopic gradient keeps only the diagonal terms dL_t/dθ_t. Inside ``with myopic(model):`` forward values are
unchanged (up to float rounding) and ``loss.backward()`` yields the myopic gradient in a single pass.

Per attention layer, with x the attention input (for GPT-2, ``ln_1`` of the residual stream):

1. live q, k, v from x;
2. past keys/values from the same projection applied to ``x.detach()`` (weights live, input detached);
3. scores S = q · past_kᵀ with the diagonal replaced by the live q_i · k_i; scale, causal and padding mask,
   softmax → A (then attention dropout, as in the model);
4. output_i = Σ_j A_ij past_v_j + A_ii (v_i − past_v_i), which equals A_ii v_i + Σ_{j<i} A_ij past_v_j.

So no gradient from the loss at t reaches a hidden state at a position < t, at any layer, while the shared
weights still get gradient through the recomputed past keys/values. ``myopic(model, strict=True)`` detaches the
past keys/values entirely: no parameter gradient flows through the past either.

``bigram(model)`` changes the forward instead: past keys and values are zeroed. A past position then scores
q · 0 = 0, so it still takes its share of the softmax mass, but contributes a zero value; the output at t is
A_tt v_t with A_tt = exp(s_tt) / (exp(s_tt) + number of unmasked past positions). The output at t therefore depends
on how many positions precede it (the mask) but never on what they contain: the "transformer bigram" can count
the positions before it. ``bigram(model, count_past=False)`` masks the past out of the softmax as well (A_tt = 1,
the output at t is v_t), so not even their number reaches position t (a learned position embedding still tells
the model where it is); `benchmarks/bench_bigram_count.py` measures what the count is worth.

Supported: GPT-2 (``GPT2LMHeadModel``, ``GPT2Model``), GPT-NeoX/Pythia (``GPTNeoXForCausalLM``,
``GPTNeoXModel``) and Llama/SmolLM2 (``LlamaForCausalLM``, ``LlamaModel``, grouped-query attention included), and
any module that wraps them. Anything else raises :class:`UnsupportedModelError` rather than silently giving the
vanilla gradient.

Notes:
- The attention math is computed here, whatever ``attn_implementation`` the model was loaded with: eager softmax
  attention, or for GPT-2's myopic mode without attention dropout torch's fused kernel (`_gpt2_myopic_fused`);
  while the context is active the model's config reports ``"eager"`` so that it builds ordinary additive masks.
- Run ``backward()`` inside the context if the model uses gradient checkpointing (the recomputation must use the
  same forward). Without checkpointing, the graph built inside the context keeps its myopic gradient.
- Incremental decoding with a key/value cache that already holds positions is not supported inside the context;
  the forward values are the vanilla ones, so generate outside it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from probes.errors import UsageError

MODES = ("vanilla", "myopic", "strict-myopic", "bigram")

PastMode = Literal["paper", "strict", "bigram", "self"]
RotaryFn = Callable[[Tensor, Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]
AttentionForward = Callable[..., tuple[Tensor, Tensor]]


class UnsupportedModelError(UsageError):
    """The model contains attention layers that the myopic forward cannot handle."""


@contextmanager
def myopic(model: nn.Module, strict: bool = False) -> Iterator[None]:
    """Within the context, ``backward()`` computes the myopic gradient; forward values are unchanged.

    ``strict=False`` is the authors' variant (past keys/values recomputed from the detached attention input with
    live weights); ``strict=True`` detaches past keys/values completely. On exit the model is exactly as before.
    """
    with _patched(model, "strict" if strict else "paper"):
        yield


@contextmanager
def bigram(model: nn.Module, count_past: bool = True) -> Iterator[None]:
    """Within the context, every attention layer sees zeroed past keys and values (the "transformer bigram").

    The zeroed past positions still take softmax mass, so a position's output depends on how many precede it;
    ``count_past=False`` gives them none (each position attends to itself only).
    """
    with _patched(model, "bigram" if count_past else "self"):
        yield


def gradient_mode(model: nn.Module, mode: str) -> AbstractContextManager[None]:
    """The context manager for one of :data:`MODES` ("vanilla" is a no-op)."""
    if mode == "vanilla":
        return nullcontext()
    if mode == "myopic":
        return myopic(model)
    if mode == "strict-myopic":
        return myopic(model, strict=True)
    if mode == "bigram":
        return bigram(model)
    raise UsageError(f"unknown gradient mode {mode!r}; choose one of {', '.join(MODES)}")


# --------------------------------------------------------------------------------------------------------------
# Patching


@dataclass(frozen=True)
class _Architecture:
    attention_class: type[nn.Module]
    make_forward: Callable[[nn.Module, PastMode], AttentionForward]


def _architectures() -> list[_Architecture]:
    from transformers.models.gpt2.modeling_gpt2 import GPT2Attention
    from transformers.models.gpt_neox.modeling_gpt_neox import GPTNeoXAttention
    from transformers.models.llama.modeling_llama import LlamaAttention

    return [
        _Architecture(GPT2Attention, _gpt2_forward),
        _Architecture(GPTNeoXAttention, _neox_forward),
        _Architecture(LlamaAttention, _llama_forward),
    ]


def _is_attention_like(module: nn.Module) -> bool:
    return isinstance(module, nn.MultiheadAttention) or type(module).__name__.lower().endswith("attention")


def _plan(model: nn.Module, mode: PastMode) -> list[tuple[nn.Module, AttentionForward]]:
    architectures = _architectures()
    plan: list[tuple[nn.Module, AttentionForward]] = []
    for name, module in model.named_modules():
        arch = next((a for a in architectures if isinstance(module, a.attention_class)), None)
        if arch is None:
            if _is_attention_like(module):
                raise UnsupportedModelError(
                    f"{_mode_label(mode)}: unsupported attention layer {name or '<model>'} "
                    f"({type(module).__name__}); supported: GPT-2, GPT-NeoX (Pythia), Llama (SmolLM2)"
                )
            continue
        if type(module).forward is not arch.attention_class.forward:
            raise UnsupportedModelError(
                f"{_mode_label(mode)}: attention layer {name} ({type(module).__name__}) overrides forward(); "
                "only the stock transformers attention classes are supported"
            )
        if getattr(module, "is_cross_attention", False):
            raise UnsupportedModelError(
                f"{_mode_label(mode)}: cross-attention layer {name} is not supported (decoder-only models only)"
            )
        plan.append((module, arch.make_forward(module, mode)))
    if not plan:
        raise UnsupportedModelError(
            f"{_mode_label(mode)}: no supported attention layers in {type(model).__name__}; "
            "supported: GPT-2, GPT-NeoX (Pythia), Llama (SmolLM2)"
        )
    return plan


def _mode_label(mode: PastMode) -> str:
    labels = {"paper": "myopic()", "strict": "myopic(strict=True)", "bigram": "bigram()"}
    return labels.get(mode, "bigram(count_past=False)")


_MISSING = object()


@contextmanager
def _patched(model: nn.Module, mode: PastMode) -> Iterator[None]:
    plan = _plan(model, mode)
    configs = _configs(model)
    saved_forwards = [(module, module.__dict__.get("forward", _MISSING)) for module, _ in plan]
    saved_impls = [(config, config.__dict__.get("_attn_implementation_internal", _MISSING)) for config in configs]
    try:
        for config in configs:
            # The mask builders read this to decide the mask format; eager gives a plain additive float mask.
            config._attn_implementation_internal = "eager"
        for module, forward in plan:
            module.forward = forward
        yield
    finally:
        for module, previous in saved_forwards:
            if previous is _MISSING:
                module.__dict__.pop("forward", None)
            else:
                module.forward = previous
        for config, previous in saved_impls:
            if previous is _MISSING:
                config.__dict__.pop("_attn_implementation_internal", None)
            else:
                config._attn_implementation_internal = previous


def _configs(model: nn.Module) -> list[Any]:
    from transformers import PretrainedConfig

    found: dict[int, Any] = {}
    for module in model.modules():
        config = getattr(module, "config", None)
        if isinstance(config, PretrainedConfig):
            found.setdefault(id(config), config)
    return list(found.values())


# --------------------------------------------------------------------------------------------------------------
# Attention math shared by all architectures


def _attend(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    past_key: Tensor | None,
    past_value: Tensor | None,
    mask: Tensor,
    scaling: float,
    dropout: float,
    training: bool,
    softmax_dtype: torch.dtype | None,
) -> tuple[Tensor, Tensor]:
    """Attention where the diagonal uses live keys/values and every other position the past ones.

    All tensors are (batch, heads, seq, head_dim); ``past_key``/``past_value`` None means zeroed (bigram).
    ``mask`` is additive and already contains the causal mask. Returns the output as (batch, seq, heads,
    head_dim) and the attention weights after dropout.
    """
    diagonal = (query * key).sum(-1) * scaling
    if past_key is None:
        scores = query.new_zeros(*query.shape[:-1], query.shape[-2])
    else:
        scores = torch.matmul(query, past_key.transpose(-1, -2)) * scaling
    scores = torch.diagonal_scatter(scores, diagonal, dim1=-2, dim2=-1) + mask
    if softmax_dtype is None:
        weights = F.softmax(scores, dim=-1)
    else:
        weights = F.softmax(scores, dim=-1, dtype=softmax_dtype).to(query.dtype)
    weights = F.dropout(weights, p=dropout, training=training)
    own = torch.diagonal(weights, dim1=-2, dim2=-1).unsqueeze(-1)
    if past_value is None:
        output = own * value
    else:
        output = torch.matmul(weights, past_value) + own * (value - past_value)
    return output.transpose(1, 2), weights


def _additive_mask(mask: Any, seq_len: int, dtype: torch.dtype, device: torch.device, mode: PastMode) -> Tensor:
    """The model's attention mask as an additive float mask that includes the causal mask (and, for the
    self-only bigram, masks every position but the diagonal)."""
    additive = _model_mask(mask, seq_len, dtype, device, mode)
    if mode != "self":
        return additive
    own = torch.eye(seq_len, dtype=torch.bool, device=device)
    return torch.where(own, additive, torch.tensor(torch.finfo(dtype).min, dtype=dtype, device=device))


def _model_mask(mask: Any, seq_len: int, dtype: torch.dtype, device: torch.device, mode: PastMode) -> Tensor:
    minimum = torch.finfo(dtype).min
    if mask is None:
        causal = torch.ones(seq_len, seq_len, dtype=torch.bool, device=device).tril()
        return torch.zeros((), dtype=dtype, device=device).masked_fill(~causal, minimum)
    if not isinstance(mask, Tensor) or mask.dim() != 4:
        raise UnsupportedModelError(
            f"{_mode_label(mode)}: expected a 4D attention mask, got {type(mask).__name__}; "
            "pass a 2D padding mask (attention_mask) and let the model build the 4D one"
        )
    mask = mask[..., :seq_len]
    if mask.dtype == torch.bool:
        return torch.zeros((), dtype=dtype, device=device).masked_fill(~mask, minimum)
    return mask.to(dtype)


def _past(
    mode: PastMode, key: Tensor, value: Tensor, recompute: Callable[[Tensor], tuple[Tensor, Tensor]], x: Tensor
) -> tuple[Tensor | None, Tensor | None]:
    """Past keys/values for ``mode``; ``recompute`` maps the detached attention input to (past_key, past_value)."""
    if mode in ("bigram", "self"):
        return None, None
    if not torch.is_grad_enabled():
        # Same values either way; without autograd there is nothing to separate.
        return key, value
    if mode == "strict":
        return key.detach(), value.detach()
    return recompute(x.detach())


def _weights_only_projection(projection: nn.Module, x: Tensor) -> Tensor:
    """``projection(x)`` without running the module's hooks for the plain layer types (x is already detached)."""
    from transformers.pytorch_utils import Conv1D

    if type(projection) is nn.Linear:
        return F.linear(x, projection.weight, projection.bias)
    if type(projection) is Conv1D:
        out = torch.addmm(projection.bias, x.reshape(-1, x.shape[-1]), projection.weight)
        return out.view(*x.shape[:-1], -1)
    return projection(x)


def _update_cache(cache: Any, key: Tensor, value: Tensor, layer_idx: int | None, mode: PastMode) -> None:
    if cache is None:
        return
    full_key, _ = cache.update(key, value, layer_idx)
    if full_key.shape[-2] != key.shape[-2]:
        raise UsageError(
            f"{_mode_label(mode)}: a key/value cache that already holds positions is not supported; "
            "generate outside the context (forward values are the vanilla ones) or pass use_cache=False"
        )


def _rotary_fn(module: nn.Module) -> RotaryFn:
    rotary: RotaryFn = sys.modules[type(module).__module__].apply_rotary_pos_emb
    return rotary


def _rotate_key(rotary: RotaryFn, key: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    return rotary(key, key, cos, sin)[1]


# --------------------------------------------------------------------------------------------------------------
# Per-architecture forwards (same signatures and return values as the transformers originals)


def _gpt2_forward(module: nn.Module, mode: PastMode) -> AttentionForward:
    from transformers.pytorch_utils import Conv1D

    def forward(
        hidden_states: Tensor,
        cache: Any = None,
        attention_mask: Any = None,
        encoder_hidden_states: Tensor | None = None,
        encoder_attention_mask: Tensor | None = None,
        output_attentions: bool | None = False,
        **kwargs: Any,
    ) -> tuple[Tensor, Tensor]:
        if encoder_hidden_states is not None:
            raise UnsupportedModelError(f"{_mode_label(mode)}: cross-attention is not supported")
        cache = kwargs.pop("past_key_values", cache)
        batch, seq_len = hidden_states.shape[:2]
        split = module.split_size
        head_dim = module.head_dim

        def heads(t: Tensor) -> Tensor:
            return t.view(batch, seq_len, -1, head_dim).transpose(1, 2)

        if _fusable(module, mode, output_attentions):
            output, key, value = _gpt2_myopic_fused(module, hidden_states, attention_mask, heads)
            _update_cache(cache, key, value, module.layer_idx, mode)
            output = module.resid_dropout(module.c_proj(output.transpose(1, 2).reshape(batch, seq_len, -1)))
            return output, None
        query, key, value = (heads(t) for t in module.c_attn(hidden_states).split(split, dim=2))
        _update_cache(cache, key, value, module.layer_idx, mode)

        def recompute(x: Tensor) -> tuple[Tensor, Tensor]:
            projection = module.c_attn
            if type(projection) is Conv1D:
                # Only the key/value columns of the fused projection.
                flat = x.reshape(-1, x.shape[-1])
                past_key, past_value = _project(flat, projection.weight[:, split:], projection.bias[split:], x)
            else:
                _, past_key, past_value = _weights_only_projection(projection, x).split(split, dim=2)
            return heads(past_key), heads(past_value)

        past_key, past_value = _past(mode, key, value, recompute, hidden_states)
        mask = _additive_mask(attention_mask, seq_len, query.dtype, query.device, mode)
        output, weights = _attend(
            query,
            key,
            value,
            past_key,
            past_value,
            mask,
            module.scaling,
            module.attn_dropout.p if module.training else 0.0,
            module.training,
            None,
        )
        output = output.reshape(batch, seq_len, -1).contiguous()
        output = module.resid_dropout(module.c_proj(output))
        return output, weights

    return forward


def _fusable(module: nn.Module, mode: PastMode, output_attentions: bool | None) -> bool:
    """Whether a GPT-2 layer's myopic attention can run through the fused kernel (`_gpt2_myopic_fused`)."""
    from transformers.pytorch_utils import Conv1D

    no_dropout = module.attn_dropout.p == 0 or not module.training
    plain = type(module.c_attn) is Conv1D and not output_attentions
    return mode == "paper" and plain and no_dropout and torch.is_grad_enabled()


def _gpt2_myopic_fused(
    module: nn.Module, x: Tensor, attention_mask: Any, heads: Callable[[Tensor], Tensor]
) -> tuple[Tensor, Tensor, Tensor]:
    """The myopic attention of a GPT-2 layer through one fused attention kernel: the output (batch, heads, seq,
    head_dim) and the keys and values (for a cache).

    The same gradient as steps 1-4 of the module docstring, with the softmax attention left to the kernel. Its
    keys/values are the projection of the detached input with live weights: the weights get their gradient
    through every pair, the diagonal included, and no input does. A term that is exactly zero in value adds what
    the live diagonal sends into the input at t, A_tt dv_t + A_tt (v_t − out_t)·g s q_t · dk_t, through
    keys/values projected with detached weights; A_tt comes from the kernel's log-sum-exp. The eager softmax,
    its masks and its diagonal edits made a myopic step of the synthetic model cost 1.3-1.45x a vanilla one on a
    CPU (benchmarks/results/myopic_step.txt).
    """
    split = module.split_size
    weight, bias = module.c_attn.weight, module.c_attn.bias
    flat = x.reshape(-1, x.shape[-1])
    query = heads(torch.addmm(bias[:split], flat, weight[:, :split]).view(*x.shape[:-1], -1))
    past_key, past_value = (heads(t) for t in _project(flat.detach(), weight[:, split:], bias[split:], x))
    own_key, own_value = (heads(t) for t in _project(flat, weight[:, split:].detach(), bias[split:].detach(), x))
    mask = _additive_mask(attention_mask, x.shape[1], query.dtype, query.device, "paper")
    if query.device.type == "cpu":
        causal = _model_mask(None, mask.shape[-1], mask.dtype, mask.device, "paper")
        is_causal = mask.shape[-2:] == causal.shape and bool(torch.equal(mask, causal.expand_as(mask)))
        output, log_sum_exp = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            query, past_key, past_value, 0.0, is_causal, attn_mask=None if is_causal else mask, scale=module.scaling
        )
    else:
        output, log_sum_exp = _attention_with_log_sum_exp(query, past_key, past_value, mask, module.scaling)
    with torch.no_grad():
        q, k, v, out = query.detach(), own_key.detach(), own_value.detach(), output.detach()
        own_score = (q * k).sum(-1) * module.scaling + torch.diagonal(mask, dim1=-2, dim2=-1)
        wide = torch.promote_types(q.dtype, torch.float32)  # bf16/fp16 in float32; float64 stays
        own_weight = torch.exp(own_score.to(wide) - log_sum_exp.to(wide)).to(q.dtype).unsqueeze(-1)
        key_direction = own_weight * (v - out)
    key_term = (module.scaling * (q * (own_key - k)).sum(-1, keepdim=True)) * key_direction
    return output + own_weight * (own_value - v) + key_term, past_key, past_value


def _project(flat: Tensor, weight: Tensor, bias: Tensor, like: Tensor) -> tuple[Tensor, ...]:
    """(key, value) of a Conv1D key/value block, (batch, seq, d) each."""
    return torch.addmm(bias, flat, weight).view(*like.shape[:-1], -1).chunk(2, dim=-1)


def _attention_with_log_sum_exp(
    query: Tensor, key: Tensor, value: Tensor, mask: Tensor, scale: float
) -> tuple[Tensor, Tensor]:
    """Softmax attention and its log-sum-exp per query (devices without the CPU kernel)."""
    scores = torch.matmul(query, key.transpose(-1, -2)) * scale + mask
    return torch.matmul(F.softmax(scores, dim=-1), value), torch.logsumexp(scores.detach(), dim=-1)


def _neox_forward(module: nn.Module, mode: PastMode) -> AttentionForward:
    rotary = _rotary_fn(module)

    def forward(
        hidden_states: Tensor,
        attention_mask: Any = None,
        layer_past: Any = None,
        position_embeddings: tuple[Tensor, Tensor] | None = None,
        **kwargs: Any,
    ) -> tuple[Tensor, Tensor]:
        if position_embeddings is None:
            raise UnsupportedModelError(f"{_mode_label(mode)}: GPT-NeoX attention called without position_embeddings")
        layer_past = kwargs.pop("past_key_values", kwargs.pop("cache", layer_past))
        batch, seq_len = hidden_states.shape[:2]
        head_size = module.head_size
        cos, sin = position_embeddings

        def split_heads(qkv: Tensor) -> tuple[Tensor, ...]:
            return qkv.view(batch, seq_len, -1, 3 * head_size).transpose(1, 2).chunk(3, dim=-1)

        query, key, value = split_heads(module.query_key_value(hidden_states))
        query, key = rotary(query, key, cos, sin)
        _update_cache(layer_past, key, value, module.layer_idx, mode)

        def recompute(x: Tensor) -> tuple[Tensor, Tensor]:
            _, past_key, past_value = split_heads(_weights_only_projection(module.query_key_value, x))
            return _rotate_key(rotary, past_key, cos, sin), past_value

        past_key, past_value = _past(mode, key, value, recompute, hidden_states)
        mask = _additive_mask(attention_mask, seq_len, query.dtype, query.device, mode)
        output, weights = _attend(
            query,
            key,
            value,
            past_key,
            past_value,
            mask,
            module.scaling,
            module.attention_dropout if module.training else 0.0,
            module.training,
            torch.float32,
        )
        output = module.dense(output.reshape(batch, seq_len, -1).contiguous())
        return output, weights

    return forward


def _llama_forward(module: nn.Module, mode: PastMode) -> AttentionForward:
    rotary = _rotary_fn(module)
    repeat_kv: Callable[[Tensor, int], Tensor] = sys.modules[type(module).__module__].repeat_kv
    groups: int = module.num_key_value_groups

    def forward(
        hidden_states: Tensor,
        position_embeddings: tuple[Tensor, Tensor] | None = None,
        attention_mask: Any = None,
        cache: Any = None,
        **kwargs: Any,
    ) -> tuple[Tensor, Tensor]:
        if position_embeddings is None:
            raise UnsupportedModelError(f"{_mode_label(mode)}: Llama attention called without position_embeddings")
        cache = kwargs.pop("past_key_values", cache)
        batch, seq_len = hidden_states.shape[:2]
        head_dim = module.head_dim
        cos, sin = position_embeddings

        def heads(t: Tensor) -> Tensor:
            return t.view(batch, seq_len, -1, head_dim).transpose(1, 2)

        query = heads(module.q_proj(hidden_states))
        key = heads(module.k_proj(hidden_states))
        value = heads(module.v_proj(hidden_states))
        query, key = rotary(query, key, cos, sin)
        _update_cache(cache, key, value, module.layer_idx, mode)

        def recompute(x: Tensor) -> tuple[Tensor, Tensor]:
            past_key = heads(_weights_only_projection(module.k_proj, x))
            past_value = heads(_weights_only_projection(module.v_proj, x))
            return _rotate_key(rotary, past_key, cos, sin), past_value

        past_key, past_value = _past(mode, key, value, recompute, hidden_states)
        mask = _additive_mask(attention_mask, seq_len, query.dtype, query.device, mode)
        output, weights = _attend(
            query,
            repeat_kv(key, groups),
            repeat_kv(value, groups),
            None if past_key is None else repeat_kv(past_key, groups),
            None if past_value is None else repeat_kv(past_value, groups),
            mask,
            module.scaling,
            module.attention_dropout if module.training else 0.0,
            module.training,
            torch.float32,
        )
        output = module.o_proj(output.reshape(batch, seq_len, -1).contiguous())
        return output, weights

    return forward
