"""The synthetic pre-caching task: the study's positive control (`probe-future synthetic`).

    task        the generator: TaskSpec, fresh batches as pure functions of (seed, stream, index)
    model       GPT-2 blocks on (x, z) inputs, with one regression output
    probe       closed-form ridge probes to the sines at each look-back and to y, R² with bootstrap intervals
    settings    presets, SyntheticConfig (the command's flags) and the resolved SyntheticSettings
    training    the task's Trainable for the shared training engine; side-by-side training processes
    evaluation  test losses, probes of every layer beside the untrained control, results and provenance
    results     headlines(frame): the numbers every summary prints (pandas only)
    attention   attention weight by distance, per block and head
    run         run_synthetic / run_synthetic_compare and the subcommand

The public names below are imported on first use, so reading a finished run's results (`probes.synthetic.results`)
does not load the training stack.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from probes.synthetic.results import headlines
    from probes.synthetic.run import run_synthetic, run_synthetic_compare
    from probes.synthetic.settings import SyntheticConfig
    from probes.synthetic.task import TaskSpec

_PUBLIC = {
    "SyntheticConfig": "probes.synthetic.settings",
    "TaskSpec": "probes.synthetic.task",
    "headlines": "probes.synthetic.results",
    "run_synthetic": "probes.synthetic.run",
    "run_synthetic_compare": "probes.synthetic.run",
}
__all__ = ["SyntheticConfig", "TaskSpec", "headlines", "run_synthetic", "run_synthetic_compare"]


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_PUBLIC[name]), name)
