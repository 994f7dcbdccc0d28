"""Generate a checkpoint's cells: every document of each cell's task under its prompt, all
cells of the checkpoint in one request batch, one record per document.

Output per cell: ``<stem>.jsonl`` (one ``GenerationRecord`` per document, in input order)
and ``<stem>.meta.json`` (backend, engine options, the engine that generated it and whether
the checkpoint was swapped into it, timing, versions; nothing about the host). Identical
prompts are generated once; each document id still gets its record.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness import atomic
from harness.config import GenerationConfig
from harness.errors import PrunescopeError
from harness.generation.backends import resolve_dtype, sampling_settings
from harness.generation.engine import EngineSession, Loaded
from harness.generation.prompts import prompt_template, resolve_layout
from harness.generation.truncation import FittedPrompt, fit_prompt
from harness.hashing import content_key
from harness.records import GenerationRecord, ModelIdentity


class GenerationError(PrunescopeError):
    """Bad generation input or a generations file that cannot be read."""


@dataclass(frozen=True)
class CellRequest:
    """One cell to generate: documents as ``(doc_id, text)`` pairs, a prompt id, the output."""

    key: str
    documents: tuple[tuple[str, str], ...]
    prompt_id: str
    out: Path
    chat_family: str = "auto"


@dataclass(frozen=True)
class CheckpointRequest:
    """A checkpoint (``adapter``: a LoRA adapter served over it, unmerged) and the cells still
    to generate from it."""

    key: str
    model_dir: Path
    identity: ModelIdentity
    cells: tuple[CellRequest, ...]
    adapter: Path | None = None


@dataclass(frozen=True)
class CheckpointResult:
    """Per cell key its records, or the input error that stopped that cell alone; and the
    seconds and size of the checkpoint's one request batch."""

    cells: dict[str, list[GenerationRecord] | PrunescopeError]
    generate_s: float
    prompts: int


def generate_cell(model_dir: str | Path, documents: Sequence[tuple[str, str]], prompt_id: str,
                  config: GenerationConfig, identity: ModelIdentity, out: str | Path, *,
                  chat_family: str = "auto", llm=None, adapter: str | Path | None = None) -> list[GenerationRecord]:
    """Generate summaries of ``documents`` (``(doc_id, text)`` pairs) and write ``out``.

    ``llm`` is an already started vLLM engine on ``model_dir`` to reuse (the vLLM backend
    starts one from ``config.engine`` otherwise; with ``adapter`` it must have LoRA enabled).
    ``adapter`` is a LoRA adapter folder served on top of ``model_dir``, unmerged: by vLLM's
    LoRA support, or, where the vLLM engine refuses it, by transformers + peft (a warning;
    the meta file records which served it and why)."""
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise GenerationError(f"{model_dir}: not a checkpoint directory (no config.json)")
    cell = CellRequest(Path(out).stem, tuple(tuple(d) for d in documents), prompt_id, Path(out), chat_family)
    _first_ids(cell.documents)  # bad input fails before an engine starts
    prompt_template(prompt_id, config.templates)
    request = CheckpointRequest("checkpoint", model_dir, identity, (cell,),
                                None if adapter is None else Path(adapter))
    session = EngineSession(config, llm=llm)
    try:
        result = generate_checkpoint(session, session.load(model_dir, adapter=request.adapter), request, config)
    finally:
        session.close()
    if isinstance(result.cells[cell.key], Exception):
        raise result.cells[cell.key]
    return result.cells[cell.key]


def generate_checkpoint(session: EngineSession, loaded: Loaded, request: CheckpointRequest,
                        config: GenerationConfig, progress: Callable[[int], None] | None = None,
                        batched: Callable[[int], None] | None = None) -> CheckpointResult:
    """Generate every cell of ``request`` with the checkpoint already loaded in ``session``:
    the prompts of all cells in one batch (``batched(size)`` is told its size, ``progress(n)``
    as ``n`` more requests, a document of a cell each, are answered). A cell whose input is
    bad (a document that cannot fit, an unknown prompt id) gets its error; the others are
    generated."""
    from transformers import AutoConfig, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(request.model_dir)
    model_type = AutoConfig.from_pretrained(request.model_dir).model_type
    results: dict = {}
    prepared = {}
    for cell in request.cells:
        try:
            prepared[cell.key] = _prepare(cell, tokenizer, model_type, config, session.context_length)
        except PrunescopeError as exc:
            results[cell.key] = exc
    batch = list(dict.fromkeys(tuple(p.ids) for fitted, _, _ in prepared.values() for p in fitted.values()))
    if batched:
        batched(len(batch))
    started = time.perf_counter()
    answered = _requests_answered(batch, prepared, progress)
    outputs = dict(zip(batch, session.generate([list(ids) for ids in batch], answered))) if batch else {}
    generate_s = time.perf_counter() - started
    dtype = resolve_dtype(config.engine.dtype, request.model_dir)
    for cell in request.cells:
        if cell.key in prepared:
            fitted, first_of, layout = prepared[cell.key]
            records = _records(cell, fitted, first_of, outputs, tokenizer, request.identity,
                               session.backend_name, config)
            atomic.write_jsonl(cell.out, records)
            meta = _meta(config, session, loaded, records, layout, len(fitted), len(batch), generate_s, dtype)
            if request.adapter is not None:
                meta["adapter"] = {"folder": request.adapter.name, "merged": False, **(loaded.served_by or {})}
            atomic.write_json(meta_path(cell.out), meta)
            results[cell.key] = records
    return CheckpointResult(results, generate_s, len(batch))


def _requests_answered(batch: list[tuple], prepared: dict, progress) -> Callable[[int], None] | None:
    """The backend's ``progress(n)`` (``n`` more prompts of ``batch`` finished, in order) as
    ``progress(requests)``: an identical prompt answers each document of each cell that has it."""
    if progress is None:
        return None
    asking = Counter(tuple(fitted[first_of[doc_id]].ids) for fitted, first_of, _ in prepared.values()
                     for doc_id in first_of)
    finished = 0

    def advance(n: int) -> None:
        nonlocal finished
        progress(sum(asking[ids] for ids in batch[finished:finished + n]))
        finished += n

    return advance


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


def _prepare(cell: CellRequest, tokenizer, model_type: str, config: GenerationConfig, context: int):
    """The fitted prompt of each distinct document of a cell, doc id -> the first id with its
    text, and the prompt layout."""
    first_of = _first_ids(cell.documents)
    template = prompt_template(cell.prompt_id, config.templates)
    layout = resolve_layout(tokenizer, model_type, cell.chat_family)
    texts = dict(cell.documents)
    fitted = {doc_id: fit_prompt(tokenizer, template, texts[doc_id], layout, context,
                                 config.max_new_tokens, doc_id)
              for doc_id in dict.fromkeys(first_of.values())}
    return fitted, first_of, layout


def _records(cell: CellRequest, fitted: dict[str, FittedPrompt], first_of: dict[str, str], outputs,
             tokenizer, identity: ModelIdentity, backend: str, config: GenerationConfig):
    sampling = sampling_settings(config)
    records = []
    for doc_id, _ in cell.documents:
        source = first_of[doc_id]
        prompt = fitted[source]
        output = outputs[tuple(prompt.ids)]
        records.append(GenerationRecord(
            doc_id=doc_id, prompt_id=cell.prompt_id, prompt_hash=content_key(prompt.ids),
            text=tokenizer.decode(output.token_ids, skip_special_tokens=True),
            output_token_ids=output.token_ids, prompt_tokens=len(prompt.ids),
            output_tokens=len(output.token_ids), finish_reason=output.finish_reason,
            truncated=prompt.truncated, backend=backend, model=identity, sampling=sampling,
            duplicate_of=None if source == doc_id else source))
    return records


def _meta(config: GenerationConfig, session: EngineSession, loaded: Loaded, records, layout: str,
          unique: int, batch: int, generate_s: float, dtype: str) -> dict:
    output_tokens = sum(r.output_tokens for r in records if r.duplicate_of is None)
    return {
        "schema_version": 2,
        "backend": session.backend_name,
        "engine": config.engine.model_dump(mode="json"),
        "dtype": dtype,  # engine.dtype resolved (harness.generation.backends.resolve_dtype)
        "generation": config.model_dump(mode="json", exclude={"engine"}),
        "layout": layout,
        "context_length": session.context_length,
        "documents": len(records),
        "unique_documents": unique,
        "truncated": sum(r.truncated for r in records),
        "prompt_tokens": sum(r.prompt_tokens for r in records if r.duplicate_of is None),
        "output_tokens": output_tokens,
        **loaded.record(),
        "batch_prompts": batch,  # the checkpoint's request batch: all its cells together
        "generate_s": round(generate_s, 3),  # the whole batch's
        "versions": _versions(session.backend_name),
    }


def _versions(backend: str) -> dict:
    import torch
    import transformers

    versions = {"torch": torch.__version__, "transformers": transformers.__version__}
    if backend == "vllm":
        import vllm

        versions["vllm"] = vllm.__version__
    return versions
