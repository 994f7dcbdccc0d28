"""SummaC-ZS (Laban et al., 2022): mean over summary sentences of the max entailment by any source sentence."""

import evaluate

from harness.scoring.evaluate_metrics import compute, metric_info


class SummacZs(evaluate.Metric):
    def _info(self):
        return metric_info("summac_zs", __doc__)

    def _compute(self, predictions, references, **settings):
        return compute("summac_zs", predictions, references, **settings)
