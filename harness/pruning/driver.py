"""The pruning core: walks any Hugging Face decoder-only model block by block.

It finds the list of decoder blocks, captures what block 0 receives (hidden states plus
attention mask, position ids/embeddings, ...) with a pre-hook that stops the forward pass,
then per block: runs the block's dense forward with a hook on every Linear feeding the
method's statistics, prunes all Linears of the block, and re-runs the pruned block to make
the next block's inputs. Only the current block needs to sit on ``device``.
"""

from __future__ import annotations

import hashlib
import time
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from harness.errors import PrunescopeError
from harness.pruning import owl
from harness.pruning import registry
from harness.pruning.methods import Wanda
from harness.pruning.report import memory_peak, reset_memory_peak, sparsity_report
from harness.pruning.spec import PruneSpec


class ModelStructureError(PrunescopeError):
    """The model does not fit the pruning walk (no decoder blocks, bad layer shapes)."""


class CalibrationInputError(PrunescopeError):
    """The calibration ids cannot drive the model."""


@dataclass
class Chunk:
    """Inputs of the current block for a few calibration samples."""

    hidden: torch.Tensor
    args: tuple
    kwargs: dict


def find_blocks(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The decoder blocks: the ModuleList of same-class modules holding Linears with the most
    parameters (its length must equal the config's layer count when the config states one)."""
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "get_text_config"):
        config = config.get_text_config()
    layers = getattr(config, "num_hidden_layers", None)
    best = None
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        if len({type(m) for m in module}) != 1 or layers not in (None, len(module)):
            continue
        if not any(isinstance(m, nn.Linear) for m in module[0].modules()):
            continue
        size = sum(p.numel() for p in module.parameters())
        if best is None or size > best[0]:
            best = (size, name, module)
    if best is None:
        raise ModelStructureError(
            f"no decoder blocks found in {type(model).__name__}: expected a ModuleList of "
            f"{layers or 'N'} identical blocks containing Linear layers"
        )
    return best[1], best[2]


def linear_layers(block: nn.Module) -> dict[str, nn.Linear]:
    return {name: m for name, m in block.named_modules() if isinstance(m, nn.Linear)}


def prune(model: nn.Module, spec: PruneSpec, calibration_ids: torch.Tensor | None, *,
          device=None, batch_size: int = 8, offload: bool = False, progress=None) -> dict:
    """Prune ``model``'s decoder-block Linears in place; returns the sparsity report.

    ``calibration_ids`` is [nsamples, seqlen] (unused by plain magnitude pruning).
    ``device``: where each block is processed (default: where the model's blocks are);
    ``offload`` keeps calibration activations on the CPU between blocks; ``progress(1)`` is
    called as each block is pruned."""
    started = time.perf_counter()
    prefix, blocks = find_blocks(model)
    device = torch.device(device) if device is not None else next(blocks.parameters()).device
    reset_memory_peak(device)
    _check_shapes(prefix, blocks, spec)
    info = registry.get(spec.method)
    if info.level != "linear":
        raise ValueError(f"{spec.method} prunes whole models; call prune_checkpoint or its prune_model")
    method = info.load()
    needs_data = info.needs_calibration or spec.owl is not None
    if needs_data:
        _check_ids(calibration_ids, model)
    store = torch.device("cpu") if offload else device
    notes: dict[str, dict] = {}
    outlier_ratios = None
    with torch.no_grad(), _inference_mode(model):
        states = capture_inputs(model, blocks, calibration_ids, device, store, batch_size) if needs_data else []
        targets = [spec.sparsity] * len(blocks)
        if spec.owl is not None:
            outlier_ratios = _outlier_ratios(blocks, states, device, store, spec.owl.M)
            params = [sum(layer.weight.numel() for layer in linear_layers(b).values()) for b in blocks]
            targets = owl.allocate(outlier_ratios, params, spec.sparsity, spec.owl)
        for index, block in enumerate(blocks):
            with _on_device(block, device):
                layers = linear_layers(block)
                pruners = {name: method(layer, spec) for name, layer in layers.items()}
                if info.needs_calibration:
                    with _feeding(layers, pruners):
                        run_block(block, states, device, store)
                for name, pruner in pruners.items():
                    note = pruner.prune(targets[index])
                    if note:
                        notes[f"{prefix}.{index}.{name}"] = note
                del pruners
                if info.needs_calibration and index + 1 < len(blocks):
                    states = run_block(block, states, device, store)
            if progress:
                progress(1)
    report = sparsity_report(prefix, [linear_layers(b) for b in blocks], spec, targets)
    report["cholesky_retries"] = [{"module": k, **v} for k, v in notes.items()]
    if outlier_ratios is not None:
        report["owl"] = {"outlier_ratios": outlier_ratios, "block_sparsity": targets}
    report["calibration"] = ids_provenance(calibration_ids) if needs_data else None
    report["device"] = str(device)
    report["wall_time_s"] = time.perf_counter() - started
    report["peak_memory_bytes"] = memory_peak(device)
    return report


def capture_inputs(model, blocks, ids, device, store, batch_size) -> list[Chunk]:
    """Run the model up to block 0 for each chunk of samples and keep what block 0 gets."""
    captured: list[Chunk] = []

    class _Stop(Exception):
        pass

    def grab(_module, args, kwargs):
        kwargs = dict(kwargs)
        hidden = args[0] if args else kwargs.pop("hidden_states")
        captured.append(Chunk(hidden.to(store), _move(args[1:], store), _move(kwargs, store)))
        raise _Stop

    handle = blocks[0].register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with _outside_blocks_on(model, blocks, device):
            for chunk in torch.split(ids, batch_size):
                try:
                    model(input_ids=chunk.to(device), use_cache=False)
                except _Stop:
                    pass
    finally:
        handle.remove()
    return captured


def run_block(block: nn.Module, states: list[Chunk], device, store) -> list[Chunk]:
    """The block's outputs for every chunk, as the next block's inputs."""
    outputs = []
    for state in states:
        out = block(state.hidden.to(device), *_move(state.args, device), **_move(state.kwargs, device))
        out = out[0] if isinstance(out, (tuple, list)) else out
        outputs.append(Chunk(out.to(store), state.args, state.kwargs))
    return outputs


def _outlier_ratios(blocks, states, device, store, M: float) -> list[float]:
    """OWL's pre-pass over the dense model: each block's share of outlier Wanda scores."""
    ratios = []
    for index, block in enumerate(blocks):
        with _on_device(block, device):
            layers = linear_layers(block)
            stats = {name: Wanda(layer) for name, layer in layers.items()}
            with _feeding(layers, stats):
                outputs = run_block(block, states, device, store)
            ratios.append(owl.outlier_ratio([s.scores() for s in stats.values()], M))
        if index + 1 < len(blocks):
            states = outputs
    return ratios


@contextmanager
def _feeding(layers: dict[str, nn.Linear], collectors: dict):
    """Hook each Linear so its input goes to the collector of the same name."""
    def hook(name):
        return lambda _module, args, _out: collectors[name].add_batch(args[0].detach())

    handles = [layer.register_forward_hook(hook(name)) for name, layer in layers.items()]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextmanager
def _inference_mode(model):
    """Eval mode and no KV cache while pruning; both restored afterwards."""
    was_training = model.training
    config = getattr(model, "config", None)
    use_cache = getattr(config, "use_cache", None)
    model.eval()
    if use_cache is not None:
        config.use_cache = False
    try:
        yield
    finally:
        model.train(was_training)
        if use_cache is not None:
            config.use_cache = use_cache


@contextmanager
def _on_device(module: nn.Module, device):
    home = next(module.parameters()).device
    module.to(device)
    try:
        yield
    finally:
        module.to(home)


@contextmanager
def _outside_blocks_on(model, blocks, device):
    """Move everything but the blocks (embeddings, rotary tables, ...) to ``device``."""
    inside = {id(m) for m in blocks.modules()}
    tensors = []
    for module in model.modules():
        if id(module) in inside:
            continue
        tensors += [(p, p.data.device) for p in module.parameters(recurse=False)]
        for name, buf in module.named_buffers(recurse=False):
            tensors.append((module, name, buf.device))
    for entry in tensors:
        _set_device(entry, device)
    try:
        yield
    finally:
        for entry in tensors:
            _set_device(entry, entry[-1])


def _set_device(entry, device):
    if len(entry) == 2:
        entry[0].data = entry[0].data.to(device)
    else:
        module, name, _ = entry
        module._buffers[name] = module._buffers[name].to(device)


def _move(obj, device):
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, (tuple, list)):
        return type(obj)(_move(x, device) for x in obj)
    if isinstance(obj, dict):
        return {k: _move(v, device) for k, v in obj.items()}
    return obj


def _check_shapes(prefix, blocks, spec: PruneSpec) -> None:
    if not spec.nm:
        return
    m = spec.nm[1]
    for index, block in enumerate(blocks):
        for name, layer in linear_layers(block).items():
            if layer.in_features % m:
                raise ModelStructureError(
                    f"{prefix}.{index}.{name}: input dimension {layer.in_features} is not "
                    f"divisible by M={m} of structure {spec.structure}"
                )


def _check_ids(ids, model) -> None:
    if not isinstance(ids, torch.Tensor) or ids.ndim != 2 or ids.numel() == 0 or ids.dtype.is_floating_point:
        got = f"{ids.dtype} {tuple(ids.shape)}" if isinstance(ids, torch.Tensor) else type(ids).__name__
        raise CalibrationInputError(f"calibration ids must be a non-empty integer tensor of shape [nsamples, seqlen] (got {got})")
    vocab = model.get_input_embeddings().num_embeddings
    low, high = int(ids.min()), int(ids.max())
    if low < 0 or high >= vocab:
        raise CalibrationInputError(
            f"calibration ids must lie in [0, {vocab}) (the model's vocabulary); got [{low}, {high}]"
        )


def ids_provenance(ids: torch.Tensor) -> dict:
    data = ids.to(torch.int64).cpu().contiguous().numpy().tobytes()
    return {"nsamples": ids.shape[0], "seqlen": ids.shape[1],
            "ids_hash": hashlib.sha256(data).hexdigest()[:16]}
