"""Summaries from a checkpoint: the reference study's prompts, vLLM or transformers, one
JSONL of ``GenerationRecord`` per cell (see ``cell``)."""

from harness.generation.cell import GenerationError, generate_cell, meta_path
from harness.generation.worker import GenerationWorkerError, generate_cell_in_subprocess
from harness.records import read_generations

__all__ = ["GenerationError", "GenerationWorkerError", "generate_cell", "generate_cell_in_subprocess",
           "meta_path", "read_generations"]
