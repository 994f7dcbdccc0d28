"""Scoring: HaRiM+, SummaC-ZS/Conv, ROUGE and lexical overlap, one module per metric behind
one interface (:class:`Scorers`); the metrics are declared in ``harness.scoring.registry``.

Names load lazily, so the config can read the registry without importing the scorers."""

_LAZY = {"ScoreBatch": "harness.scoring.scorers", "Scorers": "harness.scoring.scorers",
         "ScoringError": "harness.scoring.scorers", "score_cell": "harness.scoring.scorers",
         "read_scores": "harness.store"}

__all__ = list(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'harness.scoring' has no attribute {name!r}")
