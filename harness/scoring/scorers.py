"""The one scoring interface: ``Scorers(config).score(...)`` gives a row per document with
every column of the score contract (``registry.columns()``), and ``score_cell`` turns a
cell's generations into its score file. Each metric is a module named in
``harness.scoring.registry``; scorer models load lazily, once, and are reused across cells.

Columns of metrics not asked for are NaN. Edge values (none of them raises):

- empty summary: HaRiM+ over the labels <s></s> (finite); SummaC-ZS 0 and SummaC-Conv the
  published code's empty-image score (one histogram row, a single count in the lowest bin:
  features [m, m, m] with m = mlp.weight[0, 0] + mlp.bias); ROUGE 0; coverage,
  density, compression, novel_n and repetition NaN (no summary words); ``empty`` is True.
- empty source: HaRiM+ against <s></s>, i.e. p = q and risk_i = (1 - p_i) / 2; SummaC-ZS 0,
  Conv the empty-image score (no source chunk); ROUGE vs source 0; coverage and density 0,
  novel_n 1, compression NaN.
- one-word summary ("Yes."): a chunk of <= 10 characters, so SummaC as for an empty summary;
  novel_2..4 and repetition NaN (no such n-grams); HaRiM+, ROUGE, coverage as usual.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from harness.config import ScoringConfig
from harness.errors import PrunescopeError
from harness.records import SCHEMA_VERSION, CellInfo
from harness.scoring import overlap, registry, splitting


class ScoringError(PrunescopeError):
    """Scoring inputs that do not fit together (a summary without a source, a bad file)."""


@dataclass
class ScoreBatch:
    """A batch of the summaries of one call to ``Scorers.score``, aligned by position.
    ``shared`` holds intermediate results that several metrics use (the SummaC NLI images)."""

    doc_ids: list[str]
    texts: list[str]
    sources: list[str]
    references: list[str | None]
    facts: list[list[dict] | None] | None = None  # gold facts per summary, where the task has them
    shared: dict = field(default_factory=dict)


class Scorers:
    """The scorer models of one study; each loads on first use and stays loaded."""

    def __init__(self, config: ScoringConfig, *, allow_downloads: bool = False):
        self.config = config
        self.allow_downloads = allow_downloads
        self._models: dict[str, object] = {}
        self._conv = None

    def model(self, name: str):
        """A scorer model a metric ``needs``: "harim" (seq2seq) or "nli" (classifier)."""
        if name not in self._models:
            from harness.scoring.loading import load_scorer

            source, kind = {"harim": (self.config.harim_model, "seq2seq"),
                            "nli": (self.config.nli_model, "classifier")}[name]
            self._models[name] = load_scorer(
                source, kind, precision=self.config.precision, device=self.config.device,
                allow_downloads=self.allow_downloads)
        return self._models[name]

    def nli_indices(self) -> tuple[int, int]:
        from harness.scoring.nli import label_indices

        return label_indices(self.model("nli").model.config, self.config.nli_entailment_index,
                             self.config.nli_contradiction_index)

    def nli_images(self, batch: ScoreBatch) -> list:
        """Sentence-chunk NLI images of the batch, computed once for every SummaC metric."""
        if "nli_images" not in batch.shared:
            from harness.scoring.nli import nli_images

            documents = [(splitting.chunks(s, splitting.MAX_SOURCE_CHUNKS), splitting.chunks(t))
                         for s, t in zip(batch.sources, batch.texts)]
            batch.shared["nli_images"] = nli_images(
                self.model("nli"), documents, batch_size=self.config.batch_size,
                indices=self.nli_indices())
        return batch.shared["nli_images"]

    def nli_provenance(self) -> dict:
        from harness.scoring.nli import MAX_PAIR_TOKENS

        ent, con = self.nli_indices()
        return {**self.model("nli").provenance, "splitter": splitting.splitter_name(),
                "granularity": "sentence", "min_chunk_chars": splitting.MIN_CHUNK_CHARS,
                "max_source_chunks": splitting.MAX_SOURCE_CHUNKS, "pair_tokens": MAX_PAIR_TOKENS,
                "entailment_index": ent, "contradiction_index": con,
                "zs_use_contradiction": self.config.summac_zs_use_contradiction}

    def conv_head(self):
        if self._conv is None:
            from harness.scoring import summac_conv

            path = self.config.summac_conv_weights
            if path is None:
                raise ScoringError(
                    "summac_conv needs scoring.summac_conv_weights: the released "
                    "summac_conv_vitc_sent_perc_e.bin or a head trained with "
                    "`prunescope train-summac-conv`")
            self._conv = summac_conv.load_conv_head(path)
        return self._conv

    def score(self, summaries: list[dict], sources: dict[str, str],
              references: dict[str, str | None],
              facts: dict[str, list[dict] | None] | None = None,
              progress=None) -> "pandas.DataFrame":  # noqa: F821
        """A row per summary dict (``doc_id``, ``text``, ``output_tokens``), in input order;
        columns of metrics not asked for are NaN. ``facts``: gold facts per doc id.

        Summaries are scored ``config.batch_size`` at a time, in order of length (source plus
        summary characters: similar lengths pad little; no score depends on its batch), each
        batch by every metric in turn; ``progress(1)`` is called after each metric of each
        batch, so a call makes ``batches(len(summaries))`` of them."""
        import pandas as pd

        for k, summary in enumerate(summaries):
            for name, kind in (("doc_id", str), ("text", str), ("output_tokens", int)):
                if not isinstance(summary.get(name), kind):
                    raise ScoringError(f"summary {k} (doc_id {summary.get('doc_id')!r}): field "
                                       f"{name!r} must be a {kind.__name__}")
        missing = [s["doc_id"] for s in summaries if s["doc_id"] not in sources]
        if missing:
            raise ScoringError(f"no source document for doc_id {missing[0]!r}"
                               f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}")
        columns = registry.columns()
        if not summaries:
            return pd.DataFrame({c: [] for c in columns})
        ids = [s["doc_id"] for s in summaries]
        texts = [s["text"] for s in summaries]
        rows = {c: [math.nan] * len(summaries) for c in columns}
        rows["doc_id"] = ids
        rows["summary_tokens"] = [int(s["output_tokens"]) for s in summaries]
        rows["summary_words"] = [len(overlap.words(t)) for t in texts]
        rows["empty"] = [not t.strip() for t in texts]
        order = sorted(range(len(ids)), key=lambda k: (len(sources[ids[k]]) + len(texts[k]), k))
        size = self.config.batch_size
        for start in range(0, len(order), size):
            part = order[start:start + size]
            batch = ScoreBatch([ids[k] for k in part], [texts[k] for k in part], [sources[ids[k]] for k in part],
                               [references.get(ids[k]) for k in part], [(facts or {}).get(ids[k]) for k in part])
            for name in self.config.metrics:
                metric = registry.get(name)
                found = metric.load().score(batch, self)
                unknown = set(found) - set(metric.columns)
                if unknown:
                    raise ScoringError(f"metric {name!r} returned undeclared columns {sorted(unknown)}")
                for column, values in found.items():
                    for k, value in zip(part, values, strict=True):
                        rows[column][k] = value
                if progress:
                    progress(1)
        frame = pd.DataFrame(rows, columns=list(columns))
        return frame.astype({"summary_tokens": "int64", "summary_words": "int64", "empty": "bool"})

    def batches(self, summaries: int) -> int:
        """How many ``progress`` steps ``score`` makes for ``summaries`` summaries."""
        return -(-summaries // self.config.batch_size) * len(self.config.metrics)

    def provenance(self) -> dict:
        """What produced the scores, per metric (models with source, hash and precision;
        splitter; truncation; package settings)."""
        out: dict = {"metrics": sorted(self.config.metrics), "batch_size": self.config.batch_size}
        for name in self.config.metrics:
            out[name] = registry.get(name).load().provenance(self)
        return out


def score_cell(generations_path: str | Path, sources: dict[str, str],
               references: dict[str, str | None], scorers: Scorers, out: str | Path,
               cell: CellInfo | None = None, inputs: dict | None = None,
               facts: dict[str, list[dict] | None] | None = None, progress=None) -> "pandas.DataFrame":  # noqa: F821
    """Score one cell's generations and write ``out`` (parquet) atomically, with the cell, the
    scorer provenance and ``inputs`` (the freshness stamp: scorer key and generations key,
    see ``harness.runner.freshness``) under the file metadata key ``prunescope``;
    ``progress`` as for ``Scorers.score``."""
    from harness.records import read_generations
    from harness.store import write_scores

    records = read_generations(generations_path)
    summaries = [{"doc_id": r.doc_id, "text": r.text, "output_tokens": r.output_tokens}
                 for r in records]
    try:
        frame = scorers.score(summaries, sources, references, facts, progress)
    except ScoringError as exc:
        raise ScoringError(f"{generations_path}: {exc}") from None
    metadata = {"schema_version": SCHEMA_VERSION,
                "cell": None if cell is None else cell.model_dump(mode="json"),
                "scorers": scorers.provenance(), "inputs": inputs or {}}
    write_scores(frame, out, metadata)
    return frame
