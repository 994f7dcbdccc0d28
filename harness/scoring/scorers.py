"""The one scoring interface: ``Scorers(config).score(...)`` gives a row per document with
every metric of the score contract, and ``score_cell`` turns a cell's generations into its
``scores/<key>.parquet``. Scorer models load lazily, once, and are reused across cells.

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

import json
import math
from pathlib import Path

import numpy as np

from harness.config import ScoringConfig
from harness.errors import PrunescopeError
from harness.hashing import hash_file
from harness.records import SCHEMA_VERSION, CellInfo
from harness.scoring import harim, overlap, rouge, splitting, summac_conv, summac_zs


COLUMNS = (
    "doc_id", "summary_tokens", "summary_words", "empty",
    "harim_plus", "harim", "harim_loglik", "summac_zs", "summac_conv",
    "rouge1_ref", "rouge2_ref", "rougeL_ref", "rouge1_src", "rouge2_src", "rougeL_src",
    "coverage", "density", "compression", "novel_1", "novel_2", "novel_3", "novel_4",
    "repetition",
)
METADATA_KEY = b"prunescope"


class ScoringError(PrunescopeError):
    """Scoring inputs that do not fit together (a summary without a source, a bad file)."""


class Scorers:
    """The scorer models of one study; each loads on first use and stays loaded."""

    def __init__(self, config: ScoringConfig, *, allow_downloads: bool = False):
        self.config = config
        self.allow_downloads = allow_downloads
        self._models: dict[str, object] = {}
        self._conv = None

    def _model(self, name: str):
        if name not in self._models:
            from harness.scoring.loading import load_scorer

            source, kind = {"harim": (self.config.harim_model, "seq2seq"),
                            "nli": (self.config.nli_model, "classifier")}[name]
            self._models[name] = load_scorer(
                source, kind, precision=self.config.precision, device=self.config.device,
                allow_downloads=self.allow_downloads)
        return self._models[name]

    def _nli_indices(self) -> tuple[int, int]:
        from harness.scoring.nli import label_indices

        return label_indices(self._model("nli").model.config, self.config.nli_entailment_index,
                             self.config.nli_contradiction_index)

    def _conv_head(self):
        if self._conv is None:
            path = self.config.summac_conv_weights
            if path is None:
                raise ScoringError(
                    "summac_conv needs scoring.summac_conv_weights: the released "
                    "summac_conv_vitc_sent_perc_e.bin or a head trained with "
                    "`prunescope train-summac-conv`")
            self._conv = summac_conv.load_conv_head(path)
        return self._conv

    def score(self, summaries: list[dict], sources: dict[str, str],
              references: dict[str, str | None]) -> "pandas.DataFrame":  # noqa: F821
        """A row per summary dict (``doc_id``, ``text``, ``output_tokens``), in input order."""
        import pandas as pd

        metrics = set(self.config.metrics)
        for k, summary in enumerate(summaries):
            for field, kind in (("doc_id", str), ("text", str), ("output_tokens", int)):
                if not isinstance(summary.get(field), kind):
                    raise ScoringError(f"summary {k} (doc_id {summary.get('doc_id')!r}): field "
                                       f"{field!r} must be a {kind.__name__}")
        missing = [s["doc_id"] for s in summaries if s["doc_id"] not in sources]
        if missing:
            raise ScoringError(f"no source document for doc_id {missing[0]!r}"
                               f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}")
        if not summaries:
            return pd.DataFrame({c: [] for c in COLUMNS})
        texts = [s["text"] for s in summaries]
        srcs = [sources[s["doc_id"]] for s in summaries]
        rows = {c: [math.nan] * len(summaries) for c in COLUMNS}
        rows["doc_id"] = [s["doc_id"] for s in summaries]
        rows["summary_tokens"] = [int(s["output_tokens"]) for s in summaries]
        rows["summary_words"] = [len(overlap.words(t)) for t in texts]
        rows["empty"] = [not t.strip() for t in texts]
        if "harim" in metrics:
            found = harim.harim_scores(
                self._model("harim"), srcs, texts, batch_size=self.config.batch_size,
                source_tokens=self.config.harim_source_tokens,
                summary_tokens=self.config.harim_summary_tokens)
            rows["harim_plus"] = [h.harim_plus for h in found]
            rows["harim"] = [h.harim for h in found]
            rows["harim_loglik"] = [h.loglik for h in found]
        if metrics & {"summac_zs", "summac_conv"}:
            self._summac(rows, metrics, srcs, texts)
        if "rouge" in metrics:
            for suffix, targets in (("ref", [references.get(s["doc_id"]) for s in summaries]),
                                    ("src", srcs)):
                found = [rouge.rouge_f1(t, target) for t, target in zip(texts, targets)]
                for kind in rouge.TYPES:
                    rows[f"{kind}_{suffix}"] = [f[kind] for f in found]
        if "overlap" in metrics:
            found = [overlap.overlap_scores(t, s) for t, s in zip(texts, srcs)]
            for column in found[0]:
                rows[column] = [f[column] for f in found]
        frame = pd.DataFrame(rows, columns=list(COLUMNS))
        return frame.astype({"summary_tokens": "int64", "summary_words": "int64", "empty": "bool"})

    def _summac(self, rows, metrics, srcs, texts) -> None:
        from harness.scoring.nli import nli_images

        documents = [(splitting.chunks(s, splitting.MAX_SOURCE_CHUNKS), splitting.chunks(t))
                     for s, t in zip(srcs, texts)]
        images = nli_images(self._model("nli"), documents, batch_size=self.config.batch_size,
                            indices=self._nli_indices())
        if "summac_zs" in metrics:
            rows["summac_zs"] = [summac_zs.summac_zs(im, self.config.summac_zs_use_contradiction)
                                 for im in images]
        if "summac_conv" in metrics:
            hists = np.stack([summac_conv.histograms(im) for im in images])
            rows["summac_conv"] = list(summac_conv.conv_scores(self._conv_head(), hists))

    def provenance(self) -> dict:
        """What produced the scores: models (source, hash, precision), splitter, truncation."""
        metrics = set(self.config.metrics)
        out: dict = {"metrics": sorted(metrics), "batch_size": self.config.batch_size}
        if "harim" in metrics:
            out["harim"] = {**self._model("harim").provenance, "lambda": harim.LAMBDA,
                            "source_tokens": self.config.harim_source_tokens,
                            "summary_tokens": self.config.harim_summary_tokens}
        if metrics & {"summac_zs", "summac_conv"}:
            from harness.scoring.nli import MAX_PAIR_TOKENS

            ent, con = self._nli_indices()
            out["summac"] = {**self._model("nli").provenance, "splitter": splitting.splitter_name(),
                             "granularity": "sentence", "min_chunk_chars": splitting.MIN_CHUNK_CHARS,
                             "max_source_chunks": splitting.MAX_SOURCE_CHUNKS,
                             "pair_tokens": MAX_PAIR_TOKENS, "entailment_index": ent,
                             "contradiction_index": con,
                             "zs_use_contradiction": self.config.summac_zs_use_contradiction}
        if "summac_conv" in metrics:
            path = self.config.summac_conv_weights
            training = Path(f"{path}.json") if path is not None else None
            out["summac_conv"] = {
                "weights": None if path is None else str(path),
                "weights_hash": None if path is None else hash_file(path)[:16],
                "training": json.loads(training.read_text()) if training and training.exists() else None,
            }
        if "rouge" in metrics:
            out["rouge"] = {"package": "rouge-score", "use_stemmer": True}
        return out


def score_cell(generations_path: str | Path, sources: dict[str, str],
               references: dict[str, str | None], scorers: Scorers, out: str | Path,
               cell: CellInfo | None = None) -> "pandas.DataFrame":  # noqa: F821
    """Score one cell's generations and write ``out`` (parquet) atomically, with the cell and
    the scorer provenance under the file metadata key ``prunescope``."""
    from harness.records import read_generations

    records = read_generations(generations_path)
    summaries = [{"doc_id": r.doc_id, "text": r.text, "output_tokens": r.output_tokens}
                 for r in records]
    try:
        frame = scorers.score(summaries, sources, references)
    except ScoringError as exc:
        raise ScoringError(f"{generations_path}: {exc}") from None
    metadata = {"schema_version": SCHEMA_VERSION,
                "cell": None if cell is None else cell.model_dump(mode="json"),
                "scorers": scorers.provenance()}
    write_scores(frame, out, metadata)
    return frame


def write_scores(frame, path: str | Path, metadata: dict) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from harness.atomic import write_with

    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.replace_schema_metadata(
        {**(table.schema.metadata or {}), METADATA_KEY: json.dumps(metadata, sort_keys=True)})
    write_with(path, lambda tmp: pq.write_table(table, tmp))


def read_scores(path: str | Path) -> tuple["pandas.DataFrame", dict]:  # noqa: F821
    """A score parquet and its ``prunescope`` metadata."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    meta = json.loads((table.schema.metadata or {}).get(METADATA_KEY, b"null"))
    return table.to_pandas(), meta
