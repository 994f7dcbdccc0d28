"""ROUGE-1/2/L F1 (rouge-score, stemming on) against references, optionally against sources."""

from harness.scoring.evaluate_metrics import metric_class

Rouge = metric_class("rouge", __doc__)
