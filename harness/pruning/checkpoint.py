"""Prune a checkpoint directory into a new, plain Hugging Face checkpoint plus ``sparsity.json``.

The output loads unchanged in transformers and vLLM: dense safetensors with zeros and no
``sparsity_config`` (current vLLM rejects one). It is written atomically, so a killed run
leaves no half-written checkpoint. The output folder is never the input model's own folder
(or a folder holding it); ``check_out_dir`` also refuses to replace anything but a checkpoint
of the same spec unless told to overwrite.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from harness.atomic import write_dir
from harness.devices import resolve_device
from harness.errors import PrunescopeError
from harness.pruning import registry
from harness.pruning.calibration import load_calibration
from harness.pruning.driver import find_blocks, prune
from harness.pruning.spec import PruneSpec

DTYPES = ("auto", "float32", "bfloat16", "float16")
WEIGHT_FILES = ("*.safetensors", "pytorch_model*.bin")


def check_model_dir(model_dir) -> Path:
    """``model_dir`` as a Path if it holds a Hugging Face model (a config.json with a
    ``model_type`` and weights), else a PrunescopeError naming what is missing."""
    model_dir = Path(model_dir)
    config = model_dir / "config.json"
    if not model_dir.is_dir():
        raise PrunescopeError(f"{model_dir}: no such model folder")
    if not config.is_file():
        raise PrunescopeError(f"{model_dir}: not a model folder (no config.json)")
    try:
        model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (ValueError, AttributeError) as exc:
        raise PrunescopeError(f"{config}: not a JSON model config ({exc})") from None
    if not model_type:
        raise PrunescopeError(f"{config}: model_type: missing; not a Hugging Face model config")
    if not any(any(model_dir.glob(pattern)) for pattern in WEIGHT_FILES):
        raise PrunescopeError(f"{model_dir}: not a model folder (no weights: {' or '.join(WEIGHT_FILES)})")
    return model_dir


def check_out_dir(model_dir, out_dir, spec: PruneSpec, *, overwrite: bool = False) -> None:
    """Refuse (PrunescopeError) an output folder that would destroy something: the input
    model's own folder or one holding it, always; a file, or a non-empty folder that is not
    a prunescope checkpoint of the same ``spec`` (its sparsity.json), unless ``overwrite``."""
    _refuse_model_folder(model_dir, out_dir)
    out_dir = Path(out_dir).resolve()
    if overwrite or not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise PrunescopeError(f"{out_dir}: --out is a file; choose a folder, or pass --overwrite to replace it")
    if not any(out_dir.iterdir()):
        return
    try:
        made_for = json.loads((out_dir / "sparsity.json").read_text(encoding="utf-8"))["spec"]
    except (OSError, ValueError, KeyError, TypeError):
        made_for = None
    if made_for is None:
        raise PrunescopeError(f"{out_dir}: --out is a non-empty folder that is not a prunescope checkpoint "
                              "(no readable sparsity.json); choose another --out, or pass --overwrite to "
                              "replace everything in it")
    if made_for != json.loads(json.dumps(spec.to_dict())):
        raise PrunescopeError(f"{out_dir / 'sparsity.json'}: spec: the folder holds a checkpoint of another "
                              f"spec ({made_for.get('method')} {made_for.get('sparsity')} "
                              f"{made_for.get('structure')}); choose another --out, or pass --overwrite")


def _refuse_model_folder(model_dir, out_dir) -> None:
    model_dir, out_dir = Path(model_dir).resolve(), Path(out_dir).resolve()
    if out_dir == model_dir or out_dir in model_dir.parents:
        raise PrunescopeError(f"{out_dir}: the output folder is the input model's folder (or holds it); "
                              "pruning would replace the dense model: choose another --out")


def prune_checkpoint(model_dir, spec: PruneSpec, out_dir, *, device="auto", dtype: str = "auto",
                     calibration_task=None, progress=None) -> dict:
    """Load ``model_dir`` in ``dtype``, prune it per ``spec`` with its calibration, write
    ``out_dir``; returns the sparsity report (also written as ``out_dir/sparsity.json``).

    ``device="auto"`` processes blocks on CUDA when available (the model itself stays on the
    CPU); ``dtype="auto"`` keeps the checkpoint's own (the methods' statistics are fp32
    whatever the weights' dtype). ``calibration_task`` says where a ``task:NAME`` calibration
    source reads its data (``harness.pruning.calibration.load_calibration``). A method
    registered with ``level="model"`` prunes the loaded model through its ``prune_model``.
    ``progress(1)`` is called as each decoder block of a driver-walked method is pruned."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)} (got {dtype!r})")
    model_dir, out_dir = check_model_dir(model_dir), Path(out_dir)
    _refuse_model_folder(model_dir, out_dir)
    device = resolve_device(device)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype="auto" if dtype == "auto" else getattr(torch, dtype))
    method = registry.get(spec.method)
    ids = None
    calibration = None
    if method.needs_calibration or spec.owl is not None:
        ids, calibration = load_calibration(spec.calibration, tokenizer, calibration_task)
    if method.level == "model":
        report = method.load().prune_model(model, spec, ids, device=device)
    else:
        report = prune(model, spec, ids, device=device, offload=torch.device(device).type != "cpu",
                       progress=progress)
    if calibration is not None:
        report["calibration"] = {**calibration, "ids_hash": (report.get("calibration") or {}).get("ids_hash")}
    report["dtype"] = str(next(model.parameters()).dtype).removeprefix("torch.")
    save_checkpoint(model, tokenizer, out_dir, {"sparsity.json": report})
    return report


def canonicalize_zeros(model) -> None:
    """Turn -0.0 into 0.0 in the pruned weights, so equal models give equal bytes."""
    _, blocks = find_blocks(model)
    with torch.no_grad():
        for param in blocks.parameters():
            param.masked_fill_(param == 0, 0.0)


def save_checkpoint(model, tokenizer, out_dir: Path, reports: dict[str, dict]) -> None:
    """Write a plain HF checkpoint plus report files (name -> JSON object) into ``out_dir``,
    atomically (``harness.atomic.write_dir``)."""
    canonicalize_zeros(model)

    def fill(tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if model.generation_config is not None and not (tmp / "generation_config.json").exists():
            model.generation_config.save_pretrained(tmp)
        _drop_sparsity_config(tmp / "config.json")
        for name, report in reports.items():
            (tmp / name).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")

    write_dir(out_dir, fill)


def _drop_sparsity_config(config_path: Path) -> None:
    config = json.loads(config_path.read_text())
    if config.pop("sparsity_config", None) is not None:
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
