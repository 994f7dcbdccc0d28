"""Pruning methods by name. A method wraps one Linear layer: ``add_batch(inp)`` accumulates
statistics from that layer's calibration inputs (a hook calls it), ``prune(sparsity)`` zeroes
weights in place and returns notes for the report (or None). Methods know nothing of model
families; the driver (``harness.pruning.driver``) walks the model."""

from harness.pruning.methods.magnitude import Magnitude
from harness.pruning.methods.sparsegpt import SparseGPT
from harness.pruning.methods.wanda import Wanda

REGISTRY = {"magnitude": Magnitude, "wanda": Wanda, "sparsegpt": SparseGPT}

__all__ = ["REGISTRY", "Magnitude", "SparseGPT", "Wanda"]
