"""Generate one cell: every document of a task under one prompt, one record per document.

Output: ``<stem>.jsonl`` (one ``GenerationRecord`` per document, in input order) and
``<stem>.meta.json`` (backend, engine options, timing, versions; nothing about the host).
Identical documents are generated once; each id still gets its record.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

from harness import atomic
from harness.config import GenerationConfig
from harness.errors import PrunescopeError
from harness.generation.backends import (Backend, HFBackend, VLLMBackend, adapter_rank, padding_token_id,
                                         resolve_dtype, sampling_settings, start_vllm, stop_token_ids)
from harness.generation.prompts import prompt_template, resolve_layout
from harness.generation.truncation import fit_prompt
from harness.hashing import content_key
from harness.records import GenerationRecord, ModelIdentity

log = logging.getLogger("prunescope")


class GenerationError(PrunescopeError):
    """Bad generation input or a generations file that cannot be read."""


def generate_cell(model_dir: str | Path, documents: Sequence[tuple[str, str]], prompt_id: str,
                  config: GenerationConfig, identity: ModelIdentity, out: str | Path, *,
                  chat_family: str = "auto", llm=None, adapter: str | Path | None = None) -> list[GenerationRecord]:
    """Generate summaries of ``documents`` (``(doc_id, text)`` pairs) and write ``out``.

    ``llm`` is an already started vLLM engine to reuse (the vLLM backend starts one from
    ``config.engine`` otherwise; with ``adapter`` it must have LoRA enabled). ``adapter`` is a
    LoRA adapter folder served on top of ``model_dir``, unmerged: by vLLM's LoRA support, or,
    where the vLLM engine refuses it, by transformers + peft (a warning; the meta file records
    which served it and why)."""
    started = time.perf_counter()
    if not (Path(model_dir) / "config.json").is_file():
        raise GenerationError(f"{model_dir}: not a checkpoint directory (no config.json)")
    first_of = _first_ids(documents)
    template = prompt_template(prompt_id, config.templates)
    from transformers import AutoConfig, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    layout = resolve_layout(tokenizer, AutoConfig.from_pretrained(model_dir).model_type, chat_family)
    backend, served_by = _backend(model_dir, tokenizer, config, llm, adapter)
    loaded = time.perf_counter()

    texts = dict(documents)
    unique = list(dict.fromkeys(first_of.values()))
    fitted = {doc_id: fit_prompt(tokenizer, template, texts[doc_id], layout, backend.context_length,
                                 config.max_new_tokens, doc_id) for doc_id in unique}
    outputs = dict(zip(unique, backend.generate([fitted[doc_id].ids for doc_id in unique])))
    generated = time.perf_counter()

    sampling = sampling_settings(config)
    records = []
    for doc_id, _ in documents:
        source = first_of[doc_id]
        prompt, output = fitted[source], outputs[source]
        records.append(GenerationRecord(
            doc_id=doc_id, prompt_id=prompt_id, prompt_hash=content_key(prompt.ids),
            text=tokenizer.decode(output.token_ids, skip_special_tokens=True),
            output_token_ids=output.token_ids, prompt_tokens=len(prompt.ids),
            output_tokens=len(output.token_ids), finish_reason=output.finish_reason,
            truncated=prompt.truncated, backend=backend.name, model=identity, sampling=sampling,
            duplicate_of=None if source == doc_id else source))
    out = Path(out)
    atomic.write_jsonl(out, records)
    meta = _meta(config, backend, layout, records, len(unique), load_s=loaded - started,
                 generate_s=generated - loaded, dtype=resolve_dtype(config.engine.dtype, model_dir))
    if adapter is not None:
        meta["adapter"] = {"folder": Path(adapter).name, "merged": False, **served_by}
    atomic.write_json(meta_path(out), meta)
    return records


def meta_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(f"{out.stem}.meta.json")


def _first_ids(documents) -> dict[str, str]:
    """doc id -> the first id with the same text (itself for a first occurrence)."""
    if not documents:
        raise GenerationError("no documents to generate from")
    first_by_text: dict[str, str] = {}
    first_of: dict[str, str] = {}
    for number, (doc_id, text) in enumerate(documents):
        if not isinstance(text, str):
            raise GenerationError(f"document {doc_id!r} (#{number}): text must be a string, "
                                  f"got {type(text).__name__}")
        if doc_id in first_of:
            raise GenerationError(f"document {doc_id!r} (#{number}): duplicate document id")
        first_of[doc_id] = first_by_text.setdefault(text, doc_id)
    return first_of


def _backend(model_dir, tokenizer, config: GenerationConfig, llm, adapter) -> tuple[Backend, dict]:
    """The backend, and for an adapter which backend serves it (and why, after a fallback)."""
    stop_ids = stop_token_ids(model_dir, tokenizer)
    if config.backend == "hf":
        return HFBackend(model_dir, tokenizer, config, stop_ids, adapter), {"served_by": "hf-peft"}
    if adapter is None:
        llm = llm if llm is not None else start_vllm(model_dir, config.engine, config.seed)
        return VLLMBackend(llm, config, stop_ids), {}
    try:
        llm = llm if llm is not None else start_vllm(model_dir, config.engine, config.seed, adapter_rank(adapter))
        backend = VLLMBackend(llm, config, stop_ids, adapter)
        backend.generate([[padding_token_id(tokenizer)]])  # vLLM loads an adapter on first use
        return backend, {"served_by": "vllm-lora"}
    except Exception as exc:  # noqa: BLE001 - any refusal of vLLM's LoRA path: fall back, recorded
        reason = f"{type(exc).__name__}: {exc}"[:500]
        log.warning("vLLM could not serve the adapter %s (%s); using transformers + peft, unmerged",
                    adapter, reason)
        return HFBackend(model_dir, tokenizer, config, stop_ids, adapter), {"served_by": "hf-peft",
                                                                            "fallback_reason": reason}


def _meta(config: GenerationConfig, backend: Backend, layout: str, records, unique: int,
          load_s: float, generate_s: float, dtype: str) -> dict:
    output_tokens = sum(r.output_tokens for r in records if r.duplicate_of is None)
    return {
        "schema_version": 1,
        "backend": backend.name,
        "engine": config.engine.model_dump(mode="json"),
        "dtype": dtype,  # engine.dtype resolved (harness.generation.backends.resolve_dtype)
        "generation": config.model_dump(mode="json", exclude={"engine"}),
        "layout": layout,
        "context_length": backend.context_length,
        "documents": len(records),
        "unique_documents": unique,
        "truncated": sum(r.truncated for r in records),
        "prompt_tokens": sum(r.prompt_tokens for r in records if r.duplicate_of is None),
        "output_tokens": output_tokens,
        "load_time_s": round(load_s, 3),
        "generate_time_s": round(generate_s, 3),
        "output_tokens_per_s": round(output_tokens / generate_s, 2) if generate_s > 0 else None,
        "versions": _versions(backend.name),
    }


def _versions(backend: str) -> dict:
    import torch
    import transformers

    versions = {"torch": torch.__version__, "transformers": transformers.__version__}
    if backend == "vllm":
        import vllm

        versions["vllm"] = vllm.__version__
    return versions
