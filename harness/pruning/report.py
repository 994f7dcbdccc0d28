"""What pruning left: measured sparsity per module and block, N:M validity, peak memory."""

from __future__ import annotations

import resource
import sys

import torch

from harness.pruning.masks import nm_satisfied
from harness.pruning.spec import PruneSpec

SCHEMA_VERSION = 1


def sparsity_report(prefix: str, block_layers: list[dict], spec: PruneSpec,
                    targets: list[float]) -> dict:
    """``block_layers``: per block, its Linear layers by name (relative to the block)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "method": spec.method,
        "spec": spec.to_dict(),
        "target_sparsity": spec.sparsity,
        "block_target_sparsity": targets,
        **measure_sparsity(prefix, block_layers, spec.nm),
    }


def measure_sparsity(prefix: str, block_layers: list[dict], nm: tuple[int, int] | None) -> dict:
    """Zeros per module and block, their overall share and, for an ``nm`` pattern, whether
    every group of every layer still satisfies it (``nm_valid``; None without a pattern)."""
    modules, block_sparsity = {}, []
    zeros_total = numel_total = 0
    nm_valid = True if nm else None
    for index, layers in enumerate(block_layers):
        zeros_block = numel_block = 0
        for name, layer in layers.items():
            weight = layer.weight.data
            zeros = int((weight == 0).sum())
            modules[f"{prefix}.{index}.{name}"] = zeros / weight.numel()
            zeros_block += zeros
            numel_block += weight.numel()
            if nm and not nm_satisfied(weight, *nm):
                nm_valid = False
        block_sparsity.append(zeros_block / numel_block)
        zeros_total += zeros_block
        numel_total += numel_block
    return {"measured_sparsity": zeros_total / numel_total, "modules": modules,
            "blocks": block_sparsity, "nm_valid": nm_valid}


def reset_memory_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def memory_peak(device: torch.device) -> int:
    """Peak accelerator memory on CUDA; otherwise the process's resident-set high-water mark."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(maxrss if sys.platform == "darwin" else maxrss * 1024)
