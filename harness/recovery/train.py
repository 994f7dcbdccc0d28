"""Recovery fine-tuning of a pruned checkpoint: ``recover(model_dir, spec, out_dir)``.

- ``lora``: a ``peft`` LoRA adapter is trained on the frozen pruned base and written alone
  (``adapter_model.safetensors`` + ``adapter_config.json``); the base folder is never written
  and never merged (merging would fill the pruned zeros with the dense product B A).
- ``full``: every parameter trains, except that the pruned zeros are held at zero
  (``harness.recovery.sparse``); the result is a plain checkpoint, verified to keep them all.

Causal-LM loss on windows drawn like calibration samples, AdamW, seeded (data order and
dropout are functions of the seed and the step, so a resumed run repeats the same updates),
fp32 on the CPU, bf16 autocast on a GPU (``precision``). A resumable state is saved every
``save_every`` steps in ``.<out>.train/`` beside ``out_dir`` and removed when the output is
complete. ``out_dir/recovery.json`` records what was trained and what it did.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import torch

from harness import atomic
from harness.devices import resolve_device
from harness.errors import PrunescopeError
from harness.hashing import content_key, hash_checkpoint
from harness.pruning.calibration import CalibrationError, load_calibration
from harness.pruning.report import memory_peak, reset_memory_peak
from harness.recovery import sparse
from harness.recovery.spec import RecoverySpec
from harness.recovery.state import TrainState

SCHEMA_VERSION = 1
EVAL_WINDOWS = 16  # the training windows on which the loss is measured before and after


class RecoveryDataError(PrunescopeError):
    """Training data that is missing, malformed or too short (the message names the file)."""


class SparsityLostError(RuntimeError):
    """A pruned weight became non-zero during full fine-tuning (a bug, never user input)."""


def recover(model_dir, spec: RecoverySpec, out_dir, *, device="auto", progress: bool = True,
            on_step=None) -> dict:
    """Fine-tune the pruned checkpoint ``model_dir`` per ``spec`` into ``out_dir`` (an adapter
    folder for LoRA, a checkpoint for full); resumes from its saved state if one exists.

    Returns the report written to ``out_dir/recovery.json`` plus ``timing`` (seconds, training
    tokens/s, peak memory: measurements, kept out of the file). ``on_step(step, loss)`` is
    called after every optimizer step."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    device = torch.device(resolve_device(device))
    reset_memory_peak(device)
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype="auto")
    save_dtype = next(model.parameters()).dtype
    model.float()  # fp32 master weights; autocast supplies bf16/fp16 compute on a GPU
    try:
        windows, data = load_calibration(spec.data, tokenizer)
    except CalibrationError as exc:
        raise RecoveryDataError(f"recovery data: {exc}") from None
    base_hash = hash_checkpoint(model_dir)
    parent = _read_json(model_dir / "sparsity.json")
    nm = _nm(parent)
    weights = sparse.pruned_weights(model)
    sparsity = sparse.block_sparsity(model, nm)
    model = _prepare(model, spec, weights).to(device)

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=spec.lr, weight_decay=spec.weight_decay, foreach=True)
    dtype = _autocast_dtype(spec.precision, device)
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
    state = TrainState(out_dir.with_name(f".{out_dir.name}.train"),
                       content_key({"base": base_hash, "recover": spec.to_dict()}))
    meta = state.load(model, optimizer, scaler) or {
        "step": 0, "losses": [], "loss_before": _eval_loss(model, windows, spec.batch_size, device, dtype)}

    step = start = meta["step"]
    from tqdm import tqdm

    loop_started = time.perf_counter()
    with tqdm(total=spec.steps, initial=step, desc=f"recover {spec.key}", unit="step",
              disable=None if progress else True) as bar:  # None: no bar off a terminal
        while step < spec.steps:
            loss = _train_step(model, optimizer, scaler, windows, spec, step, device, dtype)
            if spec.method == "full":
                sparse.rezero(weights)
            step += 1
            meta["losses"].append(loss)
            meta["step"] = step
            if step % spec.save_every == 0 and step < spec.steps:
                state.save(model, optimizer, scaler, meta)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}")
            if on_step is not None:
                on_step(step, loss)

    train_seconds = time.perf_counter() - loop_started
    counts = sparse.zero_counts(weights)
    if counts["still_zero"] != counts["pruned"]:
        raise SparsityLostError(f"{counts['pruned'] - counts['still_zero']} pruned weights became non-zero")
    report = {
        "schema_version": SCHEMA_VERSION,
        "method": spec.method,
        "key": spec.key,
        "spec": spec.to_dict(),
        "base": {"folder": model_dir.name, "checkpoint_hash": base_hash},
        "data": data,
        "tokens_trained": spec.steps * _tokens_per_step(spec),
        "trainable_parameters": sum(p.numel() for p in trainable),
        "loss_before": meta["loss_before"],
        "loss_after": _eval_loss(model, windows, spec.batch_size, device, dtype),
        "losses": meta["losses"],
        "pruned_zeros": counts,
        "merged": False,
    }
    if spec.method == "full":
        sparsity = sparse.block_sparsity(model, nm)
    # LoRA: the sparsity of the served base, the untouched pruned one (the adapter is unmerged)
    report["measured_sparsity"] = sparsity["measured_sparsity"]
    reports = {"sparsity.json": {**(parent or {}), **sparsity, "recovery": spec.key}, "recovery.json": report}
    if spec.method == "lora":
        _write_adapter(model, model_dir.name, out_dir, reports)
    else:
        from harness.pruning.checkpoint import save_checkpoint

        save_checkpoint(model.to("cpu", save_dtype), tokenizer, out_dir, reports)
    state.clear()
    tokens = (spec.steps - start) * _tokens_per_step(spec)
    return {**report, "timing": {"seconds": time.perf_counter() - started,
                                 "tokens_per_s": tokens / train_seconds if tokens else None,
                                 "peak_memory_bytes": memory_peak(device)}}


def _prepare(model, spec: RecoverySpec, weights):
    if spec.method == "full":
        sparse.hold_zeros(weights)
        return model.train()
    from peft import LoraConfig, get_peft_model

    lora = spec.lora
    targets = lora.target_modules if isinstance(lora.target_modules, str) else list(lora.target_modules)
    config = LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                        target_modules=targets, task_type="CAUSAL_LM")
    torch.manual_seed(spec.seed)  # the adapter's initial A
    return get_peft_model(model, config).train()


def _train_step(model, optimizer, scaler, windows, spec: RecoverySpec, step: int, device, dtype) -> float:
    """One optimizer step over ``grad_accum`` micro-batches; returns their mean loss."""
    for group in optimizer.param_groups:
        group["lr"] = spec.lr * min(1.0, (step + 1) / spec.warmup_steps) if spec.warmup_steps else spec.lr
    torch.manual_seed(spec.seed * 1_000_003 + step)  # dropout: the same on a resumed run
    total = 0.0
    for micro in range(spec.grad_accum):
        batch = windows[_batch_rows(step * spec.grad_accum + micro, spec.batch_size, len(windows), spec.seed)]
        with _autocast(device, dtype):
            loss = model(input_ids=batch.to(device), labels=batch.to(device), use_cache=False).loss
        scaled = loss / spec.grad_accum
        (scaler.scale(scaled) if scaler else scaled).backward()
        total += float(loss.detach())
    if scaler:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return total / spec.grad_accum


def _batch_rows(batch: int, size: int, n: int, seed: int) -> torch.Tensor:
    """Rows of micro-batch ``batch``: a seeded permutation of the ``n`` windows per epoch."""
    rows = []
    for position in range(batch * size, (batch + 1) * size):
        epoch, index = divmod(position, n)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7919 + epoch))
        rows.append(int(order[index]))
    return torch.tensor(rows)


@torch.no_grad()
def _eval_loss(model, windows, batch_size: int, device, dtype) -> float:
    """Mean causal-LM loss over the first ``EVAL_WINDOWS`` training windows (eval mode)."""
    was_training = model.training
    model.eval()
    losses = []
    for batch in windows[:EVAL_WINDOWS].split(batch_size):
        with _autocast(device, dtype):
            losses.append(float(model(input_ids=batch.to(device), labels=batch.to(device), use_cache=False).loss) * len(batch))
    model.train(was_training)
    return sum(losses) / min(len(windows), EVAL_WINDOWS)


def _autocast_dtype(precision: str, device: torch.device):
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def _autocast(device: torch.device, dtype):
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def _write_adapter(model, base_name: str, out_dir: Path, reports: dict[str, dict]) -> None:
    """The adapter alone; its config names the base by folder name (no absolute path)."""
    model.peft_config["default"].base_model_name_or_path = base_name

    def fill(tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True, save_embedding_layers=False)
        (tmp / "README.md").unlink(missing_ok=True)  # peft's model-card template
        for name, report in reports.items():
            (tmp / name).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")

    atomic.write_dir(out_dir, fill)


def load_with_adapter(base_dir, adapter_dir, *, device=None):
    """The pruned base with a LoRA adapter on top, unmerged (eval mode), and its tokenizer."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype="auto").to(resolve_device(device))
    return PeftModel.from_pretrained(model, adapter_dir).eval(), AutoTokenizer.from_pretrained(base_dir)


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def _nm(parent: dict | None) -> tuple[int, int] | None:
    structure = ((parent or {}).get("spec") or {}).get("structure", "unstructured")
    if structure == "unstructured":
        return None
    from harness.pruning.spec import parse_nm

    return parse_nm(structure)


def _tokens_per_step(spec: RecoverySpec) -> int:
    return spec.batch_size * spec.grad_accum * spec.data.seqlen
