"""Attention-by-distance diagnostic of the synthetic-task model, against a brute-force loop and a known answer."""

from __future__ import annotations

import numpy as np
import torch

from probes.synthetic.attention import attention_by_distance, max_distance, profile_text, window_share
from probes.synthetic.model import block_config, fresh_model
from probes.synthetic.task import LOSS_STREAM, TaskSpec, batch_of

SPEC = TaskSpec(freq=3.0, window=3, p=1.0, shift=1, seq_len=12)


def toy_model():
    torch.set_num_threads(1)
    return fresh_model(block_config(SPEC.seq_len, n_layer=2, d_model=8, n_head=2), seed=0).eval()


def test_matches_a_loop_over_positions_and_distances() -> None:
    model = toy_model()
    profile = attention_by_distance(model, SPEC, n_sequences=16, seed=3)
    reach = max_distance(SPEC)
    assert profile.shape == (2, 2, reach + 1) and reach == SPEC.shift + SPEC.window - 1 + 4

    inputs = batch_of(SPEC, 16, 3, LOSS_STREAM).inputs()
    model.body.config._attn_implementation = "eager"
    with torch.no_grad():
        attentions = model.body(inputs_embeds=model.inp(inputs), output_attentions=True).attentions
    for block, weights in enumerate(attentions):
        for head in range(2):
            for k in range(reach + 1):
                values = [weights[b, head, n, n - k].item() for b in range(16) for n in range(reach, SPEC.seq_len)]
                assert np.isclose(profile[block, head, k], np.mean(values), atol=1e-6)
    assert model.body.config._attn_implementation == "eager"  # what the test set, left as it was


def test_uniform_attention_has_the_known_profile() -> None:
    model = toy_model()
    with torch.no_grad():
        for block in model.body.h:  # zero query and key: every position attends uniformly to its prefix
            block.attn.c_attn.weight[:, : 2 * 8] = 0
            block.attn.c_attn.bias[: 2 * 8] = 0
    profile = attention_by_distance(model, SPEC, n_sequences=4)
    reach = max_distance(SPEC)
    expected = np.mean([1 / (n + 1) for n in range(reach, SPEC.seq_len)])
    assert np.allclose(profile, expected, atol=1e-6)
    assert np.allclose(window_share(profile, SPEC), SPEC.window * expected)
    lines = profile_text(profile, SPEC)
    assert len(lines) == 2 and lines[0].startswith(f"head 0: window {SPEC.window * expected:.2f}")
    assert f"0.{round(100 * expected):02d} [" in lines[0] and lines[0].count("]") == 1
