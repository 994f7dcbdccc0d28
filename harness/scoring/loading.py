"""Loading scorer models: a local folder or a hub id, no remote code, downloads only when allowed.

Every scorer model goes through here, so its provenance (source, content hash, precision,
device) is stated once and the same rules hold for HaRiM+, SummaC and their `evaluate` twins.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.devices import resolve_device
from harness.errors import PrunescopeError
from harness.hashing import hash_checkpoint
from harness.models import downloads_allowed

DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


class ScorerModelError(PrunescopeError):
    """A scorer model that cannot be loaded as asked."""


@dataclass
class LoadedModel:
    model: object
    tokenizer: object
    device: str
    provenance: dict


def load_scorer(source: str | Path, kind: str, *, precision: str = "fp32", device: str = "auto",
                allow_downloads: bool = False) -> LoadedModel:
    """Load ``kind`` ("seq2seq" or "classifier") from a folder or a hub id, in eval mode.

    fp32 is the published metrics' precision; bf16/fp16 are an opt-in for GPUs only, since on
    the CPU they are slow and their deviation from fp32 is what the opt-in trades for speed."""
    import torch
    import transformers

    if precision not in DTYPES:
        raise ScorerModelError(f"scorer precision must be one of {sorted(DTYPES)} (got {precision!r})")
    device = resolve_device(device)
    if precision != "fp32" and not device.startswith("cuda"):
        raise ScorerModelError(f"scorer precision {precision} needs a CUDA device (got {device})")
    local = Path(source).is_dir()
    offline = not downloads_allowed(allow_downloads)
    auto = {"seq2seq": transformers.AutoModelForSeq2SeqLM,
            "classifier": transformers.AutoModelForSequenceClassification}[kind]
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(
            str(source), trust_remote_code=False, local_files_only=offline)
        model = auto.from_pretrained(str(source), trust_remote_code=False, local_files_only=offline,
                                     dtype=getattr(torch, DTYPES[precision]))
    except OSError as exc:
        hint = "" if local or not offline else " (not a local folder; hub downloads are off)"
        raise ScorerModelError(f"scorer model {source}: cannot load{hint}: {exc}") from None
    model.to(device).eval()
    provenance = {
        "model": str(source),
        "hash": hash_checkpoint(source if local else _snapshot_folder(source)),
        "revision": None if local else getattr(model.config, "_commit_hash", None),
        "precision": precision,
        "device": device.split(":")[0],
    }
    return LoadedModel(model, tokenizer, device, provenance)


def _snapshot_folder(hub_id: str) -> Path:
    """The local snapshot a hub model was just loaded from, so it is hashed like a folder."""
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(hub_id, local_files_only=True))
