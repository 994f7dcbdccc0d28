"""Each metric as a Hugging Face `evaluate` module: ``evaluate.load(".../evaluate_metrics/harim")``.

The modules are thin: they call :class:`harness.scoring.Scorers` with a one-metric config, so
they give exactly the study's numbers. ``predictions`` are summaries; ``references`` are the
source documents for harim, summac_zs, summac_conv and overlap (as in the published HaRiM+
module), and the reference summaries for rouge (pass ``sources=`` to add ROUGE vs source).
Other keyword arguments are ``ScoringConfig`` fields (``harim_model``, ``nli_model``,
``summac_conv_weights``, ``batch_size``, ...).

Note for comparisons with the published HaRiM+ module: its ``harim`` field is 1 - mean risk,
while prunescope's ``harim`` is the mean token risk itself (the issue's and the paper's HaRiM,
the hallucination risk the analysis uses); ``harim_plus`` and ``harim_loglik`` (its
``log_ppl``) mean the same in both.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from harness.config import ScoringConfig
from harness.hashing import canonical_json

HERE = Path(__file__).parent
OUTPUTS = {
    "harim": ("harim_plus", "harim", "harim_loglik"),
    "summac_zs": ("summac_zs",),
    "summac_conv": ("summac_conv",),
    "rouge": ("rouge1_ref", "rouge2_ref", "rougeL_ref"),
    "overlap": ("coverage", "density", "compression", "novel_1", "novel_2", "novel_3",
                "novel_4", "repetition"),
}


def metric_path(name: str) -> Path:
    """The folder to give ``evaluate.load`` for one metric."""
    return HERE / name


def metric_info(name: str, description: str):
    import datasets
    import evaluate

    return evaluate.MetricInfo(
        description=description, citation="", inputs_description=__doc__,
        features=datasets.Features({"predictions": datasets.Value("string"),
                                    "references": datasets.Value("string")}))


def compute(name: str, predictions: list[str], references: list[str],
            sources: list[str] | None = None, **settings) -> dict[str, list[float]]:
    """Per-example values of one metric, as lists keyed by the score column names."""
    config = ScoringConfig(**settings, metrics=[name])
    if name == "rouge":
        texts_sources, refs = sources or [""] * len(predictions), references
    else:
        texts_sources, refs = references, [None] * len(predictions)
    ids = [str(i) for i in range(len(predictions))]
    frame = _scorers(canonical_json(config)).score(
        [{"doc_id": i, "text": t, "output_tokens": 0} for i, t in zip(ids, predictions)],
        dict(zip(ids, texts_sources)), dict(zip(ids, refs)))
    columns = OUTPUTS[name] + (("rouge1_src", "rouge2_src", "rougeL_src")
                               if name == "rouge" and sources is not None else ())
    return {c: frame[c].tolist() for c in columns}


@lru_cache(maxsize=4)
def _scorers(config_json: str):
    from harness.scoring import Scorers

    return Scorers(ScoringConfig.model_validate_json(config_json))
