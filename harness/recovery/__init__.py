"""Recovery fine-tuning after pruning: a LoRA adapter beside the untouched sparse base, or a
full fine-tune that keeps every pruned zero. Needs torch, transformers and peft.

- ``recover(model_dir, spec, out_dir)`` trains and writes an adapter folder or a checkpoint
  with ``recovery.json`` (see ``harness.recovery.train``);
- ``load_with_adapter(base_dir, adapter_dir)`` loads a LoRA system, unmerged;
- ``RecoverySpec`` / ``LoRASpec`` say how (the study config embeds them).

The functions load lazily, so reading a spec does not import torch.
"""

from harness.recovery.spec import LoRASpec, RecoverySpec

_LAZY = {"recover": "train", "load_with_adapter": "train", "RecoveryDataError": "train",
         "SparsityLostError": "train"}

__all__ = ["LoRASpec", "RecoverySpec", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"harness.recovery.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'harness.recovery' has no attribute {name!r}")
