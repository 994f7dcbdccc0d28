"""SummaC-Conv (Laban et al., 2022): entailment histograms through the released two-layer head."""

from harness.scoring.evaluate_metrics import metric_class

SummacConv = metric_class("summac_conv", __doc__)
