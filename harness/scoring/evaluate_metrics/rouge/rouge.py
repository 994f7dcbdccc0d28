"""ROUGE-1/2/L F1 (rouge-score, stemming on) against references, optionally against sources."""

import evaluate

from harness.scoring.evaluate_metrics import compute, metric_info


class Rouge(evaluate.Metric):
    def _info(self):
        return metric_info("rouge", __doc__)

    def _compute(self, predictions, references, **settings):
        return compute("rouge", predictions, references, **settings)
