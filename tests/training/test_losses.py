"""The training loss: the chunked vocabulary projection + cross-entropy against torch's own on the full logits."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import MistralConfig, MistralForCausalLM

from probes.training.losses import NextTokenLoss, linear_cross_entropy, next_token_losses, plain_head
from probes.training.myopic import gradient_mode
from tests.training.test_myopic import ARCHS, BATCH, SEQ, VOCAB, make_model


def _loss_and_grads(loss_of: object, *inputs: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    leaves = [x.detach().clone().requires_grad_(True) for x in inputs]
    loss = loss_of(*leaves)  # type: ignore[operator]
    loss.backward()
    return loss.detach(), [leaf.grad for leaf in leaves]  # type: ignore[misc]


@pytest.mark.parametrize("rows_per_chunk", [1, 7, 40, 1000])
@pytest.mark.parametrize("scale", [1.0, 2.5])
def test_chunked_loss_and_gradients_equal_the_full_logits(rows_per_chunk: int, scale: float) -> None:
    """Float64, chunk sizes that do and do not divide the rows; an upstream gradient other than 1."""
    torch.manual_seed(0)
    n, d, vocab = 40, 16, 30
    hidden, weight = torch.randn(n, d, dtype=torch.float64), torch.randn(vocab, d, dtype=torch.float64)
    targets = torch.randint(0, vocab, (n,))
    chunk_bytes = 4 * vocab * rows_per_chunk

    expected = _loss_and_grads(lambda h, w: scale * F.cross_entropy(h @ w.T, targets), hidden, weight)
    got = _loss_and_grads(
        lambda h, w: scale * linear_cross_entropy(h, w, targets, chunk_bytes=chunk_bytes, min_rows=1), hidden, weight
    )
    torch.testing.assert_close(got[0].double(), expected[0], rtol=1e-12, atol=1e-12)
    for got_grad, expected_grad in zip(got[1], expected[1], strict=True):
        torch.testing.assert_close(got_grad, expected_grad, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("mode", ["vanilla", "myopic", "bigram"])
def test_next_token_loss_equals_the_logits_path(arch: str, mode: str) -> None:
    """The training module (chunked) against the model's own logits, in each gradient mode, every parameter."""
    model = make_model(arch)
    assert plain_head(model)
    tokens = torch.randint(0, VOCAB, (BATCH, SEQ))
    grads = []
    with gradient_mode(model, mode):
        for loss_of in (lambda: next_token_losses(model(input_ids=tokens).logits, tokens).mean(),
                        lambda: NextTokenLoss(model)(tokens)):  # fmt: skip
            model.zero_grad()
            loss = loss_of()
            loss.backward()
            grads.append((loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}))
    (expected_loss, expected), (loss, got) = grads
    torch.testing.assert_close(loss.double(), expected_loss.double(), rtol=1e-7, atol=0)
    assert got.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-9, atol=1e-12, msg=name)


def test_other_heads_and_no_grad_take_the_logits_path() -> None:
    """A model type outside the plain-head list, and a forward without gradients, use the full logits."""
    config = MistralConfig(vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                           num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32)  # fmt: skip
    other = MistralForCausalLM(config)
    assert not plain_head(other) and not NextTokenLoss(other).chunked
    assert not plain_head(nn.Linear(2, 2))
    model = make_model("gpt2")
    tokens = torch.randint(0, VOCAB, (BATCH, SEQ))
    with torch.no_grad():
        expected = next_token_losses(model(input_ids=tokens).logits, tokens).mean()
        assert NextTokenLoss(model)(tokens).item() == expected.item()


def test_bf16_autocast_matches_the_logits_path() -> None:
    """Under bfloat16 autocast (as GPU training runs) both paths round the same matrix products alike."""
    model = make_model("gpt2", dtype=torch.float32)
    tokens = torch.randint(0, VOCAB, (BATCH, SEQ))
    results = []
    for loss_of in (lambda: next_token_losses(model(input_ids=tokens).logits, tokens).mean(),
                    lambda: NextTokenLoss(model)(tokens)):  # fmt: skip
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = loss_of()
        loss.backward()
        results.append((loss.detach().float(), torch.cat([p.grad.flatten() for p in model.parameters()])))
    (expected_loss, expected), (loss, got) = results
    torch.testing.assert_close(loss, expected_loss, rtol=1e-5, atol=0)
    assert torch.linalg.vector_norm(got - expected) <= 1e-2 * torch.linalg.vector_norm(expected)
