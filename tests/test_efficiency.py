"""Sparse storage (lossless, sized by formula, strict about N:M), the sparse-vs-dense
benchmarks and the cost-vs-risk report section, on random matrices and a tiny 2:4 Llama."""

from __future__ import annotations

import json
import math
import shutil

import pandas as pd
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from analysis.cost import report_section
from analysis.sections import ReportContext
from harness.cli.main import main
from harness.efficiency.bench import bench_semi_structured, bench_sparse, linear_shapes
from harness.efficiency.storage import (
    PACKED_FILE, SparseFormatError, pack_checkpoint, pack_tensor, packed_bytes, unpack_checkpoint,
    unpack_tensor,
)

INT_VIEW = {torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16}


def bitwise_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and torch.equal(a.view(INT_VIEW[a.dtype]), b.view(INT_VIEW[b.dtype]))


def nm_pruned(rows: int, cols: int, n: int, m: int, dtype=torch.float32, seed: int = 0) -> torch.Tensor:
    """Random weight with the n smallest-magnitude entries of each group of m zeroed, an
    all-zero row, and a -0.0 kept as a value."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=gen).reshape(rows, cols // m, m)
    drop = w.abs().argsort(-1)[..., :n]
    w = w.scatter(-1, drop, 0.0).reshape(rows, cols)
    w[1] = 0.0
    w[2, w[2].nonzero()[0, 0]] = -0.0  # a kept slot: the group still has n +0.0 zeros
    return w.to(dtype)


def unstructured(rows: int, cols: int, sparsity: float, dtype=torch.float32, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=gen) * (torch.rand(rows, cols, generator=gen) >= sparsity)
    w[0] = 0.0
    w[3, 5] = -0.0
    return w.to(dtype)


def parts_bytes(parts: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in parts.values())


def nonzeros(w: torch.Tensor) -> int:
    """Non-zeros by bit pattern, counted element by element (-0.0 is a value)."""
    return sum(1 for v in w.flatten().tolist() if v != 0 or math.copysign(1, v) < 0)


# --- storage -----------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("fmt", ["csr", "2:4", "4:8", "1:4"])
def test_round_trip_is_bitwise_lossless_and_sized_by_the_formula(fmt, dtype):
    if fmt == "csr":
        weight = unstructured(12, 40, 0.7, dtype)
    else:
        n, m = (int(x) for x in fmt.split(":"))
        weight = nm_pruned(12, 40, n, m, dtype)
    parts = pack_tensor(weight, fmt)
    restored = unpack_tensor(parts, fmt, tuple(weight.shape))
    assert bitwise_equal(restored, weight)
    negative_zero = (weight == 0) & torch.signbit(weight)
    assert negative_zero.any() and torch.signbit(restored[negative_zero]).all()
    assert (weight == 0).all(dim=1).any()  # an all-zero row
    assert parts_bytes(parts) == packed_bytes(tuple(weight.shape), nonzeros(weight), fmt, dtype)


def test_nm_layout_matches_a_hand_worked_example():
    # Groups [0, 1, 0, 2] and [3, 0, 0, 4]: kept positions (1, 3) and (0, 3), ranks 4 and 2 among
    # (0,1) (0,2) (0,3) (1,2) (1,3) (2,3). Three bits each, LSB first: 0,0,1 | 0,1,0 -> 4 + 16.
    row = torch.tensor([[0.0, 1.0, 0.0, 2.0, 3.0, 0.0, 0.0, 4.0]])
    parts = pack_tensor(row, "2:4")
    assert parts["values"].tolist() == [[1.0, 2.0, 3.0, 4.0]]
    assert parts["meta"].tolist() == [20]
    # A group with a surplus zero keeps its first zero: [0, 0, 0, 5] -> kept (0, 3), rank 2.
    surplus = pack_tensor(torch.tensor([[0.0, 0.0, 0.0, 5.0]]), "2:4")
    assert surplus["values"].tolist() == [[0.0, 5.0]] and surplus["meta"].tolist() == [2]


def test_csr_layout_matches_a_hand_worked_example():
    w = torch.tensor([[0.0, 5.0], [0.0, 0.0], [-0.0, 3.0]])
    parts = pack_tensor(w, "csr")
    assert parts["values"].tolist() == [5.0, -0.0, 3.0] and torch.signbit(parts["values"][1])
    assert parts["col_idx"].tolist() == [1, 0, 1] and parts["col_idx"].dtype == torch.int16
    assert parts["row_ptr"].tolist() == [0, 1, 1, 3] and parts["row_ptr"].dtype == torch.int32


def test_packed_bytes_formula_by_hand():
    # fp16 2:4: half the values (2 bytes each) plus 3 bits per group of 4.
    elements = 4096 * 11008
    assert packed_bytes((4096, 11008), 0, "2:4", torch.float16) == elements + math.ceil(elements / 4 * 3 / 8)
    # 4:8 keeps 4 of 8, ranks among C(8, 4) = 70 sets need 7 bits.
    assert packed_bytes((2, 16), 0, "4:8", torch.float32) == 16 * 4 + math.ceil(4 * 7 / 8)
    assert packed_bytes((3, 5), 7, "csr", torch.float32) == 7 * 4 + 7 * 2 + 4 * 4
    assert packed_bytes((3, 40000), 7, "csr", torch.bfloat16) == 7 * 2 + 7 * 4 + 4 * 4  # int32 columns
    wide = unstructured(4, 40000, 0.999)
    parts = pack_tensor(wide, "csr")
    assert parts["col_idx"].dtype == torch.int32
    assert parts_bytes(parts) == packed_bytes((4, 40000), nonzeros(wide), "csr", torch.float32)
    assert bitwise_equal(unpack_tensor(parts, "csr", (4, 40000)), wide)


def test_invalid_nm_is_refused_naming_tensor_row_and_group():
    w = nm_pruned(6, 16, 2, 4)
    w[4, 8:12] = torch.tensor([0.0, 1.0, 2.0, 3.0])  # row 4, group 2: one zero
    expected = r"layer\.q: not 2:4 sparse: row 4, group 2 \(columns 8\.\.11\) has 1 zeros"
    with pytest.raises(SparseFormatError, match=expected):
        pack_tensor(w, "2:4", label="layer.q")
    signed = nm_pruned(6, 16, 2, 4)
    zero_slot = (signed[0, :4] == 0).nonzero()[0, 0]
    signed[0, zero_slot] = -0.0  # a -0.0 in a pruned slot counts as a value
    with pytest.raises(SparseFormatError, match=r"row 0, group 0 .*-0\.0 counts as a value"):
        pack_tensor(signed, "2:4")
    with pytest.raises(SparseFormatError, match="not a multiple of M=4"):
        pack_tensor(torch.zeros(2, 6), "2:4")


# --- a tiny 2:4 checkpoint ---------------------------------------------------------------
LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, llama_path):
    """A run directory with the tiny Llama (dense) and a 2:4 magnitude pruning of it."""
    root = tmp_path_factory.mktemp("run")
    (root / "study.yaml").write_text(
        f"name: tiny\nmodels:\n  - name: llama\n    path: {llama_path}\ntasks:\n  - name: demo\n")
    (root / "checkpoints" / "llama" / "dense").mkdir(parents=True)
    pruned = root / "checkpoints" / "llama" / "magnitude-2of4"
    shutil.copytree(llama_path, pruned)
    tensors = load_file(pruned / "model.safetensors")
    modules = {}
    for name, t in tensors.items():
        if name.endswith(".weight") and name.split(".")[-2] in LINEAR:
            rows, cols = t.shape
            groups = t.reshape(rows, cols // 4, 4)
            tensors[name] = groups.scatter(-1, groups.abs().argsort(-1)[..., :2], 0.0).reshape(rows, cols)
            modules[name.removesuffix(".weight")] = 0.5
    save_file(tensors, pruned / "model.safetensors", metadata={"format": "pt"})
    (pruned / "sparsity.json").write_text(json.dumps({
        "schema_version": 1, "method": "magnitude", "target_sparsity": 0.5, "measured_sparsity": 0.5,
        "spec": {"method": "magnitude", "sparsity": 0.5, "structure": "2:4", "owl": None},
        "modules": modules, "nm_valid": True}))
    return root


def test_checkpoint_round_trip_and_file_size(run_dir, tmp_path):
    checkpoint = run_dir / "checkpoints" / "llama" / "magnitude-2of4"
    report = pack_checkpoint(checkpoint, tmp_path / "packed")
    assert {t.fmt for t in report.tensors} == {"2:4"} and len(report.tensors) == 2 * len(LINEAR)
    with safe_open(str(tmp_path / "packed" / PACKED_FILE), framework="pt") as fh:
        stored = sum(fh.get_tensor(k).numel() * fh.get_tensor(k).element_size() for k in fh.keys())
    assert stored == report.packed_bytes
    assert (tmp_path / "packed" / "config.json").exists()
    unpack_checkpoint(tmp_path / "packed", tmp_path / "dense")
    original = load_file(checkpoint / "model.safetensors")
    restored = load_file(tmp_path / "dense" / "model.safetensors")
    assert original.keys() == restored.keys()
    assert all(bitwise_equal(original[k], restored[k]) for k in original if original[k].is_floating_point())
    # Forcing 2:4 on the dense model names the file, the tensor and the first bad group.
    first = r"model\.layers\.0\.mlp\.down_proj\.weight: not 2:4 sparse: row 0, group 0"
    with pytest.raises(SparseFormatError, match=first):
        pack_checkpoint(_dense_dir(run_dir), tmp_path / "bad", fmt="2:4")


def _dense_dir(run_dir):
    from harness.config import load_study

    return load_study(run_dir / "study.yaml").models[0].path


def test_bench_model_and_cost_section(run_dir, capsys):
    weightless = run_dir / "checkpoints" / "llama" / "wanda-0.5"
    weightless.mkdir()
    (weightless / "sparsity.json").write_text("{}")
    assert main(["bench", "model", str(run_dir), "--max-new-tokens", "4"]) == 0
    assert "llama/magnitude-2of4: " in capsys.readouterr().out
    result = json.loads((run_dir / "bench" / "model.json").read_text())
    (skipped,) = result["skipped"]
    assert skipped["checkpoint"] == "wanda-0.5" and "no weights" in skipped["reason"]
    entries = {e["checkpoint"]: e for e in result["checkpoints"]}
    dense, pruned = entries["dense"], entries["magnitude-2of4"]
    tensors = load_file(run_dir / "checkpoints" / "llama" / "magnitude-2of4" / "model.safetensors")
    linear = [t for k, t in tensors.items() if k.split(".")[-2] in LINEAR]
    linear_params = sum(t.numel() for t in linear)
    assert dense["parameters"] == pruned["parameters"] == sum(t.numel() for t in tensors.values())
    assert dense["linear_nonzero"] == linear_params and pruned["linear_nonzero"] == linear_params // 2
    other = sum(t.numel() * 4 for k, t in tensors.items() if k.split(".")[-2] not in LINEAR)
    expected = other + sum(t.numel() // 2 * 4 + math.ceil(t.numel() // 4 * 3 / 8) for t in linear)
    assert pruned["sparse_bytes"] == expected and pruned["formats"] == {"2:4": len(linear)}
    assert dense["sparse_bytes"] == dense["dense_bytes"] == other + linear_params * 4
    assert pruned["structure"] == "2:4" and pruned["method"] == "magnitude"
    assert pruned["generated_tokens"] == 3 * 4 and pruned["tokens_per_s"] > 0
    assert pruned["projected_linear_speedup"] is None  # CPU: no 2:4 kernel
    assert "saves no generation time" in result["note"]

    section = report_section(ReportContext.of(run_dir))
    (table,) = section.tables.values()
    assert table["memory_saving"].tolist() == pytest.approx([1 - expected / dense["dense_bytes"]])
    assert table["speed_ratio"].tolist() == pytest.approx([pruned["tokens_per_s"] / dense["tokens_per_s"]])
    assert section.figures[0].png.stat().st_size > 0 and section.figures[0].svg.exists()
    risk = pd.DataFrame({"model": ["llama", "llama"], "method": ["magnitude"] * 2, "sparsity": [0.5, 0.5],
                         "structure": ["2:4"] * 2, "metric": ["harim", "summac_zs"], "ratio": [1.3, 0.9]})
    (with_risk,) = report_section(ReportContext.of(run_dir, risk)).tables.values()
    assert with_risk[["risk ratio (harim)", "risk ratio (summac_zs)"]].values.tolist() == [[1.3, 0.9]]


def test_cost_section_absent_without_bench(tmp_path):
    assert report_section(ReportContext.of(tmp_path)) is None


# --- bench sparse ------------------------------------------------------------------------
def test_bench_sparse_small(capsys):
    table = bench_sparse(n=64, sparsities=(0.5, 0.9), trials=2)
    assert len(table) == 2 * 2 * 3  # sparsities x libraries x (dense, coo, csr)
    assert set(table["format"]) == {"dense", "coo", "csr"} and set(table["library"]) == {"torch", "scipy"}
    assert (table["median_s"] > 0).all() and (table["max_abs_diff"] < 1e-3).all()
    dense = table[table["format"] == "dense"]
    assert (dense["speedup"] == 1).all()
    for _, row in table.iterrows():
        base = dense[(dense["library"] == row["library"]) & (dense["sparsity"] == row["sparsity"])]
        assert row["speedup"] == pytest.approx(base["median_s"].item() / row["median_s"])
    assert main(["bench", "sparse", "--n", "32", "--trials", "1", "--sparsities", "0.5"]) == 0
    assert "speedup" in capsys.readouterr().out
    assert main(["bench", "sparse", "--sparsities", "half"]) == 2
    assert "--sparsities" in capsys.readouterr().err


def test_linear_shapes_match_the_tiny_model_and_llama_7b(llama_path):
    tensors = load_file(llama_path / "model.safetensors")
    shapes = linear_shapes(llama_path / "config.json")
    block = {k: "mlp" if k in ("gate_proj", "up_proj", "down_proj") else "self_attn" for k in LINEAR}
    assert {k: tuple(tensors[f"model.layers.0.{block[k]}.{k}.weight"].shape) for k in LINEAR} == shapes
    big = linear_shapes("llama-7b")
    assert big["q_proj"] == (4096, 4096) and big["down_proj"] == (4096, 11008)
    assert big["up_proj"] == big["gate_proj"] == (11008, 4096)


@pytest.mark.gpu
def test_semi_structured_matches_dense_on_cuda():
    records = bench_semi_structured({"q_proj": (256, 256)}, tokens=128, trials=2)
    sparse = next(r for r in records if r["format"] == "2:4")
    assert sparse["max_abs_diff"] < 0.1 and sparse["median_s"] > 0
