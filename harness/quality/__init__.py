"""Standard quality beside the side effects: zero-shot accuracy through EleutherAI's
lm-evaluation-harness (the ``prunescope[quality]`` extra) and token-level perplexity on the
standard corpora (WikiText-2, C4) with the pruning papers' protocol.

- ``zero_shot``: lm-eval tasks (registered names or local task YAML files) on one checkpoint;
- ``corpora``: the standard corpora, read from local files or the ``datasets`` cache;
- ``stage``: ``ensure_quality``, the study's optional per-checkpoint ``quality`` stage,
  cached in the checkpoint folder's ``quality.json`` (``records``).

Importing this package does not import lm-eval; only running a task does.
"""
