"""Extractive coverage, density, compression (Grusky et al., 2018), novel n-gram ratios and 3-gram repetition."""

import evaluate

from harness.scoring.evaluate_metrics import compute, metric_info


class Overlap(evaluate.Metric):
    def _info(self):
        return metric_info("overlap", __doc__)

    def _compute(self, predictions, references, **settings):
        return compute("overlap", predictions, references, **settings)
