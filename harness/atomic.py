"""Atomic artifact writes: write to a temporary file in the same folder, fsync, rename.

A writer killed at any point leaves either the previous file or the complete new one, never
a truncated artifact. Every stage writes through these functions. Files and folders get the
permissions the process's umask gives (``tempfile`` would leave them private: 0600/0700).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from pathlib import Path


def umask() -> int:
    """The process's current umask (reading it means setting it; it is put back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path next to ``path``; on success rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: str | Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n")


def write_jsonl(path: str | Path, records: Iterable) -> None:
    """Pydantic models or dicts, one JSON object a line."""
    lines = []
    for rec in records:
        obj = _jsonable(rec) if hasattr(rec, "model_dump") else rec
        lines.append(json.dumps(obj, sort_keys=True, ensure_ascii=False, default=_jsonable))
    write_text(path, "".join(line + "\n" for line in lines))


def write_with(path: str | Path, writer: Callable[[Path], None]) -> None:
    """Atomically write ``path`` with a function that writes a file at the path it is given
    (e.g. ``lambda p: df.to_parquet(p)``)."""
    with atomic_path(path) as tmp:
        writer(tmp)


def write_dir(path: str | Path, writer: Callable[[Path], None]) -> None:
    """Atomically write the folder ``path`` with a function that fills the (empty, temporary)
    folder it is given; an older folder at ``path`` is moved aside first, then deleted."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        writer(tmp)
        _honour_umask(tmp)
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
            os.replace(path, old / path.name)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _honour_umask(folder: Path) -> None:
    """Give a folder written through temporary files the modes the umask asks for."""
    mask = umask()
    for path in [folder, *folder.rglob("*")]:
        os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)


def _jsonable(obj):
    # pydantic models, duck-typed so that this module imports without pydantic (harness.pruning
    # must import with torch and transformers alone)
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")
