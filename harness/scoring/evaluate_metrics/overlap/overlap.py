"""Extractive coverage, density, compression (Grusky et al., 2018), novel n-gram ratios and 3-gram repetition."""

from harness.scoring.evaluate_metrics import metric_class

Overlap = metric_class("overlap", __doc__)
