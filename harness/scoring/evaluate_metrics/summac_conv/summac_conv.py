"""SummaC-Conv (Laban et al., 2022): entailment histograms through the released two-layer head."""

import evaluate

from harness.scoring.evaluate_metrics import compute, metric_info


class SummacConv(evaluate.Metric):
    def _info(self):
        return metric_info("summac_conv", __doc__)

    def _compute(self, predictions, references, **settings):
        return compute("summac_conv", predictions, references, **settings)
