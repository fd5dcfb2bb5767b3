"""Parameter groups of the gradient lens: `embed`, `block.{l}.attn`, `block.{l}.mlp`, `unembed`.

Every parameter tensor is counted once (`named_parameters` drops the second name of a shared tensor, so tied
input and output embeddings count once, in `embed`). Norms and biases go where they act: a block's
pre-attention norm (`ln_1`, `input_layernorm`) with its attention, its pre-MLP norm (`ln_2`,
`post_attention_layernorm`) with its MLP, the final norm with the unembedding; biases stay with their layer.
Blocks are found by their index in the parameter name (`h.3.`, `layers.3.`), so GPT-2, GPT-NeoX, Llama and the
synthetic-task model (GPT-2 blocks between an input and an output layer) share one rule.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from torch import Tensor, nn

from probes.errors import UsageError

ALL = "all"
EMBED = "embed"
UNEMBED = "unembed"
_BLOCK = re.compile(r"(?:^|\.)(?:h|layers|layer|blocks)\.(\d+)\.(.*)$")
_MLP_NORM = re.compile(r"post_attention_layernorm|ln_2")  # the pre-MLP norm (its name says "attention")
_ATTENTION_PART = re.compile(r"attn|attention|input_layernorm|ln_1")
_UNEMBED_PART = re.compile(r"(?:^|\.)(?:lm_head|embed_out|out|ln_f|final_layer_norm|norm)\.")


@dataclass(frozen=True)
class ParameterGroups:
    """The trainable parameters in a fixed order, each with the index of its component."""

    names: tuple[str, ...]
    parameters: tuple[Tensor, ...]
    group_of: tuple[int, ...]  # component index of each parameter
    components: tuple[str, ...]  # embed, block.0.attn, block.0.mlp, ..., unembed (only those present)

    @property
    def sizes(self) -> tuple[int, ...]:
        """Number of scalars per component."""
        sizes = [0] * len(self.components)
        for tensor, group in zip(self.parameters, self.group_of, strict=True):
            sizes[group] += tensor.numel()
        return tuple(sizes)


def component_of(name: str) -> str:
    """The component a parameter belongs to, from its name."""
    block = _BLOCK.search(name)
    if block is not None:
        index, rest = int(block.group(1)), block.group(2)
        attention = _ATTENTION_PART.search(rest) and not _MLP_NORM.search(rest)
        return f"block.{index}.{'attn' if attention else 'mlp'}"
    return UNEMBED if _UNEMBED_PART.search(f".{name}") else EMBED


def _order(component: str) -> tuple[int, int, int]:
    if component == EMBED:
        return (0, 0, 0)
    if component == UNEMBED:
        return (2, 0, 0)
    _, index, part = component.split(".")
    return (1, int(index), 0 if part == "attn" else 1)


def parameter_groups(model: nn.Module) -> ParameterGroups:
    """The model's trainable parameters (shared tensors once) grouped into components."""
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise UsageError(f"{type(model).__name__} has no trainable parameters: nothing to measure")
    components = sorted({component_of(name) for name, _ in named}, key=_order)
    index = {component: i for i, component in enumerate(components)}
    return ParameterGroups(
        names=tuple(name for name, _ in named),
        parameters=tuple(p for _, p in named),
        group_of=tuple(index[component_of(name)] for name, _ in named),
        components=tuple(components),
    )


def block_index(component: str) -> int | None:
    """l of `block.{l}.attn` / `block.{l}.mlp`; None for embed, unembed and all."""
    parts = component.split(".")
    return int(parts[1]) if len(parts) == 3 and parts[0] == "block" else None
