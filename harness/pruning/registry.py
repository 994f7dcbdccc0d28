"""The pruning-method registry: every method's name, whether it needs calibration data, the
structures it supports and the level it works at, declared once.

``level="linear"``: the implementation is a class wrapping one Linear layer (``add_batch``,
``prune``); the driver (``harness.pruning.driver``) walks the model and calls it. ``level=
"model"``: the implementation is a module with ``prune_model(model, spec, calibration_ids,
*, device) -> report`` that prunes the whole loaded model itself (block removal, learned
gates, shape-changing structured pruning); it may change shapes, and returns its report.

``harness.pruning.spec.METHODS``, the records' method check and the CLI choices derive from
``METHODS``. Adding a method is one module plus one entry here (docs/ARCHITECTURE.md). This
module imports nothing heavy, so the config can read it without torch.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

STRUCTURES = ("unstructured", "nm")  # "nm": N:M such as 2:4; structured methods add theirs
# structured (harness/pruning/structured/): the same kept counts in every block, per-block
# counts, or an explicit target shape ("shape-a1f128")
UNIT_STRUCTURES = ("structured", "structured-global", "shape")


@dataclass(frozen=True)
class PruningMethod:
    name: str
    target: str  # "package.module:Name" of the implementation (class or module)
    needs_calibration: bool
    structures: tuple[str, ...] = STRUCTURES
    level: str = "linear"  # "linear" (per-Linear, driver-walked) or "model" (whole model)

    def load(self):
        """The implementation: a per-Linear class, or a module with ``prune_model``."""
        module, _, name = self.target.partition(":")
        loaded = importlib.import_module(module)
        return getattr(loaded, name) if name else loaded


METHODS: dict[str, PruningMethod] = {m.name: m for m in (
    PruningMethod("magnitude", "harness.pruning.methods.magnitude:Magnitude", needs_calibration=False),
    PruningMethod("wanda", "harness.pruning.methods.wanda:Wanda", needs_calibration=True),
    PruningMethod("sparsegpt", "harness.pruning.methods.sparsegpt:SparseGPT", needs_calibration=True),
    PruningMethod("bonsai", "harness.pruning.structured.prune", needs_calibration=True,
                  structures=UNIT_STRUCTURES, level="model"),
    PruningMethod("unit-norm", "harness.pruning.structured.prune", needs_calibration=True,
                  structures=UNIT_STRUCTURES, level="model"),
    PruningMethod("block-influence", "harness.pruning.structured.prune", needs_calibration=True,
                  structures=("structured", "shape"), level="model"),
    PruningMethod("l0", "harness.pruning.structured.prune", needs_calibration=True,
                  structures=("structured", "shape"), level="model"),
)}


def get(name: str) -> PruningMethod:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"method must be one of {', '.join(METHODS)} (got {name!r})") from None


def structure_kind(structure: str) -> str:
    """"unstructured", "nm" for "N:M", "shape" for "shape-<label>", else the structure's own name."""
    if ":" in structure:
        return "nm"
    return "shape" if structure.startswith("shape-") else structure
