"""SummaC-ZS (Laban et al., 2022): mean over summary sentences of the max entailment by any source sentence."""

from harness.scoring.evaluate_metrics import metric_class

SummacZs = metric_class("summac_zs", __doc__)
