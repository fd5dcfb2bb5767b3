"""Numeric precision of forward passes on accelerators: autocast dtype and TF32 matmuls, one rule for every stage.

`auto` is bf16 autocast on a CUDA device that supports it and plain fp32 everywhere else (so CPU numbers never
change); `fp32` is full precision (TF32 off); `bf16` / `fp16` force that autocast. Under autocast the residual
stream itself stays float32 in Hugging Face models (each block adds its bf16 output to it); what changes is the
rounding inside matmuls. TF32 (10-bit mantissa matmul inputs) is switched on for CUDA runs that are not `fp32`.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch

from probes.errors import UsageError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(precision: str, device: torch.device) -> str:
    """`auto` -> bf16 on CUDA with bf16 support, else fp32; any other name is checked and kept."""
    if precision not in PRECISIONS:
        raise UsageError(f"unknown --precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    return precision


def autocast(precision: str, device: torch.device) -> AbstractContextManager[object]:
    """The autocast context of a resolved precision on `device` (none for fp32)."""
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=AUTOCAST_DTYPES[precision])


def configure_matmuls(precision: str, device: torch.device) -> None:
    """TF32 matmuls for CUDA runs that are not fp32 (full fp32 otherwise)."""
    if device.type == "cuda":
        allowed = precision != "fp32"
        torch.backends.cuda.matmul.allow_tf32 = allowed
        torch.backends.cudnn.allow_tf32 = allowed
