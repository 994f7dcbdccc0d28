"""HaRiM+ (Son et al., 2022) with a seq2seq scorer; padding never enters the sums, so scores do not depend on batching."""

import evaluate

from harness.scoring.evaluate_metrics import compute, metric_info


class Harim(evaluate.Metric):
    def _info(self):
        return metric_info("harim", __doc__)

    def _compute(self, predictions, references, **settings):
        return compute("harim", predictions, references, **settings)
