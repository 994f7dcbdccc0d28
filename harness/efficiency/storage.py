"""Lossless sparse storage of a pruned checkpoint's Linear weights, written with safetensors.

Formats of a 2-D weight [rows, cols] with s bytes per element (``packed_bytes`` is the formula):

- ``dense``: the tensor as is; rows*cols*s bytes.
- ``csr``: ``values`` [nnz] in the weight's dtype, ``col_idx`` [nnz] (int16 when
  cols <= 32768, else int32), ``row_ptr`` [rows+1] (int32 when nnz < 2**31, else int64):
  nnz*s + nnz*i + (rows+1)*p bytes.
- ``N:M`` (as in ``PruneSpec``: N of every M consecutive weights of a row are zero, M-N kept):
  ``values`` [rows, cols*(M-N)/M], the kept entries of each group in column order, and
  ``meta``: per group, the rank of its set of kept positions among the C(M, M-N) such sets in
  lexicographic order (``itertools.combinations``), written in b = ceil(log2 C(M, M-N)) bits,
  least significant bit first, groups in row-major order, as one bit stream packed into uint8
  (``numpy.packbits``, little bit order): rows*cols*(M-N)/M*s + ceil(rows*cols/M*b/8) bytes.
  For 2:4, b = 3 (6 sets); the per-group rank is the fewest bits that can name a set
  (NVIDIA's 2:4 kernels use 4: two 2-bit positions).

What counts as a zero: an element whose bits are all zero (+0.0). A -0.0 is stored as a value
like any non-zero, so ``unpack`` restores every input bit for bit (NaN payloads included); the
pruning stage canonicalizes -0.0 to +0.0, so this costs nothing there. An N:M group with more
than N zeros keeps its first surplus zeros as values.

The packed folder holds ``sparse.safetensors`` (a Linear weight ``W`` becomes ``W::values``,
``W::col_idx``, ``W::row_ptr`` or ``W::values``, ``W::meta``; other tensors are stored as
is) whose metadata key ``prunescope_sparse`` lists each packed tensor's format, shape and dtype,
plus the checkpoint's other files (config, tokenizer) so that unpacking gives a loadable model.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import asdict, dataclass
from functools import lru_cache
from itertools import combinations
from pathlib import Path

import numpy as np
import torch

from harness import atomic
from harness.errors import PrunescopeError
from harness.pruning.spec import parse_nm

PACKED_FILE = "sparse.safetensors"
METADATA_KEY = "prunescope_sparse"
MAX_M = 16  # the kept-set lookup table has 2**M entries
_NOT_LINEAR = ("embed", "lm_head", "wte", "wpe")  # 2-D weights that are not pruned Linears
_INT_VIEW = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


class SparseFormatError(PrunescopeError):
    """A tensor that does not fit the requested sparse format, or a damaged packed file."""


@dataclass(frozen=True)
class TensorPacking:
    """How one Linear weight is (or would be) stored, and what it costs."""

    name: str
    shape: tuple[int, int]
    dtype: str
    nnz: int
    fmt: str
    dense_bytes: int
    packed_bytes: int


@dataclass
class PackReport:
    """Per-tensor choices plus the bytes of the tensors stored as they are."""

    tensors: list[TensorPacking]
    other_bytes: int  # embeddings, norms, biases: stored dense

    @property
    def dense_bytes(self) -> int:
        return self.other_bytes + sum(t.dense_bytes for t in self.tensors)

    @property
    def packed_bytes(self) -> int:
        return self.other_bytes + sum(t.packed_bytes for t in self.tensors)

    def to_dict(self) -> dict:
        return {"dense_bytes": self.dense_bytes, "packed_bytes": self.packed_bytes,
                "other_bytes": self.other_bytes, "tensors": [asdict(t) for t in self.tensors]}


# --- sizes -------------------------------------------------------------------------------
def packed_bytes(shape: tuple[int, int], nnz: int, fmt: str, dtype: torch.dtype) -> int:
    """Bytes of a [rows, cols] weight with ``nnz`` non-zeros stored in ``fmt`` (see module doc)."""
    rows, cols = shape
    size = torch.empty((), dtype=dtype).element_size()
    if fmt == "dense":
        return rows * cols * size
    if fmt == "csr":
        return nnz * size + nnz * _col_dtype(cols).itemsize + (rows + 1) * _ptr_dtype(nnz).itemsize
    n, m = _nm(fmt)
    groups = rows * cols // m
    return groups * (m - n) * size + math.ceil(groups * _rank_bits(n, m) / 8)


def _col_dtype(cols: int) -> torch.dtype:
    return torch.int16 if cols <= 2**15 else torch.int32


def _ptr_dtype(nnz: int) -> torch.dtype:
    return torch.int32 if nnz < 2**31 else torch.int64


def _nm(fmt: str) -> tuple[int, int]:
    try:
        n, m = parse_nm(fmt)
    except ValueError as exc:
        raise SparseFormatError(f"format must be 'dense', 'csr' or 'N:M': {exc}") from None
    if m > MAX_M:
        raise SparseFormatError(f"format {fmt}: M must be <= {MAX_M}")
    return n, m


# --- one tensor --------------------------------------------------------------------------
def nonzero_mask(weight: torch.Tensor) -> torch.Tensor:
    """True where an element's bits are not all zero (so -0.0 and NaN count as values)."""
    return weight.view(_INT_VIEW[weight.element_size()]) != 0


def nm_violation(weight: torch.Tensor, fmt: str) -> str | None:
    """Why ``weight`` does not fit N:M (naming the first offending row and group), or None."""
    n, m = _nm(fmt)
    rows, cols = weight.shape
    if cols % m:
        return f"{cols} columns are not a multiple of M={m}"
    zeros = (~nonzero_mask(weight)).reshape(rows, cols // m, m).sum(-1)
    bad = (zeros < n).nonzero()
    if len(bad) == 0:
        return None
    r, g = (int(v) for v in bad[0])
    return (f"row {r}, group {g} (columns {g * m}..{g * m + m - 1}) has {int(zeros[r, g])} "
            f"zeros where {fmt} needs at least {n} (-0.0 counts as a value)")


def pack_tensor(weight: torch.Tensor, fmt: str, label: str = "tensor") -> dict[str, torch.Tensor]:
    """The parts of ``weight`` in ``fmt`` ("csr" or "N:M"); ``label`` names it in errors."""
    if weight.dim() != 2:
        raise SparseFormatError(f"{label}: sparse formats need a 2-D weight (shape {tuple(weight.shape)})")
    nz = nonzero_mask(weight)
    if fmt == "csr":
        rows, cols = weight.shape
        counts = nz.sum(1)
        row_ptr = torch.zeros(rows + 1, dtype=torch.int64)
        row_ptr[1:] = counts.cumsum(0)
        nnz = int(row_ptr[-1])
        return {"values": weight[nz], "col_idx": nz.nonzero()[:, 1].to(_col_dtype(cols)),
                "row_ptr": row_ptr.to(_ptr_dtype(nnz))}
    problem = nm_violation(weight, fmt)
    if problem:
        raise SparseFormatError(f"{label}: not {fmt} sparse: {problem}")
    n, m = _nm(fmt)
    rows, cols = weight.shape
    nz = nz.reshape(rows, cols // m, m)
    surplus = (m - n) - nz.sum(-1, keepdim=True)  # zeros this group keeps as values
    keep = nz | (~nz & ((~nz).cumsum(-1) <= surplus))
    codes = (keep.long() << torch.arange(m)).sum(-1)
    ranks = torch.from_numpy(_rank_of_code(n, m))[codes].numpy()
    bits = _rank_bits(n, m)
    stream = ((ranks.reshape(-1, 1) >> np.arange(bits)) & 1).astype(np.uint8)
    values = weight.reshape(rows, cols // m, m)[keep].reshape(rows, cols * (m - n) // m)
    return {"values": values, "meta": torch.from_numpy(np.packbits(stream.ravel(), bitorder="little"))}


def unpack_tensor(parts: dict[str, torch.Tensor], fmt: str, shape: tuple[int, int],
                  label: str = "tensor") -> torch.Tensor:
    """The dense weight back from ``pack_tensor``'s parts, bit for bit."""
    rows, cols = shape
    values = parts["values"]
    if fmt == "csr":
        row_ptr = parts["row_ptr"].long()
        row_of = torch.repeat_interleave(torch.arange(rows), row_ptr.diff())
        dense = torch.zeros(rows, cols, dtype=values.dtype)
        dense[row_of, parts["col_idx"].long()] = values
        return dense
    n, m = _nm(fmt)
    groups, bits = rows * cols // m, _rank_bits(n, m)
    stream = np.unpackbits(parts["meta"].numpy(), bitorder="little", count=groups * bits)
    ranks = (stream.reshape(groups, bits).astype(np.int64) << np.arange(bits)).sum(-1)
    kept_sets = _kept_sets(n, m)
    if ranks.size and ranks.max() >= len(kept_sets):
        raise SparseFormatError(f"{label}: damaged {fmt} index metadata (rank {ranks.max()})")
    keep = torch.from_numpy(kept_sets[ranks]).reshape(rows, cols // m, m)
    dense = torch.zeros(rows, cols // m, m, dtype=values.dtype)
    dense[keep] = values.reshape(-1)
    return dense.reshape(rows, cols)


@lru_cache
def _kept_sets(n: int, m: int) -> np.ndarray:
    """Boolean [C(M, M-N), M]: row r marks the kept positions of rank r."""
    sets = list(combinations(range(m), m - n))
    table = np.zeros((len(sets), m), dtype=bool)
    for rank, positions in enumerate(sets):
        table[rank, list(positions)] = True
    return table


@lru_cache
def _rank_of_code(n: int, m: int) -> np.ndarray:
    """Rank of each kept-position bitmask (bit i = position i kept); -1 for invalid masks."""
    lookup = np.full(2**m, -1, dtype=np.int64)
    for rank, row in enumerate(_kept_sets(n, m)):
        lookup[int((row.astype(np.int64) << np.arange(m)).sum())] = rank
    return lookup


def _rank_bits(n: int, m: int) -> int:
    return max(1, math.ceil(math.log2(math.comb(m, m - n))))


# --- format choice -----------------------------------------------------------------------
def choose_format(name: str, weight: torch.Tensor, fmt: str = "auto",
                  structures: tuple[str, ...] = ("2:4",)) -> TensorPacking:
    """The storage of one Linear weight: ``fmt`` itself, or under "auto" the smallest of
    dense, CSR and each N:M structure in ``structures`` that the weight fits."""
    shape, nnz = tuple(weight.shape), int(nonzero_mask(weight).sum())
    if fmt == "auto":
        candidates = ["dense", "csr", *(s for s in structures if nm_violation(weight, s) is None)]
    else:
        if fmt not in ("dense", "csr"):
            problem = nm_violation(weight, fmt)
            if problem:
                raise SparseFormatError(f"{name}: not {fmt} sparse: {problem}")
        candidates = [fmt]
    sizes = {c: packed_bytes(shape, nnz, c, weight.dtype) for c in candidates}
    best = min(candidates, key=sizes.__getitem__)  # ties: the first (dense, then csr)
    return TensorPacking(name, shape, str(weight.dtype).removeprefix("torch."), nnz, best,
                         packed_bytes(shape, nnz, "dense", weight.dtype), sizes[best])


def checkpoint_formats(checkpoint_dir: str | Path, fmt: str = "auto") -> PackReport:
    """What ``pack_checkpoint`` would store, without writing anything."""
    return _plan(checkpoint_dir, fmt)[0]


def _plan(checkpoint_dir, fmt):
    checkpoint_dir = Path(checkpoint_dir)
    tensors = load_tensors(checkpoint_dir)
    linear = linear_weight_names(checkpoint_dir, tensors)
    structures = _structures(checkpoint_dir)
    choices = [choose_format(name, tensors[name], fmt, structures) for name in sorted(linear)]
    other = sum(t.numel() * t.element_size() for name, t in tensors.items() if name not in linear)
    return PackReport(choices, other), tensors


def load_tensors(checkpoint_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    files = sorted(Path(checkpoint_dir).glob("*.safetensors"))
    if not files:
        raise SparseFormatError(f"{checkpoint_dir}: no *.safetensors weights")
    tensors = {}
    for path in files:
        tensors.update(load_file(path))
    return tensors


def linear_weight_names(checkpoint_dir: Path, tensors: dict[str, torch.Tensor]) -> set[str]:
    """The pruned Linear weights: those ``sparsity.json`` lists, else every 2-D float
    ``*.weight`` that is not an embedding or the output head."""
    report = Path(checkpoint_dir) / "sparsity.json"
    if report.exists():
        modules = json.loads(report.read_text()).get("modules") or {}
        named = {f"{m}.weight" for m in modules} & tensors.keys()
        if named:
            return named
    return {name for name, t in tensors.items()
            if name.endswith(".weight") and t.dim() == 2 and t.is_floating_point()
            and not any(part in name for part in _NOT_LINEAR)}


def _structures(checkpoint_dir: Path) -> tuple[str, ...]:
    report = Path(checkpoint_dir) / "sparsity.json"
    if report.exists():
        structure = (json.loads(report.read_text()).get("spec") or {}).get("structure")
        if structure and ":" in structure:  # N:M (structured pruning changes shapes, not formats)
            return (structure,)
    return ("2:4",)


# --- checkpoints -------------------------------------------------------------------------
def pack_checkpoint(checkpoint_dir: str | Path, out_dir: str | Path, fmt: str = "auto") -> PackReport:
    """Write the checkpoint's Linear weights in ``fmt`` ("auto", "dense", "csr" or "N:M") to
    ``out_dir/sparse.safetensors``, with its other files alongside."""
    from safetensors.torch import save_file

    checkpoint_dir, out_dir = Path(checkpoint_dir), Path(out_dir)
    report, tensors = _plan(checkpoint_dir, fmt)
    stored = dict(tensors)
    layout = {}
    for choice in report.tensors:
        layout[choice.name] = {"fmt": choice.fmt, "shape": list(choice.shape), "dtype": choice.dtype}
        if choice.fmt != "dense":
            weight = stored.pop(choice.name)
            parts = pack_tensor(weight, choice.fmt, label=f"{checkpoint_dir}: {choice.name}")
            stored.update({f"{choice.name}::{part}": t.contiguous() for part, t in parts.items()})
    _copy_other_files(checkpoint_dir, out_dir)
    atomic.write_with(out_dir / PACKED_FILE, lambda p: save_file(
        stored, str(p), metadata={METADATA_KEY: json.dumps(layout, sort_keys=True)}))
    return report


def unpack_checkpoint(packed_dir: str | Path, out_dir: str | Path) -> Path:
    """Restore the dense checkpoint (``out_dir/model.safetensors`` plus the other files)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    packed_dir, out_dir = Path(packed_dir), Path(out_dir)
    path = packed_dir / PACKED_FILE
    if not path.exists():
        raise SparseFormatError(f"{packed_dir}: no {PACKED_FILE} (not a packed checkpoint)")
    with safe_open(str(path), framework="pt") as fh:
        layout = json.loads((fh.metadata() or {}).get(METADATA_KEY, "null") or "null")
        if layout is None:
            raise SparseFormatError(f"{path}: metadata key {METADATA_KEY!r} is missing")
        stored = {name: fh.get_tensor(name) for name in fh.keys()}
    dense = {name: t for name, t in stored.items() if "::" not in name}
    for name, entry in layout.items():
        if entry["fmt"] != "dense":
            parts = {key.split("::", 1)[1]: t for key, t in stored.items() if key.startswith(f"{name}::")}
            dense[name] = unpack_tensor(parts, entry["fmt"], tuple(entry["shape"]), label=f"{path}: {name}")
    _copy_other_files(packed_dir, out_dir)
    target = out_dir / "model.safetensors"
    atomic.write_with(target, lambda p: save_file(dense, str(p), metadata={"format": "pt"}))
    return target


def _copy_other_files(src: Path, dst: Path) -> None:
    """Config, tokenizer and reports; not weights (nor a shard index that would name them)."""
    dst.mkdir(parents=True, exist_ok=True)
    for path in src.iterdir():
        if path.is_file() and path.suffix != ".safetensors" and not path.name.endswith(".index.json") \
                and not path.name.startswith("."):
            shutil.copy2(path, dst / path.name)
