"""Export blinded pairwise annotation batches from a run directory.

A *system* is the set of cells sharing a model, prune spec and prompt (one cell per task); a
batch pairs one system with another (by default each pruned system with its dense baseline)
on N documents sampled per task in proportion to the documents both systems summarized.

Assignment rule (``overlap`` in [0, 1]): after a seeded shuffle of the items, the first
``round(overlap * N)`` items are *shared* and go to every annotator; each remaining item goes
to exactly one annotator, dealt in turn. So ``overlap=1.0`` gives every item to every
annotator (>= 2 annotators -> every item rated at least twice), ``overlap=0`` splits the items.
Each annotator then gets their items in an order of their own, a seeded shuffle (export seed,
pair, annotator name), so that no item is always seen first or after the same neighbour; the
order is recorded in the batch's ``assignment`` and the annotator's file follows it.
Which summary is A is also seeded: exactly ``N // 2`` items show the system under test as A.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from annotation.batch import (GUIDELINES, QUESTIONS, Batch, BatchError, BatchKey, Item, batch_dir, batch_hash,
                              guidelines_version, load_batch, load_key)
from annotation.formats import FORMATS, LABEL_STUDIO_CONFIG, file_name, label_studio_config, write_annotator_file
from harness import atomic
from harness.hashing import content_key
from harness.records import CellInfo
from harness.store import RunStore

# task name -> {doc id -> article text}, or a function giving that for a task name
Documents = Mapping[str, Mapping[str, str]] | Callable[[str], Mapping[str, str]]


@dataclass(frozen=True)
class System:
    label: str  # "model/prune-label@prompt", e.g. "llama/wanda-0.5@A"
    cells: dict[str, CellInfo]  # task -> cell


def export_batches(run_dir: str | Path, *, n: int, annotators: Iterable[str], overlap: float = 1.0,
                   fmt: str = "csv", pairs: Iterable[tuple[str, str]] | None = None, seed: int = 0,
                   documents: Documents | None = None) -> list[Path]:
    """Write one batch per pair and return the batch folders.

    ``pairs`` holds (system, baseline) as cell keys or system labels (``model/prune-label@prompt``,
    or a shorter form where unique: ``model/prune-label``, ``prune-label``); default: every pruned system against
    its dense baseline. ``documents`` gives the articles (default: the tasks of ``study.yaml``).
    """
    annotators = _check_annotators(list(annotators))
    if fmt not in FORMATS:
        raise BatchError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if not 0 <= overlap <= 1:
        raise BatchError(f"overlap must be in [0, 1] (got {overlap})")
    if n < 1:
        raise BatchError(f"n must be at least 1 (got {n})")
    systems = load_systems(run_dir)
    chosen = default_pairs(systems) if pairs is None else [
        (resolve_system(systems, s), resolve_system(systems, b)) for s, b in pairs]
    same = [s.label for s, b in chosen if s is b]
    if same:
        raise BatchError(f"a pair compares {same[0]!r} with itself; give two different systems")
    if not chosen:
        raise BatchError(f"{run_dir}: no pruned system with a dense baseline to pair; give pairs")
    articles = _documents_getter(run_dir, documents)
    return [_export_pair(run_dir, system, baseline, n, annotators, overlap, fmt, seed, articles)
            for system, baseline in chosen]


def load_systems(run_dir: str | Path) -> dict[str, System]:
    """Cells of the run grouped into systems, by label."""
    cells = RunStore(run_dir).read_cells().values()
    grouped: dict[str, dict[str, CellInfo]] = {}
    for cell in cells:
        grouped.setdefault(f"{cell.system}@{cell.prompt}", {})[cell.task] = cell
    return {label: System(label, by_task) for label, by_task in grouped.items()}


def resolve_system(systems: dict[str, System], name: str) -> System:
    """A system by label, a unique shorter form of it (``model/prune-label`` or ``prune-label``)
    or any of its cell keys."""
    matches = [s for s in systems.values()
               if name == s.label or any(name in (c.key, c.system, c.prune.label) for c in s.cells.values())]
    if len(matches) != 1:
        known = ", ".join(sorted(systems)) or "none"
        problem = "matches several systems" if matches else "is no system of this run"
        raise BatchError(f"{name!r} {problem}; systems: {known}")
    return matches[0]


def default_pairs(systems: dict[str, System]) -> list[tuple[System, System]]:
    by_key = {cell.key: s for s in systems.values() for cell in s.cells.values()}
    pairs = []
    for system in systems.values():
        baselines = {by_key[c.baseline_key].label for c in system.cells.values()
                     if c.baseline_key in by_key}
        if len(baselines) == 1:
            pairs.append((system, systems[baselines.pop()]))
    return pairs


def _export_pair(run_dir, system: System, baseline: System, n, annotators, overlap, fmt, seed,
                 articles) -> Path:
    store = RunStore(run_dir)
    summaries = {role: {task: _summaries(store, cell) for task, cell in s.cells.items()}
                 for role, s in (("system", system), ("baseline", baseline))}
    common = {task: sorted(set(summaries["system"][task]) & set(summaries["baseline"].get(task, {})))
              for task in sorted(summaries["system"])}
    sampled = stratified_sample(common, n, seed)
    rng = random.Random(f"{seed}/{system.label}/{baseline.label}")
    rng.shuffle(sampled)
    a_is_system = [i < len(sampled) // 2 for i in range(len(sampled))]
    rng.shuffle(a_is_system)
    items, a_is = [], {}
    for number, ((task, doc_id), system_first) in enumerate(zip(sampled, a_is_system), 1):
        item_id = f"item-{number:04d}"
        pair = (summaries["system"][task][doc_id], summaries["baseline"][task][doc_id])
        first, second = pair if system_first else pair[::-1]
        items.append(Item(item_id=item_id, task=task, doc_id=doc_id, article=_article(articles, task, doc_id),
                          summary_a=first, summary_b=second))
        a_is[item_id] = "system" if system_first else "baseline"
    assignment = assign(items, annotators, overlap, order_seed=f"{seed}/{system.label}/{baseline.label}")
    version = guidelines_version()
    content = batch_hash(version, items, assignment)
    batch_id = "batch-" + content_key({"content": content, "system": system.label,
                                       "baseline": baseline.label, "a_is": a_is})[:10]
    batch = Batch(batch_id=batch_id, content_hash=content, guidelines_version=version,
                  questions=QUESTIONS,
                  annotators=annotators, overlap=overlap, seed=seed, items=items, assignment=assignment)
    key = BatchKey(batch_id=batch_id, system=system.label, baseline=baseline.label,
                   system_cells={t: c.key for t, c in system.cells.items()},
                   baseline_cells={t: c.key for t, c in baseline.cells.items()}, a_is=a_is)
    directory = batch_dir(run_dir, batch_id)
    if not _exported_before(directory, batch, key):
        atomic.write_json(directory / "key" / "key.json", key.model_dump(mode="json"))
        atomic.write_json(directory / "batch.json", batch.model_dump(mode="json"))
    export = directory / "export"
    for annotator in annotators:
        write_annotator_file(export / file_name(annotator, fmt), batch, annotator, fmt)
    stamp = f"<!-- {batch_id}, content hash {content} -->\n"
    atomic.write_text(export / "guidelines.md", stamp + GUIDELINES.read_text(encoding="utf-8"))
    if fmt == "labelstudio":
        atomic.write_text(export / LABEL_STUDIO_CONFIG, stamp + label_studio_config())
    return directory


def _exported_before(directory: Path, batch: Batch, key: BatchKey) -> bool:
    """Whether this batch was exported before, intact. Its batch and key are never rewritten:
    annotators hold files made from them, so a damaged or different one is a BatchError."""
    if not directory.exists():
        return False
    for path, record, load in ((directory / "batch.json", batch, load_batch), (directory / "key" / "key.json", key, load_key)):
        try:
            stored = load(directory)
        except BatchError as exc:
            raise BatchError(f"{exc}; this batch was exported before and annotators may hold its files: "
                             f"restore {path.name} from a backup, or move {directory} aside to export anew") from None
        if stored != record:
            raise BatchError(f"{path}: differs from what this export computes; move {directory} aside to "
                             "export anew") from None
    return True


def stratified_sample(docs: dict[str, list[str]], n: int, seed: int) -> list[tuple[str, str]]:
    """``n`` (task, doc id) pairs, each task's share proportional to its size (largest
    remainder), each task's documents drawn by a seeded sample."""
    total = sum(len(ids) for ids in docs.values())
    if n > total:
        sizes = ", ".join(f"{t}: {len(ids)}" for t, ids in docs.items())
        raise BatchError(f"asked for {n} documents but the two systems share only {total} ({sizes})")
    quotas = {t: n * len(ids) // total for t, ids in docs.items()}
    by_remainder = sorted(docs, key=lambda t: (-(n * len(docs[t]) % total), t))
    for task in by_remainder[: n - sum(quotas.values())]:
        quotas[task] += 1
    return [(task, doc_id) for task, ids in docs.items()
            for doc_id in random.Random(f"{seed}/{task}").sample(ids, quotas[task])]


def assign(items: list[Item], annotators: list[str], overlap: float, order_seed: str) -> dict[str, list[str]]:
    """The module's assignment rule: shared items to everyone, the rest dealt in turn; then each
    annotator's items in an order of their own, seeded by ``order_seed`` and the annotator's name."""
    shared = round(overlap * len(items))
    assignment = {a: [] for a in annotators}
    for index, item in enumerate(items):
        if index < shared:
            for annotator in annotators:
                assignment[annotator].append(item.item_id)
        else:
            assignment[annotators[(index - shared) % len(annotators)]].append(item.item_id)
    for annotator, item_ids in assignment.items():
        random.Random(f"{order_seed}/{annotator}").shuffle(item_ids)
    return assignment


def _check_annotators(annotators: list[str]) -> list[str]:
    bad = [a for a in annotators if not a or not all(ch.isalnum() or ch in "-_" for ch in a)]
    if not annotators or bad or len(set(annotators)) != len(annotators):
        raise BatchError(f"annotators must be distinct names of letters, digits, '-' or '_' "
                         f"(got {annotators})")
    return annotators


def _summaries(store: RunStore, cell: CellInfo) -> dict[str, str]:
    """doc id -> generated text (the two GenerationRecord fields a batch needs)."""
    path = store.generation_path(cell.key)
    if not path.exists():
        raise BatchError(f"{path}: no generations for {cell.system} on {cell.task}; generate first")
    return store.read_generation_texts(cell.key)


def _documents_getter(run_dir, documents: Documents | None) -> Callable[[str], Mapping[str, str]]:
    if documents is None:
        return study_documents(run_dir)
    if callable(documents):
        return documents
    return lambda task: documents.get(task, {})


def study_documents(run_dir: str | Path) -> Callable[[str], Mapping[str, str]]:
    """Articles of each task as the run's ``study.yaml`` loads them."""
    from harness.config import load_study
    from tasks import load_task

    study = load_study(RunStore(run_dir).study_yaml)
    configs = {t.name: t for t in study.tasks}
    cache: dict[str, dict[str, str]] = {}

    def get(task: str) -> Mapping[str, str]:
        if task not in cache:
            if task not in configs:
                raise BatchError(f"{RunStore(run_dir).study_yaml}: tasks: no task {task!r}")
            c = configs[task]
            data = load_task(c.name, data=c.data, fields=c.fields or None, split=c.split,
                             on_bad_record=c.on_bad_record)
            cache[task] = {r.id: r.document for r in data.records}
        return cache[task]

    return get


def _article(articles, task: str, doc_id: str) -> str:
    text = articles(task).get(doc_id)
    if text is None:
        raise BatchError(f"task {task!r}: no source document with id {doc_id!r}")
    return text
