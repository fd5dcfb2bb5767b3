"""The myopic gradient modes under bf16 autocast (what `--precision bf16` / `auto` on CUDA trains with), on CPU.

The float64 tests (test_myopic.py) show the one-pass myopic gradient equals the per-position brute force to
1e-4. Under bf16 autocast both are rounded; measured here (global relative L2 over all parameters, GPT-2 /
GPT-NeoX / Llama, paper and strict variants): one-pass vs brute force 1.8e-3 to 3.5e-3, while bf16 itself is
3.6e-3 to 4.2e-3 away from the float32 gradient. Stated tolerance: one-pass vs brute force ≤ 1e-2, and no
larger than 1.5x the bf16 brute force's own distance from float32 (the myopic mode adds no error beyond bf16's).
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from tests.training.test_myopic import (
    ARCHS,
    SEQ,
    brute_force_grads,
    make_batch,
    make_model,
    max_relative_difference,
    one_pass_grads,
    position_losses,
)

TOLERANCE = 1e-2


@pytest.mark.parametrize("variant", ["paper", "strict"])
@pytest.mark.parametrize("arch", ARCHS)
def test_one_pass_gradient_equals_brute_force_in_bf16(arch: str, variant: str) -> None:
    model = make_model(arch, dtype=torch.float32, attn="sdpa")
    ids, mask, targets = make_batch(padded=True)
    mode = "myopic" if variant == "paper" else "strict-myopic"

    def loss_fn() -> Tensor:
        return position_losses(model(input_ids=ids, attention_mask=mask).logits, targets, mask)

    exact = brute_force_grads(model, arch, variant, loss_fn, SEQ)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        brute = brute_force_grads(model, arch, variant, loss_fn, SEQ)
        one_pass = one_pass_grads(model, mode, ids, mask, targets)
    error = max_relative_difference(one_pass, brute)
    bf16_noise = max_relative_difference(brute, exact)
    assert error <= TOLERANCE, error
    assert error <= 1.5 * bf16_noise, (error, bf16_noise)
