"""Sparse-vs-dense timings: when does a sparse format beat a dense matmul, and what does a
pruned checkpoint cost in bytes and generation time?

Every timing is the median of ``trials`` runs after one warm-up run; a speed-up is the dense
median divided by the sparse median of the same library, shape and sparsity.
"""

from __future__ import annotations

import gc
import json
import statistics
import time
import warnings
from collections import Counter
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from harness import atomic
from harness.devices import resolve_device
from harness.efficiency.storage import checkpoint_formats, load_tensors, nonzero_mask
from harness.errors import PrunescopeError
from harness.records import is_dense_folder
from harness.store import RunStore

SCHEMA_VERSION = 1
LLAMA_7B = {"hidden_size": 4096, "intermediate_size": 11008, "num_attention_heads": 32,
            "num_key_value_heads": 32, "num_hidden_layers": 32}  # Touvron et al. (2023), Table 2
DEFAULT_PROMPTS = (
    "Summarize: The city council approved a new budget for buses and schools on Tuesday.",
    "Summarize: Heavy rain flooded several streets, and firefighters rescued a family.",
    "Summarize: Researchers found that patients who walked daily recovered faster.",
)
DENSE_KERNELS_NOTE = ("generation runs dense kernels: the zeros of an unstructured or N:M pruned model "
                      "are multiplied like any other weight, so such pruning alone saves no generation "
                      "time; a structured checkpoint (bonsai, unit-norm, block-influence) has smaller "
                      "matrices or fewer blocks")


class BenchError(PrunescopeError):
    """A model config or run directory the benchmarks cannot use."""


def median_seconds(fn: Callable[[], object], trials: int, sync: Callable[[], None] = lambda: None) -> float:
    fn()
    sync()
    times = []
    for _ in range(trials):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# --- bench sparse ------------------------------------------------------------------------
def bench_sparse(n: int = 1000, sparsities: tuple[float, ...] = (0.5, 0.9), trials: int = 5,
                 config: str | Path | dict = "llama-7b", tokens: int = 2048, seed: int = 0,
                 threads: int | None = 1) -> pd.DataFrame:
    """A row per (device, library, format, shape, sparsity): median seconds, speed-up over the
    same library's dense product, and the largest absolute difference from it.

    CPU: an n x n matrix with a random ``sparsity`` share of zeros times a dense n x n matrix,
    dense vs COO/CSR in torch.sparse and scipy.sparse (conversion not timed). CUDA (when
    present): dense fp16 ``F.linear`` vs torch's semi-structured 2:4 kernel for each Linear
    shape of ``config`` with ``tokens`` input rows (2:4 is always 50% sparse).

    CPU kernels run on ``threads`` threads (None: the libraries' defaults); one thread by
    default, so that dense BLAS and the mostly single-threaded sparse kernels compare like
    for like and a busy machine's oversubscribed thread pool does not dominate small sizes."""
    from threadpoolctl import threadpool_limits

    records = []
    gen = torch.Generator().manual_seed(seed)
    for sparsity in sparsities:
        if not 0 <= sparsity < 1:
            raise BenchError(f"--sparsities: each must be in [0, 1) (got {sparsity})")
        a = torch.rand(n, n, generator=gen) * (torch.rand(n, n, generator=gen) >= sparsity)
        b = torch.rand(n, n, generator=gen)
        with threadpool_limits(threads), _torch_threads(threads):
            records += _cpu_matmuls(a, b, sparsity, trials)
    if torch.cuda.is_available():
        records += bench_semi_structured(linear_shapes(config), tokens=tokens, trials=trials, seed=seed)
    return pd.DataFrame.from_records(records)


@contextmanager
def _torch_threads(threads: int | None):
    before = torch.get_num_threads()
    torch.set_num_threads(threads or before)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _cpu_matmuls(a: torch.Tensor, b: torch.Tensor, sparsity: float, trials: int) -> list[dict]:
    import scipy.sparse as sp

    a_np, b_np = a.numpy(), b.numpy()
    shape = f"{a.shape[0]}x{a.shape[1]} @ {b.shape[0]}x{b.shape[1]}"
    with warnings.catch_warnings():  # torch calls its CSR support "beta" on every conversion
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        t_coo, t_csr = a.to_sparse_coo(), a.to_sparse_csr()
    s_coo, s_csr = sp.coo_matrix(a_np), sp.csr_matrix(a_np)
    variants = {  # conversions above are not timed
        "torch": {"dense": lambda: a @ b, "coo": lambda: torch.sparse.mm(t_coo, b), "csr": lambda: t_csr @ b},
        "scipy": {"dense": lambda: a_np @ b_np, "coo": lambda: s_coo @ b_np, "csr": lambda: s_csr @ b_np},
    }
    records = []
    for library, fns in variants.items():
        reference = np.asarray(fns["dense"]())
        seconds = {fmt: median_seconds(fn, trials) for fmt, fn in fns.items()}
        for fmt, fn in fns.items():
            diff = float(np.abs(np.asarray(fn()) - reference).max())
            records.append({"device": "cpu", "library": library, "format": fmt, "shape": shape,
                            "sparsity": sparsity, "median_s": seconds[fmt],
                            "speedup": seconds["dense"] / seconds[fmt], "max_abs_diff": diff,
                            "threads": torch.get_num_threads()})
    return records


def linear_shapes(config: str | Path | dict = "llama-7b") -> dict[str, tuple[int, int]]:
    """(out_features, in_features) of each Linear of one Llama-style decoder block, from a
    config.json path, its dict, or "llama-7b"."""
    if config == "llama-7b":
        config = LLAMA_7B
    source = "llama-7b" if config is LLAMA_7B else str(config)
    if not isinstance(config, dict):
        try:
            config = json.loads(Path(config).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise BenchError(f"{source}: cannot read a model config.json: {exc}") from None
    missing = [k for k in ("hidden_size", "intermediate_size", "num_attention_heads") if k not in config]
    if missing:
        raise BenchError(f"{source}: a Llama-style config needs {', '.join(missing)}")
    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    head_dim = config.get("head_dim") or hidden // heads
    kv = config.get("num_key_value_heads") or heads
    inter = config["intermediate_size"]
    return {"q_proj": (heads * head_dim, hidden), "k_proj": (kv * head_dim, hidden),
            "v_proj": (kv * head_dim, hidden), "o_proj": (hidden, heads * head_dim),
            "gate_proj": (inter, hidden), "up_proj": (inter, hidden), "down_proj": (hidden, inter)}


def bench_semi_structured(shapes: dict[str, tuple[int, int]], tokens: int = 2048, trials: int = 5,
                          seed: int = 0) -> list[dict]:
    """Dense fp16 ``F.linear`` vs the same 2:4-pruned weight as a semi-structured sparse tensor
    (CUDA only), per Linear shape."""
    from torch.nn.functional import linear
    from torch.sparse import to_sparse_semi_structured

    torch.manual_seed(seed)
    records = []
    for name, (out_f, in_f) in shapes.items():
        weight = torch.randn(out_f, in_f, dtype=torch.float16, device="cuda")
        weight *= torch.tensor([0, 0, 1, 1], dtype=torch.float16, device="cuda").tile(out_f, in_f // 4)
        x = torch.randn(tokens, in_f, dtype=torch.float16, device="cuda")
        sparse = to_sparse_semi_structured(weight)
        dense_s = median_seconds(lambda: linear(x, weight), trials, torch.cuda.synchronize)
        sparse_s = median_seconds(lambda: linear(x, sparse), trials, torch.cuda.synchronize)
        diff = float((linear(x, sparse) - linear(x, weight)).abs().max())
        shape = f"{name} [{out_f}, {in_f}] x {tokens} tokens"
        for fmt, seconds in (("dense", dense_s), ("2:4", sparse_s)):
            records.append({"device": "cuda", "library": "torch", "format": fmt, "shape": shape,
                            "sparsity": 0.5, "median_s": seconds, "speedup": dense_s / seconds,
                            "max_abs_diff": 0.0 if fmt == "dense" else diff, "threads": None})
    return records


# --- bench model -------------------------------------------------------------------------
def bench_model(run_dir: str | Path, prompts: tuple[str, ...] = DEFAULT_PROMPTS,
                max_new_tokens: int = 32, trials: int = 1) -> dict:
    """Size and generation speed of every checkpoint of a run, written to the run's bench
    report (``RunStore.bench_path``).

    Per checkpoint: parameters, non-zeros, bytes dense and in the best sparse format
    (``storage.checkpoint_formats``), greedy transformers generation throughput with the same
    prompts (exactly ``max_new_tokens`` each), and for 2:4 checkpoints on CUDA the projected
    Linear speed-up from per-shape semi-structured kernel timings."""
    store = RunStore(run_dir)
    folders = store.checkpoint_dirs()
    if not folders:
        raise BenchError(f"{run_dir}: no checkpoint folders to measure (run the prune stage first)")
    device = resolve_device()
    entries, skipped = [], []
    for folder in folders:
        where = {"model": folder.parent.name, "checkpoint": folder.name}
        try:  # one unusable checkpoint must not discard the others' measurements
            weights = _weights_dir(store, folder)
            if weights is None:
                raise BenchError(f"{folder}: no weights (deleted under keep_checkpoints: false?)")
            entries.append(_bench_checkpoint(folder, weights, prompts, max_new_tokens, trials, device))
        except PrunescopeError as exc:
            skipped.append({**where, "reason": str(exc)})
    result = {"schema_version": SCHEMA_VERSION, "device": device, "threads": torch.get_num_threads(),
              "prompts": list(prompts), "max_new_tokens": max_new_tokens, "trials": trials,
              "note": DENSE_KERNELS_NOTE, "checkpoints": entries, "skipped": skipped}
    store.write_bench(result)
    return result


def _weights_dir(store: RunStore, folder: Path) -> Path | None:
    """The folder's own weights, or for the dense baseline the study's model directory."""
    if any(folder.glob("*.safetensors")):
        return folder
    if not is_dense_folder(folder.name):
        return None
    from harness.models import resolve_model_dir

    study = store.read_study()
    for model in study.models if study is not None else []:
        if model.name == folder.parent.name:
            return resolve_model_dir(model)[0]
    identity = store.read_checkpoint_report(folder.parent.name, folder.name, "identity.json")
    if identity is not None:
        source = Path(identity["source"])
        source = source if source.is_absolute() else store.root / source
        return source if source.is_dir() else None
    return None


def _bench_checkpoint(folder: Path, weights: Path, prompts, max_new_tokens: int, trials: int,
                      device: str) -> dict:
    info = _prune_info(folder)
    sizes = checkpoint_formats(weights)
    tensors = load_tensors(weights)
    entry = {
        "model": folder.parent.name, "checkpoint": folder.name, **info,
        "parameters": sum(t.numel() for t in tensors.values()),
        "nonzero": sum(int(nonzero_mask(t).sum()) for t in tensors.values()),
        "linear_parameters": sum(t.shape[0] * t.shape[1] for t in sizes.tensors),
        "linear_nonzero": sum(t.nnz for t in sizes.tensors),
        "dense_bytes": sizes.dense_bytes, "sparse_bytes": sizes.packed_bytes,
        "formats": dict(Counter(t.fmt for t in sizes.tensors)),
        **_throughput(weights, prompts, max_new_tokens, trials, device),
        "projected_linear_speedup": None,
    }
    del tensors
    if device == "cuda" and info["structure"] == "2:4":
        rows = bench_semi_structured(linear_shapes(weights / "config.json"))
        dense = sum(r["median_s"] for r in rows if r["format"] == "dense")
        entry["projected_linear_speedup"] = dense / sum(r["median_s"] for r in rows if r["format"] == "2:4")
    return entry


def _prune_info(folder: Path) -> dict:
    """Method, target sparsity and structure from the checkpoint's ``sparsity.json``."""
    if is_dense_folder(folder.name):
        return {"method": "dense", "sparsity": 0.0, "structure": "unstructured", "owl": False}
    store = RunStore(folder.parents[2])
    report = store.read_checkpoint_report(folder.parent.name, folder.name, "sparsity.json")
    if report is None:
        path = store.checkpoint_report_path(folder.parent.name, folder.name, "sparsity.json")
        raise BenchError(f"{path}: missing; cannot tell how {folder.name} was pruned")
    spec = report.get("spec") or {}
    return {"method": report.get("method", spec.get("method")), "sparsity": report.get("target_sparsity"),
            "structure": spec.get("structure", "unstructured"), "owl": bool(spec.get("owl"))}


def _throughput(weights: Path, prompts, max_new_tokens: int, trials: int, device: str) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(weights)
    model = AutoModelForCausalLM.from_pretrained(weights).to(device).eval()
    encoded = [tokenizer(p, return_tensors="pt").to(device) for p in prompts]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def generate_all():
        with torch.inference_mode():
            for inputs in encoded:
                model.generate(**inputs, max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens,
                               do_sample=False, pad_token_id=pad)

    seconds = median_seconds(generate_all, trials, sync)
    del model
    gc.collect()
    tokens = len(prompts) * max_new_tokens
    return {"generated_tokens": tokens, "generation_s": seconds, "tokens_per_s": tokens / seconds}
