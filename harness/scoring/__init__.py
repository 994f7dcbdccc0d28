"""Scoring: HaRiM+, SummaC-ZS/Conv, ROUGE and lexical overlap, one module per metric behind
one interface (:class:`Scorers`)."""

from harness.scoring.scorers import COLUMNS, Scorers, ScoringError, read_scores, score_cell

__all__ = ["COLUMNS", "Scorers", "ScoringError", "read_scores", "score_cell"]
