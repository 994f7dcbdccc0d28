"""HaRiM+ (Son et al., 2022) with a seq2seq scorer; padding never enters the sums, so scores do not depend on batching."""

from harness.scoring.evaluate_metrics import metric_class

Harim = metric_class("harim", __doc__)
