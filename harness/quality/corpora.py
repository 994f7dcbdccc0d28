"""Perplexity on the standard corpora with the pruning papers' protocol (Wanda, SparseGPT).

Token-level: the corpus is joined into one text, tokenized once (one leading BOS where the
tokenizer adds it), cut into non-overlapping windows of ``seqlen`` tokens (2048 or the
model's context when shorter, unless the study sets it), and the perplexity is exp of the
mean next-token NLL over the windows (``harness.pruning.perplexity``, which this reuses).

- ``wikitext2``: WikiText-2 raw, test split, rows joined with "\\n\\n"; every full window.
- ``c4``: C4 English validation shard 00000-of-00008, its first 1100 documents joined with
  " ", the first 256 windows.

This is not lm-eval's ``wikitext`` task, which reports word-level perplexity of each whole
document (rolling windows per document, normalised by words): the two numbers differ.
Corpora are read from local files only: ``path`` (a JSON/JSONL(.gz) or parquet file, or a
``datasets`` ``save_to_disk`` folder, with a "text" column) or the ``datasets`` cache.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import PrunescopeError


class CorpusError(PrunescopeError):
    """A corpus that is not available locally or cannot be read."""


@dataclass(frozen=True)
class Corpus:
    name: str
    title: str
    dataset: tuple  # load_dataset's positional arguments for the datasets cache
    dataset_kwargs: dict = field(default_factory=dict)
    separator: str = "\n\n"
    documents: int | None = None  # the first N documents only
    max_windows: int | None = None

    @property
    def protocol(self) -> str:
        """The protocol in words, for the report."""
        docs = f"first {self.documents} documents" if self.documents else "all rows"
        windows = f"first {self.max_windows} windows" if self.max_windows else "every full window"
        return (f"{self.title}: {docs} joined with {self.separator!r}, token-level perplexity over "
                f"non-overlapping windows ({windows})")


CORPORA = {
    "wikitext2": Corpus("wikitext2", "WikiText-2 raw, test split", ("wikitext", "wikitext-2-raw-v1"),
                        {"split": "test"}, "\n\n"),
    "c4": Corpus("c4", "C4 en validation shard 00000-of-00008", ("allenai/c4",),
                 {"data_files": {"validation": "en/c4-validation.00000-of-00008.json.gz"},
                  "split": "validation"}, " ", documents=1100, max_windows=256),
}
_FILE_LOADERS = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".gz": "json"}


def corpus_text(name: str, path: str | Path | None = None) -> str:
    """The corpus joined into one text per its protocol, from ``path`` or the datasets cache."""
    corpus = _corpus(name)
    rows = _rows(corpus, path)
    if corpus.documents is not None:
        rows = rows[: corpus.documents]
    return corpus.separator.join(rows)


def corpus_perplexity(model_or_dir, name: str, text: str, *, seqlen: int, tokenizer=None,
                      device=None) -> dict:
    """Token-level perplexity of ``text`` (from ``corpus_text``) with the corpus's protocol:
    the ``perplexity`` result plus the corpus name and protocol."""
    from harness.pruning.perplexity import perplexity

    corpus = _corpus(name)
    result = perplexity(model_or_dir, text, seqlen=seqlen, max_windows=corpus.max_windows,
                        tokenizer=tokenizer, device=device)
    return {**result, "corpus": name, "protocol": corpus.protocol}


def _corpus(name: str) -> Corpus:
    if name not in CORPORA:
        raise CorpusError(f"quality.corpora: unknown corpus {name!r}; choose from {', '.join(CORPORA)}")
    return CORPORA[name]


def _rows(corpus: Corpus, path) -> list[str]:
    import datasets

    datasets.logging.disable_progress_bar()
    try:
        if path is None:
            data = datasets.load_dataset(*corpus.dataset, **corpus.dataset_kwargs)
        elif not Path(path).exists():
            raise CorpusError(f"quality.corpora[{corpus.name}].path: no such file or folder: {path}")
        elif Path(path).is_dir():
            data = datasets.load_from_disk(str(path))
            data = data[corpus.dataset_kwargs["split"]] if isinstance(data, datasets.DatasetDict) else data
        elif Path(path).suffix in _FILE_LOADERS and Path(path).is_file():
            data = datasets.load_dataset(_FILE_LOADERS[Path(path).suffix], data_files=str(path), split="train")
        else:
            raise CorpusError(f"quality.corpora[{corpus.name}].path: {path}: not a JSON/JSONL(.gz) "
                              "or parquet file, nor a datasets save_to_disk folder")
    except CorpusError:
        raise
    except Exception as exc:  # noqa: BLE001 - datasets raises many types for "not available"
        where = f"{path}" if path is not None else f"the datasets cache ({'/'.join(corpus.dataset)})"
        raise CorpusError(f"quality.corpora[{corpus.name}]: cannot read {where}: {type(exc).__name__}: "
                          f"{exc}; give a local path (quality.corpora[].path) or populate the cache "
                          "on a connected machine") from None
    if "text" not in data.column_names:
        raise CorpusError(f"quality.corpora[{corpus.name}]: {path or 'the cached dataset'}: field text: "
                          f"no 'text' column (columns: {', '.join(data.column_names)})")
    return list(data["text"])
