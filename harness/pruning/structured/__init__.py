"""Structured pruning: removes whole attention units, FFN channels or blocks, so the pruned
model is smaller (see ``units`` for the unit map and masks)."""
