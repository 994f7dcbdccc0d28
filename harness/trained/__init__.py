"""Trainers of the tiny models of ``harness.trained_models`` (the public entry point):
``fitting`` (tokenizer and training loop), ``summarizers`` and ``scorers``."""
