"""Pick the fastest safe precision: bf16 autocast on CPUs with bf16 units, fp16 mixed on GPUs."""

from __future__ import annotations

from pathlib import Path

import torch


def cpu_supports_bf16() -> bool:
    """True when the CPU advertises native bf16 (AVX512-BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, accelerator: str = "auto") -> str:
    """Map 'auto' to a Lightning precision string for the machine we are on."""
    if precision != "auto":
        return "32-true" if precision == "32" else precision
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "bf16-mixed" if cpu_supports_bf16() else "32-true"
