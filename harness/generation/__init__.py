"""Summaries from checkpoints: the reference study's prompts, vLLM or transformers, one JSONL
of ``GenerationRecord`` per cell (see ``cell``); one engine per model whose checkpoints are
swapped into it (see ``engine`` and ``serve``)."""

from harness.generation.cell import (CellRequest, CheckpointRequest, GenerationError, generate_cell,
                                     generate_checkpoint, meta_path)
from harness.generation.serve import ENGINES, generate_checkpoints
from harness.generation.worker import GenerationWorkerError
from harness.records import read_generations

__all__ = ["ENGINES", "CellRequest", "CheckpointRequest", "GenerationError", "GenerationWorkerError",
           "generate_cell", "generate_checkpoint", "generate_checkpoints", "meta_path", "read_generations"]
