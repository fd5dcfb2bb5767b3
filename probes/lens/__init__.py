"""The gradient lens: how much of a model's training signal goes to future tokens, on any checkpoint.

For a batch of windows and L = mean next-token cross-entropy, three gradients of L (dropout off):
g_vanilla, g_myopic (under `probes.training.myopic.myopic`) and g_strict (`myopic(strict=True)`), split as
g_vanilla = direct (g_strict) + reading the past (g_myopic − g_strict) + pre-caching (g_vanilla − g_myopic),
reported per component (`groups`) as pooled numbers and as unbiased cross-batch estimates for the expected
gradient (`estimate`), from running sums and per-batch inner products (`decompose`). `run` is the
`probe-future gradients` command; `training` records the all-parameter numbers while a model trains.
"""

from probes.lens.decompose import GradientStats, LensBatch, measure
from probes.lens.estimate import estimate, expected_gram, metrics, pooled_gram
from probes.lens.groups import parameter_groups
from probes.lens.run import GradientsConfig, run_gradients

__all__ = [
    "GradientStats",
    "GradientsConfig",
    "LensBatch",
    "estimate",
    "expected_gram",
    "measure",
    "metrics",
    "parameter_groups",
    "pooled_gram",
    "run_gradients",
]
