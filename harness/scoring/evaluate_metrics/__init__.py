"""Each metric as a Hugging Face `evaluate` module: ``evaluate.load(str(metric_path("harim")))``.

The modules are thin: they call :class:`harness.scoring.Scorers` with a one-metric config, so
they give exactly the study's numbers. ``predictions`` are summaries; ``references`` are what
the metric's registry entry says: the source documents (harim, summac_zs, summac_conv and
overlap, as in the published HaRiM+ module) or the reference summaries (rouge; pass
``sources=`` for ROUGE vs source, else those columns are NaN). Other keyword arguments are
``ScoringConfig`` fields (``harim_model``, ``nli_model``, ``summac_conv_weights``, ...).

Built-in metrics have a folder here; ``metric_path`` writes the same two-line wrapper for a
metric registered without one (into the prunescope cache), so every registry entry loads.

Note for comparisons with the published HaRiM+ module: its ``harim`` field is 1 - mean risk,
while prunescope's ``harim`` is the mean token risk itself (the paper's HaRiM, the
hallucination risk the analysis uses); ``harim_plus`` and ``harim_loglik`` (its ``log_ppl``)
mean the same in both.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from harness.config import ScoringConfig
from harness.hashing import canonical_json
from harness.scoring import registry

HERE = Path(__file__).parent
WRAPPER = '''"""{name}: prunescope's metric as an `evaluate` module (see harness.scoring.evaluate_metrics)."""

from harness.scoring.evaluate_metrics import metric_class

{cls} = metric_class("{name}", __doc__)
'''


def metric_path(name: str) -> Path:
    """The folder to give ``evaluate.load`` for one registered metric."""
    registry.get(name)
    folder = HERE / name
    if not folder.is_dir():
        cache = Path(os.environ.get("PRUNESCOPE_CACHE", Path.home() / ".cache" / "prunescope"))
        folder = cache / "evaluate_metrics" / name
        script = folder / f"{name}.py"
        text = WRAPPER.format(name=name, cls=_class_name(name))
        if not script.exists() or script.read_text() != text:
            from harness import atomic

            atomic.write_text(script, text)
    return folder


def metric_class(name: str, description: str):
    """The ``evaluate.Metric`` subclass of one registered metric."""
    import datasets
    import evaluate

    def _info(self):
        return evaluate.MetricInfo(
            description=description, citation="", inputs_description=__doc__,
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Value("string")}))

    def _compute(self, predictions, references, **settings):
        return compute(name, predictions, references, **settings)

    return type(_class_name(name), (evaluate.Metric,), {"_info": _info, "_compute": _compute})


def compute(name: str, predictions: list[str], references: list[str],
            sources: list[str] | None = None, **settings) -> dict[str, list[float]]:
    """Per-example values of one metric, as lists keyed by its score columns."""
    metric = registry.get(name)
    config = ScoringConfig(**settings, metrics=[name])
    if metric.references == "reference":
        texts_sources, refs = sources or [""] * len(predictions), references
    else:
        texts_sources, refs = references, [None] * len(predictions)
    ids = [str(i) for i in range(len(predictions))]
    frame = _scorers(canonical_json(config)).score(
        [{"doc_id": i, "text": t, "output_tokens": 0} for i, t in zip(ids, predictions)],
        dict(zip(ids, texts_sources)), dict(zip(ids, refs)))
    columns = [c for c in metric.columns if sources is not None or metric.references == "source"
               or not c.endswith("_src")]
    return {c: frame[c].tolist() for c in columns}


def _class_name(name: str) -> str:
    return "".join(part.title() for part in name.split("_"))


@lru_cache(maxsize=4)
def _scorers(config_json: str):
    from harness.scoring.scorers import Scorers

    return Scorers(ScoringConfig.model_validate_json(config_json))
