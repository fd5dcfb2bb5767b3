"""probe-future: do language models prepare information for future tokens?

The public Python API (what the README documents). Each name is imported from its stage module on first
use, so `import probes` (and the command line's `--help`) stays light:

    from probes import ProbeConfig, run_probes
    results = run_probes(ProbeConfig(model="gpt2", tau="1..5", out="runs/gpt2"))
"""

from __future__ import annotations

import importlib
import os
from typing import Any

__version__ = "0.1.0"

# Bitwise-reproducible numerics for a seed, whatever the thread count (docs/ARCHITECTURE.md, "Determinism"): MKL's
# strict conditional-numerical-reproducibility mode makes its gemm results independent of the number of threads and
# of memory alignment, and neither MKL nor OpenMP may change the thread count at run time. MKL reads these on its
# first call, so they take effect as long as `probes` is imported before torch computes anything; a value the user
# set is kept.
REPRODUCIBLE_ENV = {"MKL_CBWR": "AUTO,STRICT", "MKL_DYNAMIC": "FALSE", "OMP_DYNAMIC": "FALSE"}
for _name, _value in REPRODUCIBLE_ENV.items():
    os.environ.setdefault(_name, _value)

# public name -> the module that defines it (one stage per module; see docs/ARCHITECTURE.md)
PUBLIC_API: dict[str, str] = {
    "load_documents": "probes.corpus",
    "make_windows": "probes.corpus",
    "split_by_document": "probes.corpus",
    "load_model": "probes.models",
    "extract": "probes.activations",
    "ActivationStore": "probes.activations",
    "ExtractConfig": "probes.activations",
    "ProbeConfig": "probes.probing.run",
    "run_probes": "probes.probing.run",
    "summary_table": "probes.probing.run",
    "read_results": "probes.results",
    "TrainConfig": "probes.training.lm",
    "train": "probes.training.lm",
    "myopic": "probes.training.myopic",
    "bigram": "probes.training.myopic",
    "gradient_mode": "probes.training.myopic",
    "EvalConfig": "probes.evaluate",
    "evaluate": "probes.evaluate",
    "SyntheticConfig": "probes.synthetic.run",
    "run_synthetic": "probes.synthetic.run",
    "run_synthetic_compare": "probes.synthetic.run",
    "DemoConfig": "probes.demo",
    "run_demo": "probes.demo",
    "GradientsConfig": "probes.lens.run",
    "run_gradients": "probes.lens.run",
    "load_run": "probes.runs",
    "find_runs": "probes.runs",
    "UsageError": "probes.errors",
}

__all__ = ["__version__", *PUBLIC_API]


def __getattr__(name: str) -> Any:
    if name in PUBLIC_API:
        return getattr(importlib.import_module(PUBLIC_API[name]), name)
    raise AttributeError(f"module 'probes' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
