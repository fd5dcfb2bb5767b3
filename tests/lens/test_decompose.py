"""The three gradients of the lens against a per-position brute force, the decomposition, the last block,
batch order, and the cross-batch estimator on a planted expected gradient. Tiny float64 models: seconds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from probes.lens.decompose import LensBatch, Sketcher, batch_gradient, measure
from probes.lens.estimate import FROM_PARTS, estimate, expected_gram, interval, metrics, pooled_gram
from probes.lens.groups import ALL, component_of, parameter_groups
from tests.training.test_myopic import ARCHS, VOCAB, brute_force_grads, make_model

SEQ = 8


pytestmark = pytest.mark.usefixtures("one_thread")


def token_loss(model: nn.Module, chunk: Tensor) -> Tensor:
    logits = model(input_ids=chunk).logits
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), chunk[:, 1:].reshape(-1))


def make_batches(n_batches: int, windows_per_chunk: tuple[int, ...] = (2, 1), seed: int = 0) -> list[LensBatch]:
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for batch_id in range(n_batches):
        chunks = tuple(torch.randint(0, VOCAB, (n, SEQ), generator=generator) for n in windows_per_chunk)
        batches.append(LensBatch(batch_id, chunks, windows_per_chunk))
    return batches


def gradient_of(model: nn.Module, batch: LensBatch, mode: str) -> dict[str, Tensor]:
    batch_gradient(model, batch, token_loss, mode)
    return {name: p.grad.clone() for name, p in model.named_parameters()}


def brute_force(model: nn.Module, arch: str, batch: LensBatch, variant: str) -> dict[str, Tensor]:
    """Σ over windows and positions of ∂L_t/∂θ with the past cut off by hooks, per window, mean-weighted."""
    total = {name: torch.zeros_like(p) for name, p in model.named_parameters()}
    n_positions = batch.weight * (SEQ - 1)
    for chunk in batch.chunks:

        def losses(chunk: Tensor = chunk) -> Tensor:
            logits = model(input_ids=chunk).logits[:, :-1]
            per = F.cross_entropy(logits.reshape(-1, VOCAB), chunk[:, 1:].reshape(-1), reduction="none")
            return per.view(len(chunk), SEQ - 1) / n_positions

        for name, g in brute_force_grads(model, arch, variant, losses, SEQ - 1).items():
            total[name] += g
    return total


def plain_vanilla(model: nn.Module, batch: LensBatch) -> dict[str, Tensor]:
    model.zero_grad(set_to_none=True)
    tokens = torch.cat(batch.chunks)
    token_loss(model, tokens).backward()
    return {name: p.grad.clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("arch", ARCHS)
def test_three_gradients_equal_the_per_position_brute_force(arch: str) -> None:
    model = make_model(arch).eval()
    batch = make_batches(1)[0]
    expected = {
        "strict-myopic": brute_force(model, arch, batch, "strict"),
        "myopic": brute_force(model, arch, batch, "paper"),
        "vanilla": plain_vanilla(model, batch),  # one chunk of every window: the chunking must not matter
    }
    for mode, reference in expected.items():
        actual = gradient_of(model, batch, mode)
        for name in reference:
            scale = reference[name].abs().max().item()
            torch.testing.assert_close(actual[name], reference[name], rtol=1e-9, atol=1e-9 * scale + 1e-15)


@pytest.mark.parametrize("arch", ARCHS)
def test_parts_sum_to_the_vanilla_gradient_and_match_the_measured_inner_products(arch: str) -> None:
    model = make_model(arch).eval()
    batch = make_batches(1)[0]
    groups = parameter_groups(model)
    stats = measure(model, [batch], token_loss, groups, sketch_dim=10**9)
    grads = {mode: gradient_of(model, batch, mode) for mode in ("strict-myopic", "myopic", "vanilla")}
    flat = {
        mode: [
            torch.cat([g[n].reshape(-1) for n, c in zip(groups.names, groups.group_of, strict=True) if c == k])
            for k in range(len(groups.components))
        ]
        for mode, g in grads.items()
    }
    for k in range(len(groups.components)):
        strict, myopic, vanilla = (flat[m][k] for m in ("strict-myopic", "myopic", "vanilla"))
        direct, reading, precaching = strict, myopic - strict, vanilla - myopic
        assert torch.equal(direct + reading + precaching, strict + (myopic - strict) + (vanilla - myopic))
        torch.testing.assert_close(direct + reading + precaching, vanilla, rtol=0, atol=1e-15)
        stacked = torch.stack([direct, reading, precaching])
        np.testing.assert_allclose(
            stats.totals[k], batch.weight**2 * (stacked @ stacked.T).numpy(), rtol=1e-12, atol=1e-15
        )
        # The exact sketch is the part itself (S = w g for one batch).
        np.testing.assert_allclose(stats.sketches[k][0], stacked.numpy(), atol=1e-15)
    # In the Gram algebra too: the parts' Gram sums to ‖g_vanilla‖².
    vanilla_sq = [
        float(flat["vanilla"][k] @ flat["vanilla"][k]) * batch.weight**2 for k in range(len(groups.components))
    ]
    np.testing.assert_allclose((FROM_PARTS @ stats.totals @ FROM_PARTS.T)[:, 2, 2], vanilla_sq, rtol=1e-12)
    np.testing.assert_allclose(stats.totals.sum(axis=(-1, -2)), vanilla_sq, rtol=1e-12)


@pytest.mark.parametrize("arch", ARCHS)
def test_the_last_block_has_no_precaching_part(arch: str) -> None:
    """A last-block weight acts at a position only on that position's logits, so vanilla = myopic for it. Its
    pre-attention norm is the exception: its output at a past position is what later positions' keys and values
    are computed from."""
    model = make_model(arch).eval()
    batch = make_batches(1)[0]
    vanilla, myopic = gradient_of(model, batch, "vanilla"), gradient_of(model, batch, "myopic")
    last = max(int(c.split(".")[1]) for c in map(component_of, vanilla) if c.startswith("block."))
    checked = 0
    for name in vanilla:
        component = component_of(name)
        is_norm = "norm" in name or "ln_" in name
        if (
            component == f"block.{last}.mlp"
            or component == "unembed"
            or (component == f"block.{last}.attn" and not is_norm)
        ):
            scale = vanilla[name].abs().max().item()
            assert (vanilla[name] - myopic[name]).abs().max().item() <= 1e-12 * max(scale, 1e-30), name
            checked += 1
        elif component == f"block.{last}.attn" and is_norm and name.endswith("weight"):
            assert (vanilla[name] - myopic[name]).abs().max().item() > 1e-6, name
    assert checked >= 4
    stats = measure(model, make_batches(3), token_loss, parameter_groups(model))
    result = estimate(stats.totals, stats.diagonal, stats.weights, None, 0, 0)
    names = (*stats.components, ALL)
    for component in (f"block.{last}.mlp", "unembed"):
        share = result.pooled["precaching_share"][0][names.index(component)]
        assert share < 1e-10, (component, share)
    assert result.pooled["precaching_share"][0][names.index(ALL)] > 1e-3


def test_the_batch_noise_scale_is_the_mean_squared_batch_gradient() -> None:
    model = make_model("llama").eval()
    batches = make_batches(3, windows_per_chunk=(1,))
    stats = measure(model, batches, token_loss, parameter_groups(model))
    result = estimate(stats.totals, stats.diagonal, stats.weights, None, 0, 0)
    norms = []
    for batch in batches:
        gradient = gradient_of(model, batch, "vanilla")
        norms.append(sum(float((g**2).sum()) for g in gradient.values()))
    assert result.batch_norm_vanilla[-1] == pytest.approx(np.sqrt(np.mean(norms)), rel=1e-10)


def test_the_numbers_do_not_depend_on_the_order_of_the_batches() -> None:
    model = make_model("gpt2").eval()
    batches = make_batches(5)
    groups = parameter_groups(model)
    results = []
    for order in (batches, batches[::-1], [batches[i] for i in (2, 0, 4, 1, 3)]):
        stats = measure(model, order, token_loss, groups, sketch_dim=64).ordered()
        results.append(estimate(stats.totals, stats.diagonal, stats.weights, stats.cross(), 200, 3))
    for other in results[1:]:
        for table in ("pooled", "expected"):
            for name, (value, low, high) in getattr(results[0], table).items():
                np.testing.assert_allclose(getattr(other, table)[name][0], value, rtol=1e-9, equal_nan=True)
                np.testing.assert_allclose(getattr(other, table)[name][1], low, rtol=1e-9, equal_nan=True)
                np.testing.assert_allclose(getattr(other, table)[name][2], high, rtol=1e-9, equal_nan=True)


def test_the_cross_batch_estimator_is_unbiased_where_the_pooled_one_is_not() -> None:
    """Planted: g_b = μ + noise of variance σ²/w_b per coordinate; E of the estimate must be ⟨μ_x, μ_y⟩."""
    rng = np.random.default_rng(0)
    dim, weights = 50, np.array([3.0, 5.0, 4.0, 8.0, 2.0, 6.0])
    mu = rng.standard_normal((3, dim)) * 0.2  # strict, myopic, vanilla
    truth = mu @ mu.T
    noise = 1.0
    estimates, pooled = [], []
    for _ in range(4000):
        g = mu[None] + rng.standard_normal((len(weights), 3, dim)) * noise / np.sqrt(weights)[:, None, None]
        sums = (weights[:, None, None] * g).sum(axis=0)
        totals = (sums @ sums.T)[None]
        diagonal = np.einsum("bxd,byd->bxy", g, g)[:, None]
        estimates.append(expected_gram(totals, diagonal, weights)[0])
        pooled.append(pooled_gram(totals, weights)[0])
    mean, spread = np.mean(estimates, axis=0), np.std(estimates, axis=0) / np.sqrt(len(estimates))
    assert np.all(np.abs(mean - truth) < 4 * spread + 1e-12), (mean, truth, spread)
    bias = dim * noise**2 / weights.sum()  # E‖S/W‖² − ‖μ‖² = tr(Cov) / W
    np.testing.assert_allclose(np.mean(pooled, axis=0).diagonal() - truth.diagonal(), bias, rtol=0.1)


def test_metrics_of_a_known_gram() -> None:
    direct, reading, precaching = np.array([1.0, 0, 0]), np.array([0, 1.0, 0]), np.array([1.0, 0, 1.0])
    parts = np.stack([direct, reading, precaching])
    values = metrics(parts @ parts.T)
    myopic, vanilla = direct + reading, direct + reading + precaching
    assert values["grad_norm_precaching"] == pytest.approx(np.sqrt(2))
    assert values["grad_norm_vanilla"] == pytest.approx(np.linalg.norm(vanilla))
    assert values["precaching_share"] == pytest.approx(np.sqrt(2) / np.linalg.norm(vanilla))
    assert values["cos_direct_precaching"] == pytest.approx(1 / np.sqrt(2))
    assert values["cos_reading_precaching"] == pytest.approx(0.0)
    assert values["cos_myopic_precaching"] == pytest.approx(myopic @ precaching / np.linalg.norm(myopic) / np.sqrt(2))
    negative = metrics(np.diag([-1.0, 1.0, 1.0]))  # an expected squared norm estimated below 0
    assert negative["grad_norm_strict"] == 0 and negative["sq_norm_vanilla"] == pytest.approx(1.0)
    assert np.isnan(negative["cos_direct_precaching"])
    # An estimate that no three vectors can have: ⟨direct, pre-caching⟩ larger than the product of the norms.
    impossible = metrics(np.array([[1.0, 0.0, 2.0], [0.0, 1.0, 0.0], [2.0, 0.0, 1.0]]))
    assert np.isnan(impossible["cos_direct_precaching"]) and impossible["cos_reading_precaching"] == 0.0


def test_intervals_move_with_the_sketch_within_each_metric_range() -> None:
    """The replicates come from the sketched Gram; the exact estimate moves the interval, which then stays within
    what the metric can be: a cosine may go below 0 (never below −1), a norm may not."""
    replicates = np.linspace(0.0, 0.03, 1001)[:, None]
    exact, sketched = np.array([-0.057]), np.array([0.01])
    _, low, high = interval("cos_myopic_precaching", exact, sketched, replicates)
    assert low[0] == pytest.approx(np.quantile(replicates, 0.025) - 0.067) and low[0] < exact[0] < high[0]
    _, low, _ = interval("cos_myopic_precaching", np.array([-1.0]), sketched, replicates)
    assert low[0] == -1.0
    _, low, high = interval("grad_norm_precaching", np.array([0.001]), sketched, replicates)
    assert low[0] == 0.0 and high[0] == pytest.approx(np.quantile(replicates, 0.975) - 0.009)


def test_the_count_sketch_is_exact_when_it_fits_and_unbiased_when_it_folds() -> None:
    model = make_model("gpt2")
    groups = parameter_groups(model)
    first = [torch.randn_like(p) for p in groups.parameters]
    second = [torch.randn_like(p) + 0.5 * a for p, a in zip(groups.parameters, first, strict=True)]
    exact = np.zeros(len(groups.components))
    for a, b, k in zip(first, second, groups.group_of, strict=True):
        exact[k] += float((a * b).sum())
    fits = Sketcher(groups, 10**9, seed=0)
    np.testing.assert_allclose(
        [x @ y for x, y in zip(fits.sketch(first), fits.sketch(second), strict=True)], exact, rtol=1e-12
    )
    folded = []
    for seed in range(40):
        sketcher = Sketcher(groups, 64, seed)
        folded.append([x @ y for x, y in zip(sketcher.sketch(first), sketcher.sketch(second), strict=True)])
    sizes = np.array(groups.sizes)
    mean, spread = np.mean(folded, axis=0), np.std(folded, axis=0) / np.sqrt(len(folded))
    assert np.all((np.abs(mean - exact) < 4 * spread + 1e-9) | (sizes <= 64))


def test_groups_cover_each_tensor_once_with_tied_embeddings_in_embed() -> None:
    model = make_model("gpt2")
    groups = parameter_groups(model)
    assert model.lm_head.weight is model.transformer.wte.weight
    assert sum(groups.sizes) == sum(p.numel() for p in model.parameters())
    assert groups.components == ("embed", "block.0.attn", "block.0.mlp", "block.1.attn", "block.1.mlp", "unembed")
    assert component_of("transformer.h.1.ln_1.weight") == "block.1.attn"
    assert component_of("transformer.h.1.ln_2.bias") == "block.1.mlp"
    assert component_of("model.layers.3.post_attention_layernorm.weight") == "block.3.mlp"
    assert component_of("gpt_neox.layers.0.input_layernorm.bias") == "block.0.attn"
    assert component_of("model.norm.weight") == "unembed"
    assert component_of("gpt_neox.final_layer_norm.weight") == "unembed"
    assert component_of("body.wpe.weight") == "embed" and component_of("out.bias") == "unembed"
