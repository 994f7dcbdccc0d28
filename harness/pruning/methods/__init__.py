"""Per-Linear pruning methods. A method wraps one Linear layer: ``add_batch(inp)`` accumulates
statistics from that layer's calibration inputs (a hook calls it), ``prune(sparsity)`` zeroes
weights in place and returns notes for the report (or None). Methods know nothing of model
families; the driver (``harness.pruning.driver``) walks the model. Methods are declared in
``harness.pruning.registry``."""

from harness.pruning.methods.magnitude import Magnitude
from harness.pruning.methods.sparsegpt import SparseGPT
from harness.pruning.methods.wanda import Wanda

__all__ = ["Magnitude", "SparseGPT", "Wanda"]
