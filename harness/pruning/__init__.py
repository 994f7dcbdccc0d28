"""Pruning: magnitude, Wanda and SparseGPT, unstructured or N:M, optionally OWL-allocated,
on any Hugging Face decoder-only model. Needs torch and transformers alone.

- ``prune(model, spec, calibration_ids)`` prunes a loaded model in place -> sparsity report;
- ``prune_checkpoint(model_dir, spec, out_dir)`` loads, calibrates, prunes and writes a plain
  HF checkpoint plus ``sparsity.json``.

The functions load lazily, so reading a spec (the study config does) does not import torch.
"""

from harness.pruning.spec import CalibrationSpec, OWLSpec, PruneSpec

_LAZY = {"prune": "driver", "find_blocks": "driver", "prune_checkpoint": "checkpoint"}

__all__ = ["CalibrationSpec", "OWLSpec", "PruneSpec", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"harness.pruning.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'harness.pruning' has no attribute {name!r}")
